"""The dated run folders a destination holds, read only through the ``Destination`` interface.

``list``, ``verify``, ``restore``, ``status`` and retention all start here, so they work for
every destination plugin, third-party ones included. A folder is *complete* when its manifest
exists and parses, *incomplete* otherwise (a failed run, the Go release, versions before
manifests). Nothing outside ``[<deployment>/]YYYY/MM/DD/`` is ever reported.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import IO

import attrs

from .config import BackupConfig
from .destination import Destination, ObjectInfo
from .errors import ObjectNotFound
from .manifest import MANIFEST_NAME, Manifest, ManifestError

_DATED = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/(.+)$")


def run_root(config: BackupConfig) -> str:
    """What precedes ``YYYY/MM/DD`` in every key: ``<deployment>`` or nothing."""
    if config.add_deployment_name_to_backup_path and config.deployment_name:
        return config.deployment_name.strip("/")
    return ""


@attrs.frozen
class RunFolder:
    """One dated folder: its objects (the manifest apart) and, when complete, its manifest."""

    date: datetime.date
    prefix: str
    objects: tuple[ObjectInfo, ...]
    manifest: Manifest | None = None
    #: Why a manifest that is there could not be read (the folder then counts as incomplete).
    manifest_error: str | None = None

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def state(self) -> str:
        return "complete" if self.complete else "incomplete"

    @property
    def files(self) -> int:
        return len(self.objects)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


def group_dated(root: str, objects: Iterable[ObjectInfo]) -> dict[str, list[ObjectInfo]]:
    """Objects by run prefix, the manifest included; keys outside dated folders dropped."""
    lead = f"{root}/" if root else ""
    folders: dict[str, list[ObjectInfo]] = {}
    for obj in objects:
        if not obj.key.startswith(lead):
            continue
        match = _DATED.match(obj.key[len(lead) :])
        if match is None:
            continue
        year, month, day, _ = match.groups()
        try:
            datetime.date(int(year), int(month), int(day))
        except ValueError:
            continue
        folders.setdefault(f"{lead}{year}/{month}/{day}", []).append(obj)
    return folders


def read_manifest(destination: Destination, prefix: str) -> Manifest:
    """The manifest of ``prefix``; ``ObjectNotFound`` or ``ManifestError`` when there is none."""
    key = f"{prefix}/{MANIFEST_NAME}"
    with destination.open_read(key) as stream:
        data = read_bounded(stream, MANIFEST_LIMIT, key)
    return Manifest.parse(data, key)


#: Far above any real manifest (about 150 bytes a file): a bound, not a format limit.
MANIFEST_LIMIT = 256 * 1024 * 1024


def read_bounded(stream: IO[bytes], limit: int, where: str) -> bytes:
    """Every byte of ``stream`` up to ``limit``, whatever each ``read`` returns.

    ``open_read`` may hand back a raw stream whose ``read(n)`` returns less than ``n`` before
    the end (a socket, an SFTP answer): one read would take a prefix for the whole object.
    """
    chunks = []
    size = 0
    while chunk := stream.read(min(limit + 1 - size, 8 * 1024 * 1024)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ManifestError(f"{where}: larger than {limit} bytes: not a manifest")
    return b"".join(chunks)


def run_folders(destination: Destination, root: str) -> list[RunFolder]:
    """Every dated folder under ``root``, newest first, manifests read and parsed."""
    lead = f"{root}/" if root else ""
    folders = group_dated(root, destination.list(lead))
    result = []
    for prefix, objects in folders.items():
        y, m, d = prefix[len(lead) :].split("/")
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        files = tuple(sorted((o for o in objects if o.key != manifest_key), key=lambda o: o.key))
        manifest: Manifest | None = None
        error: str | None = None
        if any(o.key == manifest_key for o in objects):
            # A manifest that does not parse, or vanished since the listing, makes the folder
            # incomplete; one that cannot be read (access denied, connection lost) is the
            # destination's failure, raised: "incomplete" would be a guess.
            try:
                manifest = read_manifest(destination, prefix)
            except ManifestError as exc:
                error = str(exc)
            except ObjectNotFound:
                error = f"manifest {manifest_key} vanished while listing"
        result.append(
            RunFolder(
                date=datetime.date(int(y), int(m), int(d)),
                prefix=prefix,
                objects=files,
                manifest=manifest,
                manifest_error=error,
            )
        )
    result.sort(key=lambda f: f.date, reverse=True)
    return result
