"""The architectures srdeploy knows, and building one by name with its released configuration.

Each network's description (:class:`~models.base.Architecture`: defaults, detection from
state-dict keys, size rule, chop rule, hints) sits next to its class; this module only
collects them. Adding a network = a module with its class and ``ARCHITECTURE``, one line here.
"""
from __future__ import annotations

from typing import Any

from . import csnln, edsr, nlsn
from .base import Architecture, SRModel
from .errors import UsageError

#: every architecture by name; ``models.checkpoint.detect`` asks each in this order
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (nlsn.ARCHITECTURE, csnln.ARCHITECTURE,
                                                               edsr.ARCHITECTURE)}
SCALES = (2, 3, 4)


def architecture(name: str) -> Architecture:
    """The description of the network called ``name`` (any case)."""
    try:
        return ARCHITECTURES[name.lower()]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def build(name: str, scale: int, **cfg: Any) -> SRModel:
    """A network with the released configuration, overridden by official option names in ``cfg``."""
    arch = architecture(name)
    if scale not in SCALES:
        raise UsageError(f"scale {scale} is not supported; choose one of {', '.join(map(str, SCALES))}")
    return arch.build(scale, **cfg)
