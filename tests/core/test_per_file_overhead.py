"""What the start-up and per-file savings of a run of small files must leave exactly as it was.

The manifest's file lines are built without ``json.dumps`` per entry, source files are listed
as strings rather than ``Path`` objects, the plugin groups come from one scan of the installed
distributions, and ``backup`` pauses the garbage collector while it starts. None of that may
change a byte an operator or a script sees, nor leave the collector changed for a caller.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from service_backup.cli import main
from service_backup.manifest import Manifest, _file_entry
from service_backup.plugins import DESTINATION_GROUP, HOOKS_GROUP, load_registry
from service_backup.results import StoredFile
from service_backup.source import Source, SourceFile, scan_source
from tests.core.cli import write_config

SHA = "0123456789abcdef" * 4

ENTRIES = [
    StoredFile("plain.bin", 4096, SHA),
    StoredFile("dir-000/file-00001.bin", 0, SHA),
    StoredFile('quote"back\\slash', 1, SHA),
    StoredFile("tab\tnew\nline\x01\x1f\x7f", 2, SHA),
    StoredFile("caf\u00e9/\u65e5\u672c/\U0001f600.txt", 3, SHA),
    StoredFile("\u2028\u2029", 5, SHA),
    StoredFile("caf%E9.txt", 7, SHA, escaped=True),
    StoredFile("big", 2**63 + 5, SHA),
    # What a hook might report instead of the usual types: the slow path, same bytes.
    StoredFile("bool-size", True, SHA),  # type: ignore[arg-type]
    StoredFile("float-size", 1.5, SHA),  # type: ignore[arg-type]
    StoredFile("upper", 9, SHA.upper()),
    StoredFile("odd-sha", 9, 'quote"back\\slash\u00e9'),  # not a digest: escaped as json does
]


def _reference_json(manifest: Manifest) -> bytes:
    """``to_json`` as it was written before: ``json.dumps`` of each entry."""
    document: dict[str, Any] = {
        "format": "service-backup/manifest/v1",
        "backup_guid": manifest.backup_guid,
        "identifier": manifest.identifier,
        "deployment_name": manifest.deployment_name,
        "hostname": manifest.hostname,
        "started_at": manifest.started_at,
        "finished_at": manifest.finished_at,
        "source_folder": manifest.source_folder,
        "version": manifest.version,
        "file_count": manifest.file_count,
        "total_size": manifest.total_size,
    }
    head = json.dumps(document, indent=1, ensure_ascii=False).removesuffix("\n}")
    files = ",\n  ".join(
        json.dumps(_file_entry(f), ensure_ascii=False)
        for f in sorted(manifest.files, key=lambda f: f.path)
    )
    body = f'{head},\n "files": [\n  {files}\n ]\n}}\n' if files else f'{head},\n "files": []\n}}\n'
    return body.encode("utf-8")


@pytest.mark.parametrize("files", [tuple(ENTRIES), (), (ENTRIES[0],)], ids=["all", "none", "one"])
def test_manifest_bytes_are_those_json_dumps_wrote(files: tuple[StoredFile, ...]) -> None:
    manifest = Manifest("guid", "id", None, "host", "s", "f", "/src", "1.0", files)
    data = manifest.to_json()
    expected = _reference_json(manifest)
    assert data == expected, (
        "the manifest's bytes changed:\n"
        + data.decode()[-800:]
        + "\nexpected\n"
        + expected.decode()[-800:]
    )
    assert json.loads(data)["files"] == [
        _file_entry(f) for f in sorted(files, key=lambda f: f.path)
    ]


def test_source_files_keep_their_path_as_a_string_and_a_path(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"abc")
    (listed,) = scan_source(f"{tmp_path}//./")
    assert type(listed.location) is str, "scan_source must keep the path as a str"
    assert listed.location == str(tmp_path / "sub" / "a.bin"), listed.location
    assert listed.path == tmp_path / "sub" / "a.bin" and isinstance(listed.path, Path)
    assert listed.display == str(tmp_path / "sub" / "a.bin")

    by_path = SourceFile(path=tmp_path / "sub" / "a.bin", relative="sub/a.bin", size=3)
    by_str = SourceFile(path=str(tmp_path / "sub" / "a.bin"), relative="sub/a.bin", size=3)
    assert by_path == by_str and by_path.location == by_str.location, "Path and str must agree"

    source = Source.from_file(listed)
    assert source.path == tmp_path / "sub" / "a.bin", f"Source.path is {source.path!r}"
    assert source.read_all() == b"abc" and source.name == listed.display
    source.close()
    assert Source.from_bytes(b"x").path is None, "an in-memory Source has no path"


def test_a_run_scans_the_installed_distributions_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass over the distributions, parsing only the entry points of plugin packages; what
    it finds is exactly what ``importlib.metadata.entry_points`` reports for both groups."""
    calls: list[int] = []
    parsed: list[str] = []
    real = importlib.metadata.distributions
    real_entry_points = importlib.metadata.Distribution.entry_points

    def counting(**params: Any) -> Any:
        calls.append(1)
        return real(**params)

    def parsing(self: importlib.metadata.Distribution) -> Any:
        parsed.append(self.read_text("entry_points.txt") or "")
        return real_entry_points.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(importlib.metadata, "distributions", counting)
    monkeypatch.setattr(importlib.metadata.Distribution, "entry_points", property(parsing))
    registry = load_registry()
    assert registry.destination_type("local").name == "local"
    assert len(calls) == 1, f"expected one scan of the distributions for a run, got {calls}"
    headers = (f"[{DESTINATION_GROUP}]", f"[{HOOKS_GROUP}]")
    assert parsed and all(any(h in text for h in headers) for text in parsed), (
        "entry points of a distribution that is no plugin were parsed"
    )

    def everywhere(group: str) -> list[tuple[str, str]]:
        return sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group))

    for group in (DESTINATION_GROUP, HOOKS_GROUP):
        got = [(ep.name, ep.value) for ep in registry.entry_points(group)]
        assert got == everywhere(group), f"{group}: {got} != {everywhere(group)}"
        assert all(ep.dist is not None for ep in registry.entry_points(group)), group


def test_backup_in_process_leaves_the_collector_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backup`` pauses and freezes the collector for its own process; called in-process it
    must hand the collector back as it was, enabled or not, with nothing left frozen."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(b"a" * 100)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "local", "config": {"path": str(tmp_path / "dest")}}],
            "source_folder": str(source),
            "cron_schedule": "*/5 * * * *",
        },
    )
    assert gc.isenabled() and gc.get_freeze_count() == 0, "the test needs a default collector"
    try:
        assert main(["backup", str(config), "--no-progress"]) == 0
        assert "Upload backup completed successfully" in capsys.readouterr().out
        assert list((tmp_path / "dest").rglob("a.bin")), "the run stored nothing"
        assert gc.isenabled(), "backup left the garbage collector disabled"
        assert gc.get_freeze_count() == 0, "backup left objects frozen in a process that goes on"

        gc.disable()
        try:
            assert main(["backup", str(config), "--no-progress"]) == 0
            assert not gc.isenabled(), "backup enabled a collector its caller had disabled"
            assert gc.get_freeze_count() == 0, "backup left objects frozen"
        finally:
            gc.enable()
    finally:
        logger.remove()  # the JSON sink ``backup`` installed writes to this test's stdout
