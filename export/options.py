"""What an ONNX export can be asked for, and the checks made before any network is traced.

The export modes, precisions and opsets (``python -m export.onnx --ops/--precision/--opset``), the
parsers of the command line's values, and :func:`validate_options` / :func:`check_output`, which
``export.onnx.export_model`` and its command line call first, so that a request that cannot be done
fails at once with one line naming the fix (:class:`ExportError`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx

from models.base import SRModel
from models.errors import SrdeployError
from models.files import file_problem

MODES = ("plugin", "onnx")
PRECISIONS = ("fp32", "fp16")
DEFAULT_OPSET = 18
# torch's ONNX exporter (dynamo) emits opset 18 and newer only; both modes need nothing newer.
MIN_OPSET = {"plugin": 18, "onnx": 18}


class ExportError(SrdeployError, ValueError):
    """An export that cannot be done as asked; the message says why and what to do."""


def validate_options(model: SRModel, *, mode: str, precision: str, size: tuple[int, int] | None, opset: int) -> None:
    """ExportError unless ``model`` can be exported with these options (a fixed ``size`` must be valid)."""
    if mode not in MODES:
        raise ExportError(f"unknown export mode {mode!r}; use --ops plugin or --ops onnx")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use --precision fp32 or fp16")
    if opset < MIN_OPSET[mode]:
        raise ExportError(f"opset {opset} is too low for --ops {mode}: the exporter and the decompositions "
                          f"need opset ≥ {MIN_OPSET[mode]}; pass --opset {MIN_OPSET[mode]} or higher")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ExportError(f"opset {opset} is newer than this onnx package knows ({newest}); pass --opset ≤ {newest}")
    if size is not None:
        msg = model.size_error(*size)
        if msg:
            raise ExportError(f"--size {size[0]}x{size[1]}: {msg.split(';')[0]}; "
                              f"use --size {model.valid_size(*size)[0]}x{model.valid_size(*size)[1]}")


def check_output(path: str | Path, overwrite: bool) -> None:
    """ExportError naming the cause unless ``path`` can be written (its folder exists and is writable;
    an existing file only with ``overwrite``)."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not overwrite:
        raise ExportError(f"{path} exists; pass --overwrite to replace it or choose another -o")
    if not path.parent.is_dir() and not path.is_dir():
        raise ExportError(f"{path.parent} is not a directory; create it or choose another -o")
    problem = file_problem(path)
    if problem:
        raise ExportError(f"cannot write {path}: {problem}; choose another -o")


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of --size: HxW."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes HxW, e.g. 48x64, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--size needs positive sizes, got {text!r}")
    return h, w


def parse_option(text: str) -> tuple[str, Any]:
    """argparse type of --set: KEY=VALUE, the value read as JSON when it is JSON (16, true), else text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
