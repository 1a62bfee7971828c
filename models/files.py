"""Writing files so that nobody ever sees half of one: the one place srdeploy does it.

    with atomic_output(path) as tmp:      # tmp: a new file beside path (same file system)
        torch.save(obj, tmp)              # or anything that writes to a path
    atomic_write(path, b"..." or "...")   # the same for bytes or text

The result is flushed to disk and renamed over ``path`` only when the block finishes; on an error
or Ctrl-C the temporary file is removed and ``path`` is untouched. ``overwrite=False`` refuses (with
:class:`~models.errors.OutputExistsError`) when ``path`` exists, also when it appeared meanwhile.
The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp makes 0600).

Output locations are checked before any work: :func:`folder_problem` and :func:`file_problem` say
why a file cannot be written somewhere (a read-only folder, a file standing where a folder is
needed), so every command that writes (runtime.infer, export.onnx, the benchmarks, the export
cache) reports the real cause at once. They create nothing; the caller creates folders when it writes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError

__all__ = ["atomic_output", "atomic_write", "publish", "sha256_file", "folder_problem", "file_problem"]


def _refuse_existing(path: Path) -> None:
    raise OutputExistsError(f"{path} exists; pass --overwrite to replace it or choose another output")


def publish(tmp: str | Path, path: str | Path, *, overwrite: bool = True) -> None:
    """Move a finished temporary file into place with the usual permissions."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    if not overwrite and path.exists():
        _refuse_existing(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; publish it there when the block ends without error."""
    path = Path(path)
    if not overwrite and path.exists():
        _refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        publish(tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str, *, overwrite: bool = True) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# ----------------------------------------------------------------------------- checked before any work

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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (engines and checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
