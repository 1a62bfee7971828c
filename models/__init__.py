"""srdeploy reference networks: NLSN, CSNLN and EDSR, with the custom-op boundary.

    model = models.build("nlsn", 4)                 # released configuration, random weights
    model = models.build("nlsn", 2, n_resblocks=8)  # official option names
    model = models.load("NLSN_x4.pt")               # architecture and scale read from the file
    models.architecture("csnln").hints              # what a network's description tells (models.base)

The names below load on first use, so that ``models.errors`` and ``models.files`` (the base every
other package builds on) import without loading torch.
"""
from __future__ import annotations

import importlib

__all__ = ["build", "load", "detect", "architecture", "CheckpointError", "InputSizeError", "SRModel", "Architecture",
           "ARCHITECTURES", "SCALES"]
_HOME = {"build": ".architectures", "architecture": ".architectures", "ARCHITECTURES": ".architectures",
         "SCALES": ".architectures", "load": ".checkpoint", "detect": ".checkpoint", "CheckpointError": ".checkpoint",
         "InputSizeError": ".base", "SRModel": ".base", "Architecture": ".base"}


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name], __name__), name)
    else:  # a submodule: models.ops, models.nlsn, ...
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
