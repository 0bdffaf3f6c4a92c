"""Atomic publication of files: write under a temporary name, then rename.

``tempfile`` creates files readable by their owner only (mode 600) and folders
of mode 700; published outputs and bundled weights get the ordinary modes the
user's umask gives (usually 644 and 755), so other users and packagers can
read them.
"""

from __future__ import annotations

import os


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Give ``tmp`` the umask's default mode and rename it to ``dest``."""
    default = 0o777 if os.path.isdir(tmp) else 0o666
    os.chmod(tmp, default & ~_umask())
    os.replace(tmp, dest)
