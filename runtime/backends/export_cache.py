"""The ONNX export cache: a checkpoint given to the onnxruntime backend is exported once and reused.

    path = cached_export(Path("edsr_x2.pt"))      # exported now, or found from an earlier run

Files live in :func:`cache_dir` ``/onnx``, named by the weights' sha256, the export options and the
export code, so a changed network or decomposition makes a new file, never a stale one.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from export.ort import OrtSetupError
from models.errors import SrdeployError

__all__ = ["CACHE_ENV", "cache_dir", "cached_export"]

CACHE_ENV = "SRDEPLOY_CACHE_DIR"
_REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where on-the-fly exports are kept: ``$SRDEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/srdeploy``,
    else ``~/.cache/srdeploy`` (the XDG rule)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "srdeploy"


def _export_code_digest() -> str:
    """What the export depends on besides the weights: the code of models/ and export/ (subpackages
    included), torch and onnx versions."""
    import onnx
    import torch

    h = hashlib.sha256(f"{torch.__version__} {onnx.__version__}".encode())
    for folder in ("models", "export"):
        for f in sorted((_REPO / folder).rglob("*.py")):
            h.update(f.relative_to(_REPO).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def cached_export(weights: Path, *, model: str | None = None, scale: int | None = None, ops: str = "onnx",
                  say: Callable[[str], None] | None = None) -> Path:
    """The ONNX export of a checkpoint, from :func:`cache_dir` when this very file (by its sha256),
    export options and export code were exported before, else exported now (atomically) and kept
    for the next run. ``say`` hears what happened and how long it took (default: stderr)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    from models.files import folder_problem
    folder = cache_dir() / "onnx"
    problem = folder_problem(folder)  # checked before the weights are read or anything exported
    if problem:
        raise OrtSetupError(f"cannot keep the on-the-fly export: {problem}; set {CACHE_ENV} to a writable "
                            f"folder or pass --onnx FILE")
    from export.onnx import DEFAULT_OPSET, FORMAT_VERSION
    from runtime.trt import sha256_file  # light: TensorRT itself loads only when used

    from .base import onnx_metadata
    digest = sha256_file(weights)
    key = hashlib.sha256(json.dumps({"weights": digest, "ops": ops, "precision": "fp32", "opset": DEFAULT_OPSET,
                                     "format": FORMAT_VERSION, "code": _export_code_digest()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{weights.stem}_{ops}_{key}.onnx"
    if path.is_file():
        try:
            onnx_metadata(path)
            say(f"onnxruntime: using the cached export of {weights.name}: {path}")
            return path
        except SrdeployError:
            pass  # unreadable (a disk error, a foreign file): export again over it
    import models
    from export.onnx import export_model, quiet_torch_exporter
    quiet_torch_exporter()
    net = models.load(weights, model=model, scale=scale)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        export_model(net, path, mode=ops, weights=str(weights), overwrite=True)
    except OSError as e:  # a full disk, a folder removed meanwhile: the temporary file is already gone
        raise OrtSetupError(f"cannot write the on-the-fly export to {folder}: {e.strerror or e}; free space, "
                            f"set {CACHE_ENV} or pass --onnx FILE") from None
    say(f"onnxruntime: exported {weights.name} in {time.perf_counter() - start:.1f} s to {path} "
        f"(cached: the next run reuses it; remove {folder} to free the space)")
    return path
