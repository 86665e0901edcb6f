"""The one escaping of file names that are not UTF-8 (``service_backup.names``), and the
manifest member that marks it: reversible for every byte string, identity on UTF-8 names,
strict about what it accepts back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service_backup.errors import SourceError
from service_backup.manifest import FORMAT, Manifest, ManifestError
from service_backup.names import escape, local_name, printable, unescape
from service_backup.results import StoredFile
from service_backup.source import scan_source
from service_backup.testing import AWKWARD_NAMES

SHA = "0" * 64


def name_of(raw: bytes) -> str:
    """What ``os.scandir`` hands out for a file named ``raw``."""
    return os.fsdecode(raw)


@given(st.binary(min_size=1, max_size=40))
def test_every_byte_string_comes_back_exactly(raw: bytes) -> None:
    stored, escaped = escape(name_of(raw))
    stored.encode("utf-8")  # always storable: no lone surrogates left
    assert local_name(stored, escaped) == name_of(raw), f"{raw!r} -> {stored!r} does not return"
    assert os.fsencode(local_name(stored, escaped)) == raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert escaped, f"{raw!r} is not UTF-8 but was not escaped"
    else:
        assert not escaped and stored == raw.decode("utf-8"), f"UTF-8 name {raw!r} was changed"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"caf\xe9.txt", "caf%E9.txt"),
        (b"50%\xff", "50%25%FF"),
        (b"dir\xfc/per%25cent\x80.bin", "dir%FC/per%2525cent%80.bin"),
        ("ünï".encode() + b"\xc3", "ünï%C3"),  # a truncated sequence after valid ones
        (b"\xed\xa0\x80", "%ED%A0%80"),  # an encoded surrogate is not UTF-8 either
    ],
)
def test_the_documented_form(raw: bytes, stored: str) -> None:
    assert escape(name_of(raw)) == (stored, True)
    assert unescape(stored) == raw


@pytest.mark.parametrize("name", [*AWKWARD_NAMES, "per%25cent%.txt", "caf%E9.txt", "ünï.txt"])
def test_utf8_names_stay_byte_for_byte(name: str) -> None:
    assert escape(name) == (name, False), f"a UTF-8 name {name!r} must be stored as it is"
    assert printable(name) == name


@pytest.mark.parametrize(
    "bogus",
    [
        "caf%e9.txt",  # lowercase: not what escape writes
        "%2E%2E/x%FF",  # escaped '.' would hide '..' from the path checks
        "a%2Fb%FF",  # escaped '/'
        "50%%FF",  # a bare '%' in an escaped name
        "caf%C3%A9.txt",  # only UTF-8 bytes: never escaped
        "plain.txt",
    ],
)
def test_unescape_accepts_only_what_escape_writes(bogus: str) -> None:
    with pytest.raises(ValueError):
        unescape(bogus)


def manifest_doc(entry: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "backup_guid": "g",
            "started_at": "s",
            "finished_at": "f",
            "files": [entry],
        }
    ).encode()


def test_manifest_marks_only_escaped_entries_and_reads_them_back() -> None:
    files = (StoredFile("caf%E9.txt", 1, SHA, escaped=True), StoredFile("per%25cent%.txt", 2, SHA))
    manifest = Manifest("g", None, None, "h", "s", "f", "/src", "v", files)
    entries = json.loads(manifest.to_json())["files"]
    assert entries == [
        {"path": "caf%E9.txt", "size": 1, "sha256": SHA, "escaped": True},
        {"path": "per%25cent%.txt", "size": 2, "sha256": SHA},
    ], "the extra member must appear on escaped entries only"
    assert Manifest.parse(manifest.to_json(), "t").files == files


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"path": "a%2Fb%FF", "size": 1, "sha256": SHA, "escaped": True}, "not an escaped name"),
        ({"path": "a.txt", "size": 1, "sha256": SHA, "escaped": "yes"}, "'escaped'"),
    ],
)
def test_manifest_with_a_bad_escaped_entry_is_refused(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        Manifest.parse(manifest_doc(entry), "crafted")


# --------------------------------------------------------------------------- scan_source
def test_scan_source_stores_escaped_keys_and_marks_them(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    os.makedirs(root + b"/d\xfcr")
    for raw in (b"caf\xe9.txt", b"d\xfcr/in.txt", b"per%25cent%.txt"):
        with open(root + b"/" + raw, "wb") as f:
            f.write(raw)
    found = {f.relative: f.escaped for f in scan_source(tmp_path)}
    assert found == {"caf%E9.txt": True, "d%FCr/in.txt": True, "per%25cent%.txt": False}


def test_scan_source_refuses_an_escaped_key_that_clashes_naming_both(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    for raw in (b"caf\xe9.txt", b"caf%E9.txt"):
        with open(root + b"/" + raw, "wb") as f:
            f.write(b"x")
    with pytest.raises(SourceError) as caught:
        scan_source(tmp_path)
    message = str(caught.value)
    message.encode("utf-8")  # printable
    assert message.count("caf%E9.txt") >= 2 and "caf%25E9.txt" not in message, message


def test_scan_source_refuses_an_escaped_file_where_a_folder_is_stored(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    os.mkdir(root + b"/x%FF")
    for raw in (b"x\xff", b"x%FF/in.txt"):
        with open(root + b"/" + raw, "wb") as f:
            f.write(b"x")
    with pytest.raises(SourceError, match="as a file and as a folder"):
        scan_source(tmp_path)


class Recorder:
    """A log with loguru's ``bind(...).warning`` shape that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def bind(self, **data: Any) -> Any:
        recorder = self

        class Bound:
            def warning(self, message: str) -> None:
                recorder.lines.append((message, data))

        return Bound()


def test_skipped_files_are_logged_under_printable_names(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    os.mkfifo(root + b"/pipe\xe9")
    os.symlink(b"/nowhere\xff", root + b"/link\xfe")
    (tmp_path / "keep.txt").write_bytes(b"k")
    log = Recorder()
    scan_source(tmp_path, log)
    logged = json.dumps([data for _, data in log.lines], ensure_ascii=False)
    logged.encode("utf-8")  # no lone surrogates: a log sink can write it
    assert "pipe%E9" in logged and "link%FE" in logged and "/nowhere%FF" in logged, logged
