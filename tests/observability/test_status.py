"""``service-backup status``: exit codes, the table and the fixed ``--json`` shape."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from tests.core.cli import run_cli, write_config

from .helpers import write_local_run

JSON_KEYS = ["destination", "last_complete_date", "finished_at", "age_seconds", "ok"]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "source"
    source.mkdir()
    return {
        "destinations": [
            {"type": "local", "name": "primary", "config": {"path": str(tmp_path / "primary")}}
        ],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    }


def status(tmp_path: Path, config: dict[str, Any], *args: str) -> Any:
    return run_cli("status", str(write_config(tmp_path / "backup.yml", config)), *args, timeout=60)


def test_no_run_fails_with_nulls(tmp_path: Path, config: dict[str, Any]) -> None:
    result = status(tmp_path, config, "--json")
    assert result.returncode == 1, f"no complete run must fail the check: {result}"
    doc = json.loads(result.stdout)
    assert doc == [{"destination": "primary", "last_complete_date": None, "finished_at": None,
                    "age_seconds": None, "ok": False}], f"unexpected --json: {doc}"  # fmt: skip
    assert "primary: no complete run" in result.stderr, f"stderr should say why: {result.stderr!r}"


def test_fresh_run_passes(tmp_path: Path, config: dict[str, Any]) -> None:
    finished = now() - datetime.timedelta(minutes=10)
    write_local_run(tmp_path / "primary", finished.date(), finished)
    result = status(tmp_path, config, "--json")
    assert result.returncode == 0, f"a 10 minute old run is fresh: {result}"
    [row] = json.loads(result.stdout)
    assert list(row) == JSON_KEYS, f"--json keys are a contract: {list(row)}"
    assert row["destination"] == "primary"
    assert row["last_complete_date"] == finished.date().isoformat()
    assert row["finished_at"].startswith(finished.strftime("%Y-%m-%dT%H:%M:%S")), row
    assert 600 <= row["age_seconds"] < 700, f"age should be about 600 s: {row}"
    assert row["ok"] is True
    assert result.stderr == "", f"nothing wrong, nothing on stderr: {result.stderr!r}"


def test_max_age_judges_the_same_run(tmp_path: Path, config: dict[str, Any]) -> None:
    finished = now() - datetime.timedelta(days=3)
    write_local_run(tmp_path / "primary", finished.date(), finished)
    default = status(tmp_path, config)
    assert default.returncode == 1, f"3 days is older than the default 26h: {default}"
    assert "FAIL: older than 1d 2h" in default.stdout, default.stdout
    assert status(tmp_path, config, "--max-age", "4d").returncode == 0, "--max-age 4d admits it"
    assert status(tmp_path, config, "--max-age", "71h").returncode == 1
    assert status(tmp_path, config, "--max-age", "4500m").returncode == 0


def test_max_age_one_second_after_a_run(tmp_path: Path, config: dict[str, Any]) -> None:
    finished = now() - datetime.timedelta(seconds=5)
    write_local_run(tmp_path / "primary", finished.date(), finished)
    assert status(tmp_path, config, "--max-age", "30s").returncode == 0
    result = status(tmp_path, config, "--max-age", "1s", "--json")
    assert result.returncode == 1, f"a 5 s old run is older than 1s: {result}"
    [row] = json.loads(result.stdout)
    assert row["ok"] is False and row["age_seconds"] >= 5, row
    assert row["last_complete_date"] == finished.date().isoformat(), "the run is still reported"


def test_newest_complete_run_wins_over_newer_incomplete(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    base = tmp_path / "primary"
    today = now()
    old = today - datetime.timedelta(days=1)
    write_local_run(base, old.date(), old)
    write_local_run(base, today.date(), None)  # today's run failed: no manifest
    write_local_run(
        base, (old - datetime.timedelta(days=1)).date(), old - datetime.timedelta(days=1)
    )
    result = status(tmp_path, config, "--json")
    [row] = json.loads(result.stdout)
    assert row["last_complete_date"] == old.date().isoformat(), f"wrong run picked: {row}"
    assert result.returncode == 0, result


def test_deployment_folder_is_where_runs_are(tmp_path: Path, config: dict[str, Any]) -> None:
    config.update(deployment_name="redis-7", add_deployment_name_to_backup_path=True)
    finished = now() - datetime.timedelta(hours=1)
    write_local_run(tmp_path / "primary", finished.date(), finished, root="other-deployment")
    assert status(tmp_path, config).returncode == 1, "another deployment's run does not count"
    write_local_run(tmp_path / "primary", finished.date(), finished, root="redis-7")
    assert status(tmp_path, config).returncode == 0


def test_one_bad_destination_fails_the_check_and_table_is_aligned(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    config["destinations"].append({"type": "local", "config": {"path": str(tmp_path / "second")}})
    finished = now() - datetime.timedelta(hours=2)
    write_local_run(tmp_path / "primary", finished.date(), finished)
    result = status(tmp_path, config)
    assert result.returncode == 1, f"local[1] has no run: {result}"
    header, first, second = result.stdout.splitlines()
    for column in ("LAST COMPLETE", "FINISHED AT", "AGE", "STATUS"):
        at = header.index(column)
        assert first[at - 1] == " " and first[at] != " ", f"{column} not aligned:\n{result.stdout}"
    assert first.startswith("primary ") and first.endswith("  ok"), first
    assert second.startswith("local[1] ") and "FAIL: no complete run" in second, second
    doc = json.loads(status(tmp_path, config, "--json").stdout)
    assert [(r["destination"], r["ok"]) for r in doc] == [("primary", True), ("local[1]", False)]


@pytest.mark.parametrize("bad", ["5x", "0s", "10", "", "1.5h", "-3d"])
def test_bad_duration_exits_2_with_one_line(
    tmp_path: Path, config: dict[str, Any], bad: str
) -> None:
    result = status(tmp_path, config, f"--max-age={bad}")
    assert result.returncode == 2, f"--max-age {bad!r} must be refused: {result}"
    assert result.stdout == "", "nothing on stdout"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--max-age" in lines[0] and "30s, 90m, 26h, 2d" in lines[0], lines


def test_invalid_config_exits_2(tmp_path: Path, config: dict[str, Any]) -> None:
    config["metrics"] = {"listen": "9756"}
    result = status(tmp_path, config)
    assert result.returncode == 2
    assert "metrics.listen" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_no_destinations_is_nothing_to_check(tmp_path: Path) -> None:
    result = status(tmp_path, {"destinations": []}, "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
