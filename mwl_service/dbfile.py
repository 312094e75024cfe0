"""The SQLite worklist file is private to the service account.

SQLite creates a new database file with mode 0644 (less the umask), so bookings
would be readable by every local user. Creating the empty file ourselves with mode
0600 first is enough: SQLite gives the ``-wal`` and ``-shm`` files the mode of their
database file. An existing file keeps its mode (an administrator may have chosen it).
"""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: str | os.PathLike[str]) -> None:
    """Create ``path`` as an empty file readable only by its owner, unless it exists."""
    try:
        fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
