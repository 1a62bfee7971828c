"""Writing files so that nobody ever sees half of one: the one place srdeploy does it.

    with atomic_output(path) as tmp:      # tmp: a new file beside path (same file system)
        torch.save(obj, tmp)              # or anything that writes to a path
    atomic_write(path, b"..." or "...")   # the same for bytes or text

The result is flushed to disk and renamed over ``path`` only when the block finishes; on an error
or Ctrl-C the temporary file is removed and ``path`` is untouched. ``overwrite=False`` refuses (with
:class:`~models.errors.OutputExistsError`) when ``path`` exists, also when it appeared meanwhile.
The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp makes 0600).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError

__all__ = ["atomic_output", "atomic_write", "publish"]


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
