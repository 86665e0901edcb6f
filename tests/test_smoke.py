"""The demo config validates and backs up through the real CLI."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_validate_example_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service_backup.cli", "validate", "examples/local.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout
