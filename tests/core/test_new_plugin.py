"""``service-backup new-plugin``: the author's path from nothing to a passing suite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service_backup", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip


def test_generated_plugin_installs_and_passes_the_suite(tmp_path: Path) -> None:
    started = time.monotonic()
    done = cli("new-plugin", "tape_robot", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    package = tmp_path / "service-backup-tape-robot"
    assert (package / "src/service_backup_tape_robot/py.typed").exists()

    uv = str(UV) if UV.exists() else "uv"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
    install = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin/python"),
         "-e", str(REPO / "core"), "-e", str(REPO / "plugins"), "-e", f"{package}[test]"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, f"the generated package does not install: {install.stderr}"
    suite = subprocess.run(
        [str(venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(package / "tests")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert suite.returncode == 0, f"the generated plugin fails the suite:\n{suite.stdout[-3000:]}"
    assert " passed" in suite.stdout and "failed" not in suite.stdout
    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "service_backup", "plugins"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and "tape_robot" in listed.stdout, listed.stdout
    print(f"new-plugin: generation to a passing suite in {time.monotonic() - started:.1f}s")

    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(package)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert lint.returncode == 0, f"generated code is not ruff-clean: {lint.stdout}"
    types = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(package / "src")],
        capture_output=True, text=True, env={**env, "MYPYPATH": str(package / "src")},
    )  # fmt: skip
    assert types.returncode == 0, f"generated code is not mypy --strict clean: {types.stdout}"


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path: Path) -> None:
    done = cli("new-plugin", "Bad-Name", "--dir", str(tmp_path))
    assert done.returncode == 2 and "plugin name 'Bad-Name'" in done.stderr, done.stderr
    assert cli("new-plugin", "ok", "--dir", str(tmp_path)).returncode == 0
    again = cli("new-plugin", "ok", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
    assert "Traceback" not in done.stderr + again.stderr
