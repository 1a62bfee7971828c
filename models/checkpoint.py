"""Checkpoint loading: read a state dict safely, tell which network it is, build and fill it.

Everything the file says (architecture, scale, width, depth, rgb_range) is read back from its
keys and tensor shapes by the architectures' own descriptions (``Architecture.detect``/``read``),
so the user never has to repeat it. What the file cannot say
(res_scale, chunk_size, n_hashes) takes the released values unless overridden.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .architectures import ARCHITECTURES, build
from .base import StateDict
from .errors import SrdeployError

WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params", "net")


class CheckpointError(SrdeployError, ValueError):
    """A checkpoint that cannot be loaded; the message says what it is and what was expected."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (plain state dict or a common wrapper), ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        target = unsafe_global(str(e))
        if target is None:  # a corrupt or foreign file, not a refused Python object
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (the file is corrupt or of "
                                  f"another format); expected a .pt/.pth file written by torch.save") from None
        raise CheckpointError(
            f"{path}: a pickle that would run code when loaded (it calls {target}), not just weights, "
            f"which srdeploy refuses for safety. If you trust its source, re-save only the weights: "
            f"torch.save(model.state_dict(), 'weights.pt')") from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint at all
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no details'}); "
                              f"expected a .pt/.pth file written by torch.save") from None
    return unwrap(obj, str(path))


# the modules pickles name for os functions on each platform
_MODULE_ALIASES = {"posix": "os", "nt": "os", "__builtin__": "builtins"}


def unsafe_global(message: str) -> str | None:
    """The callable (``module.name``) that torch's weights-only unpickler refused, read from its
    message (``Unsupported global: GLOBAL x.y`` / ``unsupported GLOBAL x.y whose module ...`` /
    ``Unsupported class x.y``), with ``posix.system`` named ``os.system``; None for other errors."""
    found = re.search(r"(?:GLOBAL:? GLOBAL|GLOBAL|[Cc]lass) ([A-Za-z_][\w.]*)", message)
    if not found:
        return None
    module, _, name = found.group(1).rpartition(".")
    return f"{_MODULE_ALIASES.get(module, module)}.{name}" if module else name


def unwrap(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            raise CheckpointError(f"{where}: a dict without tensors (keys: {_few(obj)}); expected a state dict "
                                  f"or a wrapper holding one under {', '.join(map(repr, WRAPPER_KEYS))}")
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, expected a state dict (name -> tensor)")
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        state[k[7:] if k.startswith("module.") else k] = v
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _few(names, n: int = 4) -> str:
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f", … ({len(names)} in all)" if len(names) > n else "")


def detect(sd: StateDict) -> tuple[str, int, dict[str, Any]]:
    """(architecture, scale, config) of a state dict, from its keys and shapes alone: the first
    registered architecture whose ``detect`` claims the keys reads them (the claims do not overlap)."""
    arch = next((a for a in ARCHITECTURES.values() if a.detect(sd)), None)
    if arch is None:
        raise CheckpointError(f"keys match none of {', '.join(ARCHITECTURES)} (first keys: {_few(sorted(sd))}); "
                              f"expected a state dict of one of them in the official key layout")
    try:
        scale, cfg = arch.read(sd)
    except KeyError as e:
        raise CheckpointError(f"state dict looks like {arch.name.upper()} but lacks {e}; pass a complete "
                              f"checkpoint in the official {arch.name.upper()} layout") from None
    except IndexError:
        raise CheckpointError(f"state dict looks like {arch.name.upper()} but a tensor has an unexpected shape; "
                              f"pass a checkpoint in the official {arch.name.upper()} layout") from None
    return arch.name, scale, cfg


def load(path: str | Path, model: str | None = None, scale: int | None = None, **overrides: Any):
    """Build the network a checkpoint holds and load it with ``strict=True``.

    ``model``/``scale``, when given, are what the caller expects: a different file is an error.
    ``overrides`` set options the file cannot tell (``res_scale``, ``chunk_size``, ``n_hashes``,
    ``lsh_seed``).
    """
    sd = read_state_dict(path)
    try:
        name, found_scale, cfg = detect(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if model is not None and model.lower() != name:
        raise CheckpointError(f"{path} holds a {name.upper()} x{found_scale} network, not {model.upper()}; "
                              f"pass --model {name} or the right checkpoint")
    if scale is not None and scale != found_scale:
        raise CheckpointError(f"{path} holds a {name.upper()} x{found_scale} network, but scale x{scale} was "
                              f"asked for; pass --scale {found_scale} or an x{scale} checkpoint")
    net = build(name, found_scale, **{**cfg, **overrides})
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match {name.upper()} x{found_scale} "
                              f"({'missing keys: ' + _few(missing) if missing else ''}"
                              f"{'; ' if missing and unexpected else ''}"
                              f"{'unexpected keys: ' + _few(unexpected) if unexpected else ''})")
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes do not match {name.upper()} x{found_scale} "
                              f"(file vs model: {_few(wrong, 3)})")
    net.load_state_dict(sd, strict=True)
    return net.eval()
