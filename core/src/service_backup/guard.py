"""``exit_if_in_progress``: one run at a time per source folder, across processes.

A manual backup started while the daemon's scheduled run is uploading is as much "another
backup in progress" as an overlapping cron tick, so the guard is an advisory ``flock`` on a
file named after the source folder, not a flag in one process.

The lock lives in a *private* folder: owned by this user, mode 0700, inside a folder that is
not world-writable. In ``/tmp`` any local user could hold the lock (every run rejected) or plant
a symlink where the lock file goes. The BOSH job sets ``SERVICE_BACKUP_LOCK_DIR`` to a folder
under the job's data directory; elsewhere the default is ``$XDG_RUNTIME_DIR/service-backup``
or ``~/.local/state/service-backup/locks``. The same folder records the process groups of
running child commands (see ``processes``). A lock that cannot be taken is a ``LockError``
naming the file and the reason; the run fails with it (and alerts), it never vanishes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import BackupError


class LockError(BackupError):
    """The lock folder or file is unusable (wrong owner, too open, a symlink, unwritable)."""


def lock_dir() -> Path:
    """Where locks and child records live (not created or checked; see ``private_dir``)."""
    configured = os.environ.get("SERVICE_BACKUP_LOCK_DIR")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "service-backup"
    return Path.home() / ".local" / "state" / "service-backup" / "locks"


def private_dir(path: Path | None = None) -> Path:
    """The lock folder, created 0700 if missing, checked private; LockError naming why not."""
    folder = Path(os.path.abspath(path or lock_dir()))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        st = os.lstat(folder)
        parent = os.stat(folder.parent)
    except OSError as exc:
        raise LockError(f"lock folder {folder} cannot be created: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LockError(f"lock folder {folder} is not a folder (a symbolic link or a file)")
    if st.st_uid != os.geteuid():
        raise LockError(
            f"lock folder {folder} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()})"
        )
    if parent.st_mode & stat.S_IWOTH:
        raise LockError(
            f"lock folder {folder} is inside a world-writable folder; "
            "set SERVICE_BACKUP_LOCK_DIR to a private location"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(folder, 0o700, follow_symlinks=False)  # ours, too open: tighten it
        except OSError as exc:
            raise LockError(
                f"lock folder {folder} is open to other users and cannot be made private: "
                f"{exc.strerror or exc}"
            ) from None
    return folder


def lock_path(source_folder: str) -> Path:
    digest = hashlib.sha256(os.path.abspath(source_folder).encode()).hexdigest()[:16]
    return lock_dir() / f"service-backup-{digest}.lock"


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockError(f"lock file {path} is a symbolic link; refusing to follow it") from None
        owner = ""
        try:
            uid = os.lstat(path).st_uid
            if uid != os.geteuid():
                owner = f" (owned by uid {uid}, perhaps left by a manual run as another user)"
        except OSError:
            pass
        raise LockError(
            f"lock file {path} cannot be opened: {exc.strerror or exc}{owner}"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise LockError(f"lock file {path} is not a regular file")
    return fd


@contextmanager
def exclusive_run(source_folder: str, enabled: bool) -> Iterator[bool]:
    """Yield True when this run may proceed; False when another holds the lock.

    Raises LockError (before yielding) when the lock cannot be taken for another reason.
    """
    if not enabled:
        yield True
        return
    private_dir()
    path = lock_path(source_folder)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            raise LockError(f"lock file {path} cannot be locked: {exc.strerror or exc}") from None
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
