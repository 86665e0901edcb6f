"""Shared by the fault suite: real CLI processes, their JSON log lines, small fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.core.cli import CliResult, cli_command, run_cli, write_config

__all__ = [
    "CliResult",
    "LogStream",
    "cli_command",
    "install_plugin",
    "local_config",
    "run_cli",
    "script",
    "timed_cli",
    "write_config",
]


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def local_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A valid config: one local destination, a source folder with one file."""
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "data.txt").write_text("data")
    destination = {"type": "local", "name": "disk", "config": {"path": str(tmp_path / "dest")}}
    return {
        "destinations": [destination],
        "source_folder": str(source),
        "cron_schedule": "@every 1s",
        **extra,
    }


def timed_cli(*args: str, **kw: Any) -> tuple[CliResult, float]:
    started = time.monotonic()
    result = run_cli(*args, **kw)
    return result, time.monotonic() - started


def lock_env(tmp_path: Path) -> dict[str, str]:
    """A private lock folder for this test (so tests never share one)."""
    folder = tmp_path / "locks"
    return {"SERVICE_BACKUP_LOCK_DIR": str(folder)}


class LogStream:
    """A running CLI process whose stdout JSON lines are read as they come (events, not sleeps)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, user: int | None = None):
        prefix: list[str] = []
        if user is not None:  # an unprivileged daemon (root can write anywhere), as BOSH runs it
            prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        self.proc = subprocess.Popen(
            [*prefix, *cli_command(*args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, suffix: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = json.loads(raw)
            self.seen.append(line)
            if line["message"].endswith(suffix):
                return line
        raise AssertionError(f"stdout ended before {suffix!r}; saw {self.seen}")

    def rest(self) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        self.seen.extend(json.loads(raw) for raw in self.proc.stdout)
        return self.seen

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def install_plugin(site: Path, name: str, source: str, type_name: str) -> dict[str, str]:
    """A third-party destination plugin as a distribution on PYTHONPATH (dist-info, entry point)."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[service_backup]\n{type_name} = {name}\n")
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    }
