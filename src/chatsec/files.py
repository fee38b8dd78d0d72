"""Small file-system helpers shared by the keyring and the backups."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make renames and links in `directory` durable.

    Some filesystems cannot open or fsync a directory; then this does nothing.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
