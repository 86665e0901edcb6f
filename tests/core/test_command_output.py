"""A failing ``source_executable`` or ``cleanup_executable`` logs what it printed, at error level
with the error, so an operator sees *why* (not only ``exit status 3``); that output and the
debug lines of successful commands are scrubbed of every secret in the config."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.core.cli import run_cli, write_config

PASSWORD = "cc-password-7e3f9a1b"
CLIENT_SECRET = "notifications-secret-55d0c2"


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def config(tmp_path: Path, **extra: str) -> Path:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "dump.rdb").write_bytes(b"dump")
    data = {
        "destinations": [{"type": "local", "config": {"path": str(tmp_path / "dest")}}],
        "source_folder": str(source),
        "cron_schedule": "@daily",
        # Secrets in the config (alerts stay off without a product name).
        "alerts": {
            "config": {
                "cloud_controller": {"password": PASSWORD},
                "notifications": {"client_secret": CLIENT_SECRET},
            }
        },
        **extra,
    }
    return write_config(tmp_path / "backup.yml", data)


def test_failing_source_executable_logs_its_output_scrubbed(tmp_path: Path) -> None:
    snapshot = script(
        tmp_path / "snapshot",
        f'echo "connecting to redis with password {PASSWORD}"\n'
        'echo "ERROR: no space left on device" >&2\n'
        "exit 3\n",
    )
    result = run_cli("backup", str(config(tmp_path, source_executable=f"{snapshot} --wait")))
    assert result.returncode == 1
    failed = result.find("source_executable failed")
    assert failed, f"no error line with the command's output: {result.messages}"
    line = failed[0]
    assert line["log_level"] == "error"
    assert line["data"]["error"] == "exit status 3"
    assert line["data"]["cmd"] == f"{snapshot} --wait"
    output = line["data"]["out"]
    assert "ERROR: no space left on device" in output, output  # stderr is in it too
    assert "connecting to redis with password <redacted>" in output, output
    assert PASSWORD not in result.stdout + result.stderr
    # The run's own error line is unchanged (Go's wording).
    assert result.find("Perform backup completed with error")[0]["data"]["error"] == (
        "exit status 3"
    )


def test_failing_cleanup_executable_logs_its_output_and_the_run_succeeds(tmp_path: Path) -> None:
    cleanup = script(
        tmp_path / "cleanup",
        f'echo "rm: cannot remove dump.rdb (token {CLIENT_SECRET})"\nexit 1\n',
    )
    result = run_cli("backup", str(config(tmp_path, cleanup_executable=cleanup)))
    assert result.returncode == 0, result.stderr
    line = result.find("cleanup_executable failed")[0]
    assert line["log_level"] == "error"
    assert line["data"]["error"] == "exit status 1"
    assert line["data"]["out"].strip() == "rm: cannot remove dump.rdb (token <redacted>)"
    assert result.find("Cleanup completed with error")
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_the_error_line_keeps_the_end_of_a_long_output(tmp_path: Path) -> None:
    chatty = script(
        tmp_path / "chatty",
        'i=0; while [ $i -lt 3000 ]; do echo "progress line $i ..........."; i=$((i+1)); done\n'
        f'echo "fatal: {PASSWORD} rejected"\nexit 2\n',
    )
    result = run_cli("backup", str(config(tmp_path, source_executable=chatty)))
    output = result.find("source_executable failed")[0]["data"]["out"]
    assert len(output) <= 4096, len(output)
    assert output.rstrip().endswith("fatal: <redacted> rejected"), output[-200:]
    assert PASSWORD not in result.stdout


def test_debug_lines_of_successful_commands_are_scrubbed(tmp_path: Path) -> None:
    chatty = script(tmp_path / "ok", f'echo "using {PASSWORD} and {CLIENT_SECRET}"\n')
    result = run_cli(
        "backup", str(config(tmp_path, source_executable=chatty, cleanup_executable=chatty))
    )
    assert result.returncode == 0, result.stderr
    for what in ("source_executable", "cleanup_executable"):
        line = result.find(f"{what} debug info")[0]
        assert line["log_level"] == "debug"
        assert line["data"]["out"].strip() == "using <redacted> and <redacted>"
    assert PASSWORD not in result.stdout and CLIENT_SECRET not in result.stdout
