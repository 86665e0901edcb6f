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
            manifest, error = manifest_of(destination, prefix)
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


def manifest_of(
    destination: Destination, prefix: str, missing: str | None = None
) -> tuple[Manifest | None, str | None]:
    """The manifest in ``prefix``, or why it does not count (the folder is incomplete).

    A manifest that does not parse, or is not there (``missing`` says why; by default it was
    listed and vanished since), makes the folder incomplete; one that cannot be read (access
    denied, connection lost) is the destination's failure, raised: "incomplete" would be a
    guess.
    """
    try:
        return read_manifest(destination, prefix), None
    except ManifestError as exc:
        return None, str(exc)
    except ObjectNotFound:
        return None, missing or f"manifest {prefix}/{MANIFEST_NAME} vanished while listing"


@attrs.frozen
class DatedPrefix:
    """A dated folder as its keys' names show it: no sizes, nothing read."""

    date: datetime.date
    prefix: str
    #: A manifest object is listed in it (whether it parses is not known yet); ``None``: not
    #: known (found folder by folder, ``Destination.list_folders``), read to find out.
    has_manifest: bool | None


@attrs.frozen
class ChosenRun:
    """The complete run ``restore`` reads: its folder and its parsed manifest."""

    date: datetime.date
    prefix: str
    manifest: Manifest


_DATE = re.compile(r"(\d{4})/(\d{2})/(\d{2})")
_YEAR = re.compile(r"\d{4}")
_TWO_DIGITS = re.compile(r"\d{2}")


def dated_prefixes(destination: Destination, root: str) -> list[DatedPrefix]:
    """Every dated folder under ``root``, newest first, from the names alone.

    The folders ``run_folders`` reports, without listing any object's size or reading any
    manifest: what choosing a run needs. A key counts when it is ``YYYY/MM/DD/<something>``
    under ``root`` with a real date, as in ``group_dated``. A destination that lists folders
    itself (``list_folders`` overridden: a delimiter listing) is walked level by level, a
    few requests whatever the runs kept hold; any other is listed once (``list_keys``).
    """
    lead = f"{root}/" if root else ""
    if type(destination).list_folders is not Destination.list_folders:
        return _walk_dated(destination, lead)
    start = len(lead)
    end = start + 10  # len("YYYY/MM/DD")
    manifest_tail = f"/{MANIFEST_NAME}"
    seen: dict[str, bool] = {}
    for key in destination.list_keys(lead):
        if len(key) <= end + 1 or key[end] != "/" or not key.startswith(lead):
            continue
        prefix = key[:end]
        if key.endswith(manifest_tail) and len(key) == end + len(manifest_tail):
            seen[prefix] = True
        elif prefix not in seen:
            seen[prefix] = False
    result = []
    for prefix, has_manifest in seen.items():
        match = _DATE.fullmatch(prefix, start)
        if match is None:
            continue
        try:
            date = datetime.date(*map(int, match.groups()))
        except ValueError:
            continue
        result.append(DatedPrefix(date, prefix, has_manifest))
    result.sort(key=lambda f: f.date, reverse=True)
    return result


def _walk_dated(destination: Destination, lead: str) -> list[DatedPrefix]:
    """``dated_prefixes`` through ``list_folders``: years, their months, their days."""
    result = []
    for year in destination.list_folders(lead):
        if not _YEAR.fullmatch(year):
            continue
        for month in destination.list_folders(f"{lead}{year}/"):
            if not _TWO_DIGITS.fullmatch(month):
                continue
            for day in destination.list_folders(f"{lead}{year}/{month}/"):
                if not _TWO_DIGITS.fullmatch(day):
                    continue
                try:
                    date = datetime.date(int(year), int(month), int(day))
                except ValueError:
                    continue
                result.append(DatedPrefix(date, f"{lead}{year}/{month}/{day}", None))
    result.sort(key=lambda f: f.date, reverse=True)
    return result


def _manifest_for_choice(
    destination: Destination, folder: DatedPrefix
) -> tuple[Manifest | None, str | None]:
    """``manifest_of`` a folder, when it may have one (one found folder by folder is read to
    find out: "no manifest" when it is not there)."""
    if folder.has_manifest is False:
        return None, "no manifest"
    return manifest_of(
        destination, folder.prefix, "no manifest" if folder.has_manifest is None else None
    )


def choose_run(
    destination: Destination, root: str, date: datetime.date | None = None
) -> tuple[ChosenRun | None, str]:
    """The run to restore: the newest complete one, or that of ``date``; or why there is none.

    Only the chosen run's manifest is read (and those of newer folders whose manifest turned
    out not to parse, or, found folder by folder, not to be there), not every run's: the
    choice is that of ``run_folders`` newest first, made from the names (``dated_prefixes``).
    A manifest that cannot be read (not: does not parse) raises, as in ``run_folders``.
    """
    folders = dated_prefixes(destination, root)
    if date is not None:
        matching = [f for f in folders if f.date == date]
        if not matching:
            return None, f"no run on {date}"
        folder = matching[0]
        manifest, why = _manifest_for_choice(destination, folder)
        if manifest is None:
            return None, f"the run of {date} is incomplete ({why})"
        return ChosenRun(folder.date, folder.prefix, manifest), ""
    for folder in folders:
        manifest, _ = _manifest_for_choice(destination, folder)
        if manifest is not None:
            return ChosenRun(folder.date, folder.prefix, manifest), ""
    incomplete = len(folders)
    return None, "no complete run" + (f" ({incomplete} incomplete)" if incomplete else "")
