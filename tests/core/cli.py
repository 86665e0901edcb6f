"""Running the real CLI as a subprocess and reading its JSON log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import yaml


@attrs.frozen
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON: fails the test if stdout holds anything else."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def messages(self) -> list[str]:
        return [line["message"] for line in self.lines]

    def find(self, text: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["message"].endswith(text)]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service_backup.cli", *args]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, **kw: Any) -> CliResult:
    env = {**os.environ, **kw.pop("env", {})}
    proc = subprocess.run(
        cli_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kw
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def single_destination_config(
    path: Path, source: Path, dtype: str, name: str, config: dict[str, Any]
) -> Path:
    """A daily backup of ``source`` to one destination, written to ``path``."""
    return write_config(
        path,
        {
            "destinations": [{"type": dtype, "name": name, "config": config}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
    )
