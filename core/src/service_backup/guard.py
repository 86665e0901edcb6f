"""``exit_if_in_progress``: one run at a time per source folder, across processes.

A manual backup started while the daemon's scheduled run is uploading is as much "another
backup in progress" as an overlapping cron tick, so the guard is an advisory ``flock`` on a
file named after the source folder, not a flag in one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(source_folder: str) -> Path:
    base = Path(os.environ.get("SERVICE_BACKUP_LOCK_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(os.path.abspath(source_folder).encode()).hexdigest()[:16]
    return base / f"service-backup-{digest}.lock"


@contextmanager
def exclusive_run(source_folder: str, enabled: bool) -> Iterator[bool]:
    """Yield True when this run may proceed; False when another holds the lock."""
    if not enabled:
        yield True
        return
    path = lock_path(source_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
