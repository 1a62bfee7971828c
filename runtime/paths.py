"""Output locations, checked before any work: can a file be written there, and if not, why.

Every CLI that writes (runtime.infer, export.onnx, the benchmarks, the export cache) asks
:func:`folder_problem` for each output folder before it computes anything, so that a read-only
folder or a file standing where a folder is needed is reported at once, by its real cause.
Nothing is created here; the caller creates folders when it writes.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["folder_problem", "file_problem"]


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder`` (created with its parents when missing), or None."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            return f"{existing} is a broken symbolic link"
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            return f"{folder} is a file, not a folder"
        return f"cannot create folder {folder}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(existing) else "permission denied"
        if existing == folder:
            return f"folder {folder} is not writable ({why})"
        return f"cannot create folder {folder}: {existing} is not writable ({why})"
    return None


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be written as a file (its folder, or a folder already at that name), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    return folder_problem(path.parent if str(path.parent) else Path("."))
