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


def test_full_rendered_config_with_every_destination_type_validates() -> None:
    """The BOSH job's rendered file, placeholders and all, is accepted as it is."""
    out = subprocess.run(
        [sys.executable, "-m", "service_backup.cli", "validate", "examples/backup.yml"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "primary-s3 (s3), dr-azure (azure), gcs[2] (gcs), onprem (scp)" in out.stdout
    assert "example-secret" not in out.stdout + out.stderr
