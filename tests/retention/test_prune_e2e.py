"""Retention end to end: runs crafted in real stores, then a backup or ``prune`` applies it."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from loguru import logger

from service_backup import logs
from service_backup.catalog import run_folders
from service_backup.config import BackupConfig, parse_config
from service_backup.destination import Destination, DestinationContext
from service_backup.errors import DestinationError
from service_backup.hookspecs import hookimpl
from service_backup.manifest import MANIFEST_NAME, Manifest
from service_backup.plugins import PluginRegistry, load_registry
from service_backup.processes import ProcessManager
from service_backup.results import StoredFile
from service_backup.run import run_backup
from service_backup.source import Source

TODAY = datetime.date(2026, 12, 1)
PAST = [TODAY - datetime.timedelta(days=n) for n in range(1, 7)]  # six daily runs


def craft_run(destination: Destination, date: datetime.date, complete: bool = True) -> None:
    """A run as the product writes it: files, then (when complete) a valid manifest."""
    prefix = date.strftime("%Y/%m/%d")
    stored = []
    for name, data in ((f"dump-{date}.rdb", date.isoformat().encode() * 10), ("a/b.txt", b"x")):
        source = Source.from_bytes(data)
        destination.write(f"{prefix}/{name}", source)
        stored.append(StoredFile(name, len(data), source.sha256))
    if complete:
        stamp = f"{date.isoformat()}T03:00:00Z"
        manifest = Manifest("guid", None, None, "host", stamp, stamp, "/src", "0", tuple(stored))
        destination.write(f"{prefix}/{MANIFEST_NAME}", Source.from_bytes(manifest.to_json()))


def make_config(
    entry: dict[str, Any], source: Path, retention: dict[str, int], registry: PluginRegistry
) -> BackupConfig:
    return parse_config(
        {
            "destinations": [{**entry, "retention": retention}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
        registry,
    )


def open_destination(config: BackupConfig, registry: PluginRegistry) -> Destination:
    spec = config.destinations[0]
    return registry.destination_type(spec.type).factory(
        spec.config, DestinationContext(spec.display_name)
    )


@pytest.fixture
def captured() -> Any:
    stream = io.StringIO()
    logs.configure(stream=stream)
    yield stream
    logger.remove()


def messages(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_backup_applies_retention_on_every_destination_type(
    destination_entry: dict[str, Any], tmp_path: Path, captured: io.StringIO
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"today's dump")
    registry = load_registry(hook_plugins=False)
    config = make_config(destination_entry, source, {"keep_last": 3}, registry)
    with open_destination(config, registry) as dest:
        dest.ensure_location()
        for date in PAST:
            craft_run(dest, date)
        old_incomplete = TODAY - datetime.timedelta(days=30)
        craft_run(dest, old_incomplete, complete=False)  # a failed run or the Go release
        dest.write("notes/readme.txt", Source.from_bytes(b"not a run"))

    when = datetime.datetime.combine(TODAY, datetime.time(3, 0))
    result = run_backup(config, registry, ProcessManager(), now=when)
    assert result.ok, result.error

    with open_destination(config, registry) as dest:
        folders = run_folders(dest, "")
        complete = [f.date for f in folders if f.complete]
        candidates = sorted({*PAST, *([TODAY] if TODAY in complete else [])}, reverse=True)
        assert complete == candidates[:3], f"keep_last 3 should leave {candidates[:3]}: {complete}"
        dates = {f.date for f in folders}
        assert TODAY in dates, "the run just written was deleted"
        assert old_incomplete in dates, "an incomplete folder was deleted"
        assert dest.stat("notes/readme.txt").size == 9, "an object outside dated folders changed"
        for gone in candidates[3:]:
            assert gone not in dates, f"run {gone} should be deleted entirely, files included"

    out = messages(captured)
    deleted_lines = [m for m in out if m["message"].endswith("Retention deleted run")]
    assert sorted(m["data"]["date"] for m in deleted_lines) == sorted(
        d.isoformat() for d in candidates[3:]
    ), "one log line per deleted run"
    assert all(m["data"]["files"] == 2 for m in deleted_lines)
    summary = [m for m in out if m["message"].endswith("Retention completed successfully")]
    assert summary and summary[0]["data"]["deleted"] == len(candidates) - 3


def local_entry(tmp_path: Path) -> dict[str, Any]:
    return {"type": "local", "name": "nfs", "config": {"path": str(tmp_path / "store")}}


def test_failed_run_prunes_nothing(tmp_path: Path, captured: io.StringIO) -> None:
    registry = load_registry(hook_plugins=False)
    config = make_config(local_entry(tmp_path), tmp_path / "missing", {"keep_last": 1}, registry)
    with open_destination(config, registry) as dest:
        dest.ensure_location()
        for date in PAST:
            craft_run(dest, date)
    result = run_backup(config, registry, ProcessManager())
    assert not result.ok, "a run without its source folder must fail"
    with open_destination(config, registry) as dest:
        assert len([f for f in run_folders(dest, "") if f.complete]) == len(PAST), (
            "a failed run deleted runs"
        )
    assert not [m for m in messages(captured) if "Retention" in m["message"]]


def write_config(tmp_path: Path, retention: dict[str, int]) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    config = {
        "destinations": [{**local_entry(tmp_path), "retention": retention}],
        "source_folder": str(tmp_path / "src"),
        "cron_schedule": "@daily",
    }
    path = tmp_path / "backup.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service_backup", *args], capture_output=True, text=True, timeout=60
    )


def test_prune_dry_run_deletes_nothing_and_names_each_run(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"keep_last": 2, "keep_weekly": 1})
    registry = load_registry(hook_plugins=False)
    config = make_config(local_entry(tmp_path), tmp_path / "src", {}, registry)
    with open_destination(config, registry) as dest:
        dest.ensure_location()
        for date in PAST:
            craft_run(dest, date)
    before = sorted(p for p in (tmp_path / "store").rglob("*"))

    done = cli("prune", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert sorted(p for p in (tmp_path / "store").rglob("*")) == before, "--dry-run deleted files"
    lines = done.stdout.splitlines()
    for date in PAST[:2]:
        assert any(
            date.isoformat() in line and "keep" in line and "last snapshot" in line
            for line in lines
        ), f"{date} should be kept by keep_last: {done.stdout}"
    for date in PAST[3:]:
        assert any(date.isoformat() in line and "delete" in line for line in lines), done.stdout

    done = cli("prune", str(path))
    assert done.returncode == 0, done.stderr
    with open_destination(config, registry) as dest:
        remaining = [f.date for f in run_folders(dest, "") if f.complete]
    expected = [d.date for d in _decisions({"keep_last": 2, "keep_weekly": 1}) if d.keep]
    assert remaining == expected, f"prune left {remaining}, expected {expected}"


def _decisions(retention: dict[str, int]) -> list[Any]:
    from service_backup.retention import RetentionPolicy, decide

    return decide(RetentionPolicy(**retention), PAST)


def test_prune_unknown_destination_and_bad_retention_exit_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"keep_last": 2})
    done = cli("prune", str(path), "--destination", "nope")
    assert done.returncode == 2 and "no destination named 'nope'" in done.stderr, done.stderr
    bad = write_config(tmp_path, {"keep_lats": 2, "keep_daily": -1})  # type: ignore[dict-item]
    done = cli("prune", str(bad))
    assert done.returncode == 2, done.stderr
    assert "destinations[0].retention.keep_lats: unknown key" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


class FailingDelete:
    """A local destination whose deletes fail for one run: a read-only folder, in effect."""

    @hookimpl
    def destination_types(self) -> list[Any]:
        from service_backup.destination import DestinationType
        from service_backup_plugins.local.config import LocalConfig
        from service_backup_plugins.local.destination import LocalDestination

        class ReadOnly(LocalDestination):
            def delete(self, key: str) -> None:
                if key.startswith(PAST[-1].strftime("%Y/%m/%d")):
                    raise DestinationError(f"cannot delete {key}: Read-only file system")
                super().delete(key)

        return [DestinationType("readonly", LocalConfig, ReadOnly, label="local")]


def test_a_failed_deletion_is_logged_and_the_run_succeeds(
    tmp_path: Path, captured: io.StringIO
) -> None:
    registry = load_registry(hook_plugins=False)
    registry.register(FailingDelete(), name="readonly")
    entry = {"type": "readonly", "name": "ro", "config": {"path": str(tmp_path / "store")}}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    config = make_config(entry, tmp_path / "src", {"keep_last": 1}, registry)
    with open_destination(config, registry) as dest:
        dest.ensure_location()
        for date in PAST:
            craft_run(dest, date)
    result = run_backup(config, registry, ProcessManager())
    assert result.ok, "a retention failure must not fail the run"
    errors = [
        m for m in messages(captured) if m["message"].endswith("Retention completed with error")
    ]
    assert errors, "the failed deletion was not logged as 'Retention completed with error'"
    assert PAST[-1].isoformat() in errors[0]["data"]["error"]
    assert "Read-only file system" in errors[0]["data"]["error"]
