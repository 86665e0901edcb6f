"""The catalog: a manifest read whole whatever each read returns; the run restore chooses."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from service_backup.catalog import choose_run, dated_prefixes, read_bounded, run_folders
from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.manifest import MANIFEST_NAME, Manifest, ManifestError
from service_backup.results import StoredFile
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import LocalDestination


class Trickle(io.RawIOBase):
    """A raw stream that hands out at most ``step`` bytes per read, as a socket may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def test_short_reads_are_read_to_the_end() -> None:
    data = bytes(range(256)) * 40
    got = read_bounded(Trickle(data, 7), 1 << 20, "x/.service-backup-manifest.json")
    assert got == data, f"read {len(got)} of {len(data)} bytes: a short read was taken as the end"


def test_an_object_beyond_the_bound_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"x/m\.json: larger than 100 bytes"):
        read_bounded(Trickle(b"a" * 101, 50), 100, "x/m.json")
    assert read_bounded(Trickle(b"a" * 100, 50), 100, "x/m.json") == b"a" * 100


# ---------------------------------------------------------------- choosing the run to restore

DAYS = {
    "d3": datetime.date(2026, 11, 30),  # newest: files, no manifest (a failed run)
    "d2": datetime.date(2026, 11, 29),  # a manifest that does not parse
    "d1": datetime.date(2026, 11, 28),  # complete
    "d0": datetime.date(2026, 11, 27),  # complete, older
}


def _prefix(root: str, day: datetime.date) -> str:
    return f"{root}/{day:%Y/%m/%d}" if root else f"{day:%Y/%m/%d}"


def _manifest(guid: str, files: tuple[StoredFile, ...]) -> bytes:
    return Manifest(
        backup_guid=guid, identifier=None, deployment_name=None, hostname="h",
        started_at="2026-11-27T00:00:00.000000Z", finished_at="2026-11-27T00:01:00.000000Z",
        source_folder="/src", version="t", files=files,
    ).to_json()  # fmt: skip


def _put(dest: LocalDestination, key: str, data: bytes) -> None:
    path = dest.base / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Recording(LocalDestination):
    """A local destination that records the keys read and refuses ``list`` (sizes, times)."""

    reads: list[str]

    def open_read(self, key: str) -> IO[bytes]:
        self.reads.append(key)
        return super().open_read(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise AssertionError(f"list({prefix!r}) called: choosing a run needs the names only")


def _world(tmp_path: Path, root: str = "dep") -> Recording:
    dest = Recording(
        LocalConfig(path=str(tmp_path / "dest")), DestinationContext("l", threading.Event())
    )
    dest.reads = []
    entry = StoredFile("a/f.txt", 4, hashlib.sha256(b"data").hexdigest())
    for name, day in DAYS.items():
        prefix = _prefix(root, day)
        _put(dest, f"{prefix}/a/f.txt", b"data")
        if name == "d2":
            _put(dest, f"{prefix}/{MANIFEST_NAME}", b'{"format": "service-backup/manifest/v1", "fi')
        elif name in ("d1", "d0"):
            _put(dest, f"{prefix}/{MANIFEST_NAME}", _manifest(name, (entry,)))
    _put(dest, "dep/notes.txt", b"not a run")
    _put(dest, "dep/2026/13/01/x", b"not a date")
    _put(dest, "other/2026/12/01/x", b"another deployment")
    return dest


def test_choose_run_takes_the_newest_complete_run_reading_only_the_manifests_it_needs(
    tmp_path: Path,
) -> None:
    dest = _world(tmp_path)
    chosen, why = choose_run(dest, "dep")
    assert chosen is not None, f"a complete run exists, yet: {why}"
    assert (chosen.date, chosen.manifest.backup_guid) == (DAYS["d1"], "d1"), (
        f"chose {chosen.date} ({chosen.manifest.backup_guid}): the newest complete run is d1"
    )
    assert chosen.prefix == "dep/2026/11/28", chosen.prefix
    assert dest.reads == [f"dep/2026/11/29/{MANIFEST_NAME}", f"dep/2026/11/28/{MANIFEST_NAME}"], (
        f"read {dest.reads}: only the manifests down to the chosen run should be read"
    )


def test_choose_run_by_date_says_why_a_run_cannot_be_restored(tmp_path: Path) -> None:
    dest = _world(tmp_path)
    chosen, why = choose_run(dest, "dep", DAYS["d3"])
    assert chosen is None and why == "the run of 2026-11-30 is incomplete (no manifest)", why
    chosen, why = choose_run(dest, "dep", DAYS["d2"])
    assert chosen is None and why.startswith("the run of 2026-11-29 is incomplete (manifest "), why
    assert "cannot be read" in why, why
    chosen, why = choose_run(dest, "dep", datetime.date(2026, 11, 1))
    assert chosen is None and why == "no run on 2026-11-01", why
    chosen, why = choose_run(dest, "dep", DAYS["d0"])
    assert chosen is not None and chosen.manifest.backup_guid == "d0", why
    assert dest.reads[-1] == f"dep/2026/11/27/{MANIFEST_NAME}", dest.reads


def test_choose_run_without_a_complete_run_counts_the_incomplete_ones(tmp_path: Path) -> None:
    dest = _world(tmp_path)
    for day in ("2026/11/28", "2026/11/27"):
        (dest.base / f"dep/{day}/{MANIFEST_NAME}").unlink()
    chosen, why = choose_run(dest, "dep")
    assert chosen is None and why == "no complete run (4 incomplete)", why
    chosen, why = choose_run(dest, "nothing-here")
    assert chosen is None and why == "no complete run", why


def test_a_manifest_that_cannot_be_read_fails_the_choice(tmp_path: Path) -> None:
    """Not parsing makes a folder incomplete; not being readable is the destination's failure."""
    dest = _world(tmp_path)
    refused = f"dep/2026/11/28/{MANIFEST_NAME}"
    real_open = dest.open_read

    def open_read(key: str) -> IO[bytes]:
        if key == refused:
            raise DestinationError(f"{key}: access denied")
        return real_open(key)

    dest.open_read = open_read  # type: ignore[method-assign]
    with pytest.raises(DestinationError, match="access denied"):
        choose_run(dest, "dep")

    # One that vanished since the listing only makes its folder incomplete: the next is chosen.
    def vanished(key: str) -> IO[bytes]:
        if key == refused:
            raise ObjectNotFound(f"{key} not found")
        return real_open(key)

    dest.open_read = vanished  # type: ignore[method-assign]
    chosen, why = choose_run(dest, "dep")
    assert chosen is not None and chosen.manifest.backup_guid == "d0", why
    chosen, why = choose_run(dest, "dep", DAYS["d1"])
    assert chosen is None and why.endswith("vanished while listing)"), why


def test_dated_prefixes_find_the_folders_run_folders_finds(tmp_path: Path) -> None:
    for root in ("dep", ""):
        dest = _world(tmp_path / (root or "top"), root)
        by_names = [(f.date, f.prefix, f.has_manifest) for f in dated_prefixes(dest, root)]
        listed = [
            (f.date, f.prefix, f.complete or f.manifest_error is not None)
            for f in run_folders(LocalDestination(dest_config(dest), CONTEXT), root)
        ]
        assert by_names == listed, f"root {root!r}: names give {by_names}, listing {listed}"
        assert [d for d, _, _ in by_names] == sorted(DAYS.values(), reverse=True), by_names


def dest_config(dest: LocalDestination) -> LocalConfig:
    return LocalConfig(path=str(dest.base))


CONTEXT = DestinationContext("l", threading.Event())


def test_local_list_keys_are_the_keys_of_list(tmp_path: Path) -> None:
    dest = LocalDestination(LocalConfig(path=str(tmp_path / "dest")), CONTEXT)
    for key in ("dep/2026/11/30/a/b/c.txt", "dep/2026/11/30/x", "dep/2026/11/300", "dep/z",
                "dep/2026/11/30/.service-backup-partial-0123"):  # fmt: skip
        _put(dest, key, b"1")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_bytes(b"2")
    (dest.base / "dep/2026/11/30/linked").symlink_to(tmp_path / "elsewhere")
    for prefix in ("", "dep/", "dep/2026/11/30", "dep/2026/11/30/", "dep/2026/11/30/a/b/c.txt"):
        keys = sorted(dest.list_keys(prefix))
        assert keys == sorted(o.key for o in dest.list(prefix)), f"prefix {prefix!r}: {keys}"
    assert sorted(dest.list_keys("dep/2026/11/30/")) == [
        "dep/2026/11/30/a/b/c.txt", "dep/2026/11/30/x"
    ], "a partial file or a symlinked folder must not be listed"  # fmt: skip


def test_the_default_list_keys_are_the_keys_of_list() -> None:
    class Listed(Destination):
        def list(self, prefix: str) -> Iterator[ObjectInfo]:
            return iter([ObjectInfo(f"{prefix}a", 1), ObjectInfo(f"{prefix}b/c", 2)])

        def describe(self, prefix: str) -> str:
            raise NotImplementedError

        def ensure_location(self) -> None:
            raise NotImplementedError

        def write(self, key: str, source: Any) -> ObjectInfo:
            raise NotImplementedError

        def open_read(self, key: str) -> IO[bytes]:
            raise NotImplementedError

        def stat(self, key: str) -> ObjectInfo:
            raise NotImplementedError

        def delete(self, key: str) -> None:
            raise NotImplementedError

    assert list(Listed().list_keys("p/")) == ["p/a", "p/b/c"]


# ---------------------------------------------------------------- manifest entries

SHA = hashlib.sha256(b"x").hexdigest()


def _doc(*entries: Any) -> bytes:
    return json.dumps({
        "format": "service-backup/manifest/v1", "backup_guid": "g", "started_at": "s",
        "finished_at": "f", "files": list(entries),
    }).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"path": "b", "size": 1, "sha256": SHA.upper()}, "'b' has a bad size or sha256"),
        ({"path": "b", "size": 1, "sha256": SHA[:-1] + "g"}, "'b' has a bad size or sha256"),
        ({"path": "b", "size": 1, "sha256": SHA[:-1]}, "'b' has a bad size or sha256"),
        ({"path": "b", "size": -1, "sha256": SHA}, "'b' has a bad size or sha256"),
        ({"path": "b", "size": True, "sha256": SHA}, "is not {path, size, sha256}"),
        ({"path": "b", "size": 1.0, "sha256": SHA}, "is not {path, size, sha256}"),
        ({"path": 7, "size": 1, "sha256": SHA}, "is not {path, size, sha256}"),
        ({"path": "b", "size": 1, "sha": SHA}, "sha256"),
        ("b", "cannot be read"),
    ],
)
def test_every_bad_entry_is_refused_naming_it(bad: Any, why: str) -> None:
    """Among good entries, wherever it stands, a bad one fails the whole manifest, named."""
    good = [{"path": f"a{i}", "size": i, "sha256": SHA} for i in range(3)]
    for at in (0, 2, 3):
        entries = [*good[:at], bad, *good[at:]]
        with pytest.raises(ManifestError, match=re.escape(why)):
            Manifest.parse(_doc(*entries), "m")


def test_entries_read_back_as_written_extra_members_ignored() -> None:
    entries = [
        {"path": "a", "size": 0, "sha256": SHA},
        {"path": "b%FF", "size": 2, "sha256": SHA, "escaped": True},
        {"path": "c", "size": 3, "sha256": SHA, "mode": "0644"},
        {"path": "d", "size": 4, "sha256": SHA, "escaped": False},
    ]
    files = Manifest.parse(_doc(*entries), "m").files
    assert files == (
        StoredFile("a", 0, SHA), StoredFile("b%FF", 2, SHA, escaped=True),
        StoredFile("c", 3, SHA), StoredFile("d", 4, SHA),
    ), files  # fmt: skip
    with pytest.raises(ManifestError, match="files is not a list"):
        Manifest.parse(_doc().replace(b'"files": []', b'"files": {}'), "m")


class Walking(Recording):
    """A destination that lists folders itself (as S3's delimiter listing does): the run is
    then found folder by folder, and neither ``list`` nor ``list_keys`` may be called."""

    folder_listings: list[str]

    def list_keys(self, prefix: str) -> Iterator[str]:
        raise AssertionError(f"list_keys({prefix!r}) called: the folders are listed one by one")

    def list_folders(self, prefix: str) -> Iterator[str]:
        self.folder_listings.append(prefix)
        folder = self.base / prefix
        if folder.is_dir():
            yield from (entry.name for entry in folder.iterdir() if entry.is_dir())


def _walking_world(tmp_path: Path) -> Walking:
    _world(tmp_path)
    dest = Walking(
        LocalConfig(path=str(tmp_path / "dest")), DestinationContext("l", threading.Event())
    )
    dest.reads, dest.folder_listings = [], []
    return dest


def test_a_destination_listing_folders_is_walked_level_by_level(tmp_path: Path) -> None:
    dest = _walking_world(tmp_path)
    chosen, why = choose_run(dest, "dep")
    assert chosen is not None and chosen.manifest.backup_guid == "d1", (
        f"walking the folders chose {chosen and chosen.date}: {why}"
    )
    assert dest.reads == [f"dep/2026/11/{day}/{MANIFEST_NAME}" for day in ("30", "29", "28")], (
        f"read {dest.reads}: the newest folders' manifests down to the first complete run"
    )
    assert sorted(dest.folder_listings) == ["dep/", "dep/2026/", "dep/2026/11/", "dep/2026/13/"], (
        f"folder listings {dest.folder_listings}: one per year and month under the root"
    )
    walked = [(f.date, f.prefix) for f in dated_prefixes(dest, "dep")]
    listed = [(f.date, f.prefix) for f in dated_prefixes(_world(tmp_path / "again"), "dep")]
    assert walked == listed, f"walked {walked}, listed {listed}: the same folders either way"


def test_a_walked_run_without_manifest_is_incomplete_not_vanished(tmp_path: Path) -> None:
    dest = _walking_world(tmp_path)
    chosen, why = choose_run(dest, "dep", DAYS["d3"])
    assert chosen is None and why == "the run of 2026-11-30 is incomplete (no manifest)", why
    chosen, why = choose_run(dest, "dep", DAYS["d2"])
    assert chosen is None and why.startswith("the run of 2026-11-29 is incomplete (manifest"), why
    chosen, why = choose_run(dest, "dep", DAYS["d0"])
    assert chosen is not None and chosen.manifest.backup_guid == "d0", why
    chosen, why = choose_run(dest, "nothing-here")
    assert chosen is None and why == "no complete run", why
