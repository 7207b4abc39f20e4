"""Atomic file writes: what a reader or a crash sees is the old file or the new one, whole.

Kept apart from ``store`` (which loads torch) so that light commands, such as tidying an executed
notebook after each stage (``kit_tools.tidy``), write the same way without its imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)``, flush it to disk (fsync), rename it onto ``path`` and flush the folder: readers
    see the old file or the new one, never half of one, and after a crash or power loss the new
    file is either complete or absent. The temporary file is the writer's own (its process id),
    so concurrent writers of one path do not mix, and it is removed if ``write`` fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on some systems (Windows): nothing to flush there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
