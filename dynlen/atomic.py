"""Whole-file writes: a temporary file in the same folder, flushed, then renamed over the target.

A kill, a full disk or a read-only folder then leaves the previous file (or none), never a
truncated one that a later ``report`` or ``choose`` would stumble on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from dynlen.errors import UserError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all (the rename is atomic on one filesystem)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def writable_folder(folder: Path, room: int = 1 << 20) -> Path:
    """``folder`` after a trial write of ``room`` bytes where it is (or will be) made: one line when that
    place is read-only, full or not a folder.

    Commands call it before they load anything, so an unusable output folder costs seconds, not a run;
    it creates nothing, so a command refused later leaves no empty folder behind.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * room)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write to {folder} ({exc.strerror}); give a writable --out with free space") from None
    return folder
