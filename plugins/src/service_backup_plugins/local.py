"""The ``local`` destination: a folder on this VM or an NFS mount.

Each file is written under a temporary name beside its final one, fsynced, then renamed, and
the folder fsynced, so a crash or a failed copy never leaves a half-written file carrying the
final name.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from service_backup.config import no_parent_segments, required
from service_backup.destination import Destination, DestinationContext, DestinationType, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.hookspecs import hookimpl
from service_backup.source import Source

PARTIAL_MARK = ".service-backup-partial-"
COPY_BUFFER = 1024 * 1024


def _mode(owner_needs: int, what: str) -> Any:
    """attrs validator: a quoted octal string (``"0600"``) that leaves the owner ``owner_needs``.

    YAML reads an unquoted ``0600`` as the number 384 and ``600`` as six hundred, so only a
    string is accepted: a number would be a mode nobody meant.
    """

    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not re.fullmatch(r"(0o?)?[0-7]{3}", value.strip()):
            raise ValueError(f'{attribute.name}: expected a quoted octal string such as "{what}"')
        if parse_mode(value) & owner_needs != owner_needs:
            raise ValueError(
                f"{attribute.name}: must leave the owner {oct(owner_needs)[2:]} "
                "(the backup could not be written or restored otherwise)"
            )

    return check


def parse_mode(text: str) -> int:
    """``"0600"``, ``"600"`` or ``"0o600"`` as permission bits."""
    return int(text.strip().removeprefix("0o"), 8)


@attrs.frozen
class LocalConfig:
    path: str = required(validator=no_parent_segments)
    #: Stored copies are private by default: a 0600 database dump must not become 0644.
    file_mode: Any = attrs.field(default="0600", validator=_mode(0o600, "0600"))
    folder_mode: Any = attrs.field(default="0700", validator=_mode(0o700, "0700"))


class LocalDestination(Destination):
    file_concurrency = 4
    can_rename = True

    def __init__(self, config: LocalConfig, context: DestinationContext) -> None:
        self.base = Path(config.path)
        self.name = context.display_name
        # getattr: subclasses (the conformance suite's self-test) bring config classes of their own.
        self.file_mode = parse_mode(getattr(config, "file_mode", "0600"))
        self.folder_mode = parse_mode(getattr(config, "folder_mode", "0700"))

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise DestinationError(f"invalid key {key!r}")
        return self.base.joinpath(*parts)

    def _create(self, path: str, _flags: int) -> int:
        """A new file, never through a planted link, with exactly ``file_mode`` (not umask's)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, self.file_mode)
        except OSError:
            os.close(fd)
            raise
        return fd

    def describe(self, prefix: str) -> str:
        return str(self.base / prefix)

    def ensure_location(self) -> None:
        try:
            _make_folders(self.base, self.folder_mode)
        except OSError as exc:
            raise DestinationError(f"cannot create folder {self.base}: {exc.strerror}") from None

    def write(self, key: str, source: Source) -> ObjectInfo:
        final = self._path(key)
        partial = final.with_name(f"{PARTIAL_MARK}{uuid.uuid4().hex}")
        try:
            _make_folders(final.parent, self.folder_mode)
            with source.open() as stream, open(partial, "wb", opener=self._create) as out:
                shutil.copyfileobj(stream, out, COPY_BUFFER)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            target = exc.filename if exc.filename and exc.filename != str(partial) else final
            raise DestinationError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return self.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(PARTIAL_MARK):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.base).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield ObjectInfo(key=key, size=st.st_size)

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None
        return ObjectInfo(key=key, size=st.st_size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.base}") from None

    def rename(self, moves: Sequence[tuple[str, str]]) -> None:
        """``os.replace`` each file (atomic, same file system), then prune emptied folders."""
        made: set[Path] = set()
        emptied: set[Path] = set()
        for old, new in moves:
            source, target = self._path(old), self._path(new)
            try:
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                os.replace(source, target)
            except FileNotFoundError:
                if not source.exists():
                    raise ObjectNotFound(f"{old} not found in {self.base}") from None
                raise DestinationError(f"cannot move {old} to {target}: no such folder") from None
            except OSError as exc:
                raise DestinationError(f"cannot move {old} to {target}: {exc.strerror}") from None
            emptied.add(source.parent)
        for folder in made:
            _fsync_dir(folder)
        for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            while folder != self.base and self.base in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent


def _make_folders(path: Path, mode: int) -> None:
    """``mkdir -p`` giving the folders it creates ``mode`` (existing ones are left alone)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, mode)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def destination_types() -> list[DestinationType]:
    return [DestinationType("local", LocalConfig, LocalDestination, label="local")]
