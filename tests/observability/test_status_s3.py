"""``status`` against a real S3 server (moto): read through the destination plugin only."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.manifest import MANIFEST_NAME
from service_backup.plugins import load_registry
from service_backup.source import Source
from tests.core.cli import run_cli, write_config

from .helpers import manifest_bytes


def store_run(s3_config: dict[str, Any], finished: datetime.datetime) -> None:
    """A complete run written through the s3 plugin itself, as a run would leave it."""
    registry = load_registry(hook_plugins=False)
    dtype = registry.destination_type("s3")
    config = structure_destination_config(s3_config, dtype.config_class)
    prefix = finished.astimezone().strftime("%Y/%m/%d")
    files = {"dump.rdb": b"redis data " * 100}
    with dtype.factory(config, DestinationContext("offsite")) as destination:
        destination.ensure_location()
        destination.write(f"{prefix}/dump.rdb", Source.from_bytes(files["dump.rdb"]))
        manifest = manifest_bytes(finished, files)
        destination.write(f"{prefix}/{MANIFEST_NAME}", Source.from_bytes(manifest))


def config_file(tmp_path: Path, s3_config: dict[str, Any]) -> Path:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    return write_config(tmp_path / "backup.yml", {
        "destinations": [{"type": "s3", "name": "offsite", "config": s3_config}],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    })  # fmt: skip


def test_status_reads_the_bucket(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    missing = run_cli("status", str(config_file(tmp_path, s3_config)), "--json", timeout=60)
    assert missing.returncode == 1, f"empty (not even created) bucket: {missing}"
    assert json.loads(missing.stdout)[0]["ok"] is False

    finished = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=3)
    store_run(s3_config, finished)
    result = run_cli("status", str(config_file(tmp_path, s3_config)), "--json", timeout=60)
    assert result.returncode == 0, f"a complete run 3 minutes old: {result}"
    [row] = json.loads(result.stdout)
    assert row["destination"] == "offsite" and row["ok"] is True, row
    assert row["last_complete_date"] == finished.astimezone().date().isoformat(), row
    assert 180 <= row["age_seconds"] < 300, row


def test_unlistable_destination_says_so(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    secret = "wrong-secret-key-0123456789"
    s3_config["secret_access_key"] = secret
    result = run_cli("status", str(config_file(tmp_path, s3_config)), timeout=60)
    assert result.returncode == 1, f"a refused listing fails the check: {result}"
    row = result.stdout.splitlines()[1]
    assert row.startswith("offsite ") and "FAIL: cannot be listed:" in row, result.stdout
    assert secret not in result.stdout + result.stderr, "the secret leaked into the output"
