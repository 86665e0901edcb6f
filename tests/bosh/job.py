"""Helpers for the BOSH job tests: render the job with the Ruby harness, lay out a fake
``/var/vcap`` root, run the rendered scripts, wait for files and processes with bounded polls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "bosh"
JOB_SRC = RELEASE / "jobs" / "service-backup"
RENDER_RB = Path(__file__).with_name("render.rb")
DEPLOYMENT = "redis-on-demand-6f1c2a"


def render_job(manifest: dict, out_dir: Path) -> Path:
    """Render every template of the job into ``out_dir`` as BOSH would (bin/, config/, monit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_file = out_dir.parent / f"{out_dir.name}-manifest.json"
    manifest_file.write_text(json.dumps({"deployment": DEPLOYMENT, **manifest}))
    result = subprocess.run(
        ["ruby", str(RENDER_RB), str(JOB_SRC), str(manifest_file), str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return out_dir


class RenderError(Exception):
    """The template could not be rendered (e.g. a property with no value and no default)."""


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    """``service-backup validate`` from the workspace, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "service_backup.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def world_readable_tempdir(prefix: str) -> Path:
    """A temp folder other users can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def fake_root(base: Path, package_dir: Path, manifest: dict) -> Path:
    """``base`` laid out like /var/vcap: jobs/service-backup rendered from ``manifest`` and
    packages/service-backup pointing at ``package_dir``."""
    render_job(manifest, base / "jobs" / "service-backup")
    packages = base / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    (packages / "service-backup").symlink_to(package_dir)
    return base


def job_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_BACKUP")}
    env["SERVICE_BACKUP_ROOT"] = str(root)
    return env


def run_script(
    root: Path, name: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(root / "jobs" / "service-backup" / "bin" / name), *args],
        env=job_env(root),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after
    ``timeout`` seconds. Used only where there is no event to wait on (a file another user's
    process writes, a process that is not our child)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def process_cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def json_lines(text: str) -> list[dict]:
    """Every stdout line must be a JSON object (the daemon's log contract)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
