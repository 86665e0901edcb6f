"""End-to-end: the real ``service-backup`` CLI as a subprocess, local destinations, JSON logs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.core.cli import CliResult, cli_command, run_cli, write_config

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
TODAY = time.strftime("%Y/%m/%d")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    (folder / "redis").mkdir(parents=True)
    (folder / "redis" / "dump.rdb").write_bytes(b"R" * 1000)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "a" / "b" / "c").mkdir(parents=True)
    (folder / "a" / "b" / "c" / "deep.txt").write_text("deep")
    return folder


def config_for(tmp_path: Path, source: Path, **extra) -> Path:
    data = {
        "destinations": [
            {"type": "local", "name": "nfs", "config": {"path": str(tmp_path / "dest")}}
        ],
        "source_folder": str(source),
        "cron_schedule": "@daily",
        **extra,
    }
    return write_config(tmp_path / "backup.yml", data)


def test_successful_run_logs_and_layout(tmp_path: Path, source: Path) -> None:
    cfg = config_for(
        tmp_path, source,
        source_executable="echo preparing",
        cleanup_executable="echo cleaning",
        service_identifier_executable="echo  instance-42 ",
        deployment_name="redis-deploy",
        add_deployment_name_to_backup_path=True,
    )  # fmt: skip
    result = run_cli("backup", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = result.lines  # every stdout line is JSON
    assert {line["source"] for line in lines} == {"ServiceBackup"}
    assert all(TS_RE.match(line["timestamp"]) for line in lines)
    guids = {line["data"]["backup_guid"] for line in lines}
    assert len(guids) == 1 and UUID_RE.match(guids.pop())
    info = [line["message"] for line in lines if line["log_level"] == "info"]
    prefix = "ServiceBackup.WithIdentifier."
    assert info == [
        prefix + "Perform backup started",
        prefix + "Perform backup completed successfully",
        prefix + "Upload backup started",
        prefix + f"about to upload {source} to local remote path "
        f"{tmp_path / 'dest'}/redis-deploy/{TODAY}",
        prefix + "Upload backup completed successfully",
        prefix + "Cleanup started",
        prefix + "Cleanup completed successfully",
    ]
    assert all(line["data"]["identifier"] == "instance-42" for line in lines[1:])
    done = result.find("Upload backup completed successfully")[0]["data"]
    assert done["size_in_bytes"] == 1004
    assert done["destination_name"] == "nfs"
    assert isinstance(done["duration_in_seconds"], float)
    debug = result.find("source_executable debug info")[0]["data"]
    assert debug["out"] == "preparing\n"
    landed = tmp_path / "dest" / "redis-deploy" / TODAY
    assert sorted(p.relative_to(landed).as_posix() for p in landed.rglob("*") if p.is_file()) == [
        ".service-backup-manifest.json",
        "a/b/c/deep.txt",
        "empty.txt",
        "redis/dump.rdb",
    ]
    assert (landed / "redis" / "dump.rdb").read_bytes() == b"R" * 1000


def test_failing_source_executable_stops_the_run(tmp_path: Path, source: Path) -> None:
    marker = tmp_path / "cleanup-ran"
    cfg = config_for(
        tmp_path, source, source_executable="false", cleanup_executable=f"touch {marker}"
    )
    result = run_cli("backup", str(cfg))
    assert result.returncode == 1
    failed = result.find("Perform backup completed with error")
    assert failed and failed[0]["log_level"] == "error"
    assert failed[0]["data"]["error"] == "exit status 1"
    assert not result.find("Upload backup started")
    assert not (tmp_path / "dest").exists()
    assert not marker.exists()
    assert "Traceback" not in result.stderr


def test_missing_executable_is_named(tmp_path: Path, source: Path) -> None:
    cfg = config_for(tmp_path, source, source_executable="/no/such/snapshot --now")
    result = run_cli("backup", str(cfg))
    assert result.returncode == 1
    error = result.find("Perform backup completed with error")[0]["data"]["error"]
    assert error == "source_executable: executable not found: /no/such/snapshot"


def test_cleanup_failure_is_logged_but_run_succeeds(tmp_path: Path, source: Path) -> None:
    result = run_cli("backup", str(config_for(tmp_path, source, cleanup_executable="false")))
    assert result.returncode == 0
    assert result.find("Cleanup completed with error")[0]["data"]["error"] == "exit status 1"


def test_identifier_failure_continues_without_identifier(tmp_path: Path, source: Path) -> None:
    result = run_cli(
        "backup", str(config_for(tmp_path, source, service_identifier_executable="false"))
    )
    assert result.returncode == 0
    assert not any("WithIdentifier" in m for m in result.messages())
    assert result.find("Upload backup completed successfully")


def test_every_destination_attempted_and_failures_named(tmp_path: Path, source: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = {
        "destinations": [
            {"type": "local", "name": "broken", "config": {"path": str(blocker / "x")}},
            {"type": "local", "name": "good", "config": {"path": str(tmp_path / "good")}},
            {"type": "local", "config": {"path": str(blocker / "y")}},
        ],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    }
    result = run_cli("backup", str(write_config(tmp_path / "multi.yml", data)))
    assert result.returncode == 1
    assert (tmp_path / "good" / TODAY / "redis" / "dump.rdb").exists()
    errors = result.find("Upload backup completed with error")
    assert {e["data"].get("destination_name") for e in errors} == {"broken", None}
    assert all("a-file" in e["data"]["error"] for e in errors)
    ok = result.find("Upload backup completed successfully")
    assert [line["data"]["destination_name"] for line in ok] == ["good"]


def test_no_destinations_skips(tmp_path: Path) -> None:
    result = run_cli("backup", str(write_config(tmp_path / "empty.yml", {"destinations": []})))
    assert result.returncode == 0
    assert result.messages() == ["ServiceBackup.No destination provided - skipping backup"]


def test_missing_source_folder_fails_run(tmp_path: Path) -> None:
    result = run_cli("backup", str(config_for(tmp_path, tmp_path / "nowhere")))
    assert result.returncode == 1
    error = result.find("Upload backup completed with error")[0]["data"]["error"]
    assert "nowhere does not exist" in error


def test_awkward_file_names_land_literally(tmp_path: Path) -> None:
    source = tmp_path / "src"
    names = ["with space.txt", "ünï 日本.txt", "$(touch pwned)", "; rm -rf x", 'it\'s "q".txt']
    for name in names:
        (source / "d ir").mkdir(parents=True, exist_ok=True)
        (source / "d ir" / name).write_text(name)
    result = run_cli("backup", str(config_for(tmp_path, source)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    landed = tmp_path / "dest" / TODAY / "d ir"
    assert sorted(p.name for p in landed.iterdir()) == sorted(names)
    assert all((landed / n).read_text() == n for n in names)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv to drop caps"
)
def test_unreadable_file_is_named(tmp_path: Path, source: Path) -> None:
    """As root, run without capabilities: root ignores file modes only through CAP_DAC_*."""
    locked = source / "redis" / "locked.rdb"
    locked.write_text("no")
    locked.chmod(0)
    cfg = config_for(tmp_path, source)
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    proc = subprocess.run(
        [*prefix, *cli_command("backup", str(cfg))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    assert result.returncode == 1
    error = result.find("Upload backup completed with error")[0]["data"]["error"]
    assert error == f"cannot read source file {locked}: Permission denied"
    dest = tmp_path / "dest"
    assert not [p for p in dest.rglob("*") if p.is_file() and p.name.startswith(".service")]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("source_folder"), "source_folder: required field missing"),
        (lambda d: d.pop("cron_schedule"), "cron_schedule: required field missing"),
        (lambda d: d["destinations"][0]["config"].pop("path"), "destinations[0].config.path"),
        (lambda d: d["destinations"][0].update(type="tape"), "destinations[0].type: unknown"),
        (lambda d: d.update(sorce_folder="/x"), "sorce_folder: unknown key"),
        (lambda d: d.update(cron_schedule="* * * * * 99"), "cron_schedule: End of range (99)"),
    ],
)
def test_invalid_config_exit_2(tmp_path: Path, source: Path, mutate, field: str) -> None:
    cfg = config_for(tmp_path, source)
    data = yaml.safe_load(cfg.read_text())
    mutate(data)
    write_config(cfg, data)
    for command in ("validate", "backup"):
        result = run_cli(command, str(cfg))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert field in result.stderr
        assert result.stderr.strip().endswith("Provide these missing fields in your manifest.")
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr + result.stdout
        result.lines  # noqa: B018 - stdout stays JSON-only
        assert not (tmp_path / "dest").exists(), "nothing is uploaded with an invalid config"


def test_malformed_yaml_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    cfg.write_text("destinations:\n  - type: local\n   config: [\n")
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2
    assert "is not valid YAML at line" in result.stderr
    assert "Traceback" not in result.stderr


def test_plugins_lists_local() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0
    assert re.search(r"service_backup\s+local\s+service-backup-plugins", result.stdout)


def test_check_round_trip(tmp_path: Path, source: Path) -> None:
    result = run_cli("check", str(config_for(tmp_path, source)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok   nfs (local): write, list, read, delete ok")
    leftovers = list((tmp_path / "dest").rglob("*"))
    assert [p for p in leftovers if p.is_file()] == []


def test_check_reports_failure(tmp_path: Path, source: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = {
        "destinations": [{"type": "local", "config": {"path": str(blocker / "sub")}}],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    }
    result = run_cli("check", str(write_config(tmp_path / "c.yml", data)))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL local[0] (local): create location failed: cannot create")


def test_validate_is_quick_and_names_destinations(tmp_path: Path, source: Path) -> None:
    result = run_cli("validate", str(config_for(tmp_path, source)))
    assert result.returncode == 0
    assert "destinations: nfs (local)" in result.stdout


def test_syslog_receives_the_same_json_lines(tmp_path: Path, source: Path) -> None:
    sock_path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(10)
    try:
        result = run_cli(
            "backup", "--syslog", str(config_for(tmp_path, source)),
            env={"SERVICE_BACKUP_SYSLOG_SOCKET": str(sock_path)},
        )  # fmt: skip
        assert result.returncode == 0
        received = [server.recv(65536).decode() for _ in result.lines]
    finally:
        server.close()
    for datagram, line in zip(received, result.lines, strict=True):
        header, _, body = datagram.partition(": ")
        assert re.fullmatch(r"<1[45]>service-backup\[\d+\]", header)
        assert json.loads(body) == line


def _fake_distribution(root: Path, entry_points: str, modules: dict[str, str]) -> dict[str, str]:
    """An installed distribution on PYTHONPATH: dist-info with entry points, plus modules."""
    info = root / "service_backup_fake-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: service-backup-fake\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(entry_points)
    for name, text in modules.items():
        (root / f"{name}.py").write_text(text)
    return {**os.environ, "PYTHONPATH": str(root)}


def test_plugins_reports_broken_plugins_and_exits_1(tmp_path: Path) -> None:
    env = _fake_distribution(
        tmp_path,
        "[service_backup]\nbroken = fake_broken\nmisnamed = fake_misnamed\n",
        {
            "fake_broken": "import no_such_sdk_module\n",
            "fake_misnamed": (
                "from service_backup.destination import DestinationType\n"
                "from service_backup.hookspecs import hookimpl\n"
                "from service_backup_plugins.local.config import LocalConfig\n"
                "from service_backup_plugins.local.destination import LocalDestination\n"
                "@hookimpl\n"
                "def destination_types():\n"
                "    return [DestinationType('other', LocalConfig, LocalDestination, 'x')]\n"
            ),
        },
    )
    result = subprocess.run(
        [sys.executable, "-m", "service_backup", "plugins"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, "a broken plugin must make 'plugins' exit 1"
    assert re.search(r"BROKEN .*fake_broken.*No module named 'no_such_sdk_module'", result.stdout)
    assert re.search(
        r"BROKEN .*entry point 'misnamed' registers no destination type", result.stdout
    )
    assert re.search(r"service_backup\s+local\s+service-backup-plugins", result.stdout), (
        "healthy plugins are still listed beside broken ones"
    )
    assert "Traceback" not in result.stdout + result.stderr
