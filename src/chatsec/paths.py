"""Where the shipped data (versions/, policies/) lives: in the wheel, or at the top of a clone."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    shipped = _PACKAGE / "_data" / name
    if shipped.is_dir():
        return shipped
    # An editable install or a clone: src/chatsec/ -> the repository root.
    clone = _PACKAGE.parent.parent / name
    if clone.is_dir():
        return clone
    raise FileNotFoundError(f"chatsec data directory {name}/ not found (broken install?)")


def versions_dir() -> Path:
    return _data_dir("versions")


def checkout_versions_dir() -> Path | None:
    """versions/ of a clone or an editable install, where new revisions belong; None for an
    installed wheel, whose shipped versions/ must never change."""
    path = versions_dir()
    return None if (_PACKAGE / "_data") in path.parents else path


def policies_dir() -> Path:
    return _data_dir("policies")


def migrate_dir() -> Path:
    return _PACKAGE / "migrate"
