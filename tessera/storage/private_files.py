"""The data dir is its owner's alone: the folder 0700, every file in it 0600.

It holds every record of the embedded mode, the ingest queue's messages and, in development,
the installation token, so no other account on the machine may read it. ``private_data_dir``
creates the folder that way, or tightens one that exists already with wider permissions
(an earlier version, a hand-made folder) together with the files in it, and warns naming what
it changed. ``keep_private`` tightens one file right after a library created it with its own
default (SQLite: 0644 less the umask); SQLite then gives its ``-wal`` and ``-shm`` files the
database file's permissions.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_data_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or tighten it and the files directly in it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    widened = _tighten(path, DIR_MODE)
    tightened = [child.name for child in sorted(path.iterdir()) if _tighten_file(child)]
    if widened is not None or tightened:
        was = f" (was {widened:04o})" if widened is not None else ""
        files = f"; files made 0600: {', '.join(tightened)}" if tightened else ""
        log.warning("data dir %s was open to other accounts%s: now 0700%s", path, was, files)


def keep_private(path: Path) -> None:
    """Make the file ``path`` 0600 when it exists with wider permissions."""
    _tighten_file(path)


def _tighten_file(path: Path) -> bool:
    # Symbolic links are left alone: their target may be anywhere, and chmod would follow them.
    if path.is_symlink() or not path.is_file():
        return False
    return _tighten(path, FILE_MODE) is not None


def _tighten(path: Path, mode: int) -> int | None:
    """chmod ``path`` to ``mode`` when it grants more; the old permissions, or None."""
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & ~mode == 0:
        return None
    os.chmod(path, current & mode)
    return current
