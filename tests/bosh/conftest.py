"""Fixtures for the BOSH job tests: Ruby for rendering, and the service-backup package built
exactly as the release builds it (release-wheels, then the package's packaging script, offline)
on a CPython 3.11 that the unprivileged backup user can run."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import unavailable

from .job import RELEASE, REPO, remove_tree, world_readable_tempdir

BACKUP_USER = "nobody"
#: Set by bosh/scripts/compile-check to the compiled service-backup_python package.
COMPILED_PYTHON_ENV = "SERVICE_BACKUP_COMPILED_PYTHON"


@pytest.fixture(scope="session")
def ruby() -> str:
    path = shutil.which("ruby")
    if path is None:
        unavailable("ruby is not installed (.ci/install-test-deps installs it)")
    return str(path)


@pytest.fixture(scope="session")
def as_root() -> None:
    if os.geteuid() != 0:
        unavailable("the job's scripts switch to backup_user with setpriv: run the tests as root")
    try:
        pwd.getpwnam(BACKUP_USER)
    except KeyError:
        unavailable(f"user {BACKUP_USER} does not exist")


def _uv() -> str:
    for candidate in (shutil.which("uv"), REPO / ".tools" / "bin" / "uv"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    unavailable("uv is needed to build the release's wheels")
    raise AssertionError  # unreachable


def compiled_python() -> Path | None:
    """The install folder of a service-backup_python package compiled by
    bosh/scripts/compile-check (``SERVICE_BACKUP_COMPILED_PYTHON``), or None: then the tests
    stand in a CPython 3.11 of this machine for it."""
    value = os.environ.get(COMPILED_PYTHON_ENV)
    if not value:
        return None
    path = Path(value)
    if not (path / "bin" / "python3").exists():
        pytest.fail(f"{COMPILED_PYTHON_ENV}={value} has no bin/python3", pytrace=False)
    return path


def _runtime_python() -> str:
    """A CPython 3.11 (the version the release's wheels target) that other users can run."""
    candidates = ["/usr/bin/python3.11", "/usr/bin/python3", shutil.which("python3.11"),
                  getattr(sys, "_base_executable", None)]  # fmt: skip
    probe = "import sys, venv; assert sys.version_info[:2] == (3, 11)"
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        command = [candidate, "-c", probe]
        if os.geteuid() == 0:
            command = ["setpriv", f"--reuid={BACKUP_USER}", "--regid=nogroup", "--clear-groups",
                       *command]  # fmt: skip
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            return candidate
    unavailable(f"no CPython 3.11 that {BACKUP_USER} can run (tried {candidates})")
    raise AssertionError  # unreachable


TOY_PLUGIN_PYPROJECT = """
[project]
name = "service-backup-toy"
version = "1.0.0"
description = "A third-party destination plugin, as a service author would ship one."
requires-python = ">=3.11"
dependencies = ["service-backup", "service-backup-plugins", "attrs"]

[project.entry-points.service_backup]
toy = "service_backup_toy"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/service_backup_toy"]
"""

TOY_PLUGIN_MODULE = '''"""The ``toy`` destination: the local destination under another name.

Shipped outside the workspace, to show a third-party plugin travelling through the release.
"""

import attrs
from service_backup.config import required
from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl
from service_backup_plugins.local.destination import LocalDestination


@attrs.frozen
class ToyConfig:
    path: str = required()


@hookimpl
def destination_types():
    return [DestinationType("toy", ToyConfig, LocalDestination, label="Toy")]
'''


def _toy_plugin_wheel(folder: Path, uv: str) -> Path:
    project = folder / "toy-plugin"
    (project / "src" / "service_backup_toy").mkdir(parents=True)
    (project / "pyproject.toml").write_text(TOY_PLUGIN_PYPROJECT)
    (project / "src" / "service_backup_toy" / "__init__.py").write_text(TOY_PLUGIN_MODULE)
    result = subprocess.run(
        [uv, "build", "--wheel", "--quiet", "-o", str(folder / "dist"), str(project)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        unavailable(f"building the toy plugin wheel failed: {result.stderr.strip()[-2000:]}")
    return next((folder / "dist").glob("*.whl"))


@pytest.fixture(scope="session")
def release_wheels() -> Iterator[Path]:
    """bosh/scripts/release-wheels into a temporary folder (what `make release-wheels` does),
    with a third-party plugin added the way docs/bosh.md tells service authors to."""
    base = world_readable_tempdir("sb-wheels-")
    out = base / "wheels"
    uv = _uv()
    extra = base / "extra-requirements.txt"
    extra.write_text(f"{_toy_plugin_wheel(base, uv)}\n")
    result = subprocess.run(
        [str(RELEASE / "scripts" / "release-wheels"), str(out)],
        env={**os.environ, "UV": uv, "EXTRA_REQUIREMENTS": str(extra)},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        unavailable(f"release-wheels failed: {result.stderr.strip()[-2000:]}")
    yield out
    remove_tree(base)


@pytest.fixture(scope="session")
def packaged(release_wheels: Path) -> Iterator[Path]:
    """The service-backup package compiled by its packaging script, as on a compilation VM:
    BOSH_COMPILE_TARGET holds the blobs, BOSH_PACKAGES_DIR the service-backup_python dependency."""
    base = world_readable_tempdir("sb-package-")
    compile_target = base / "compile"
    (compile_target / "service-backup").mkdir(parents=True)
    shutil.copytree(release_wheels, compile_target / "service-backup" / "wheels")
    python_package = base / "packages" / "service-backup_python"
    compiled = compiled_python()
    if compiled is not None:
        # bosh/scripts/compile-check: the service-backup_python package itself, compiled.
        python_package.parent.mkdir(parents=True)
        python_package.symlink_to(compiled, target_is_directory=True)
    else:
        (python_package / "bin").mkdir(parents=True)
        (python_package / "bin" / "python3").symlink_to(_runtime_python())
    install_target = base / "packages" / "service-backup"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(
        BOSH_COMPILE_TARGET=str(compile_target),
        BOSH_INSTALL_TARGET=str(install_target),
        BOSH_PACKAGES_DIR=str(base / "packages"),
        BOSH_PACKAGE_NAME="service-backup",
        # No network while packaging: a download attempt would fail, not silently succeed.
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
    )
    result = subprocess.run(
        ["bash", str(RELEASE / "packages" / "service-backup" / "packaging")],
        cwd=compile_target,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield install_target
    remove_tree(base)
