"""bosh/scripts/add-blobs, offline, with a stand-in bosh CLI (the machine has none) that keeps
config/blobs.yml and blobs/ as ``bosh add-blob`` / ``remove-blob`` do: the blobs it tracks are
exactly what each package spec's ``files`` select, stale ones from an earlier release are
removed, and a CPython of the wrong minor version is refused."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .job import RELEASE, remove_tree, world_readable_tempdir

#: ``bosh add-blob PATH BLOBS-PATH`` / ``bosh remove-blob BLOBS-PATH``, as the CLI keeps them.
STAND_IN_BOSH = r"""#!/usr/bin/env python3
import hashlib, os, shutil, sys
import yaml

index = os.path.join("config", "blobs.yml")
blobs = {}
if os.path.exists(index):
    blobs = yaml.safe_load(open(index)) or {}
command, args = sys.argv[1], sys.argv[2:]
with open(os.environ["BOSH_CALLS"], "a") as calls:
    calls.write(" ".join([command, *args[-1:]]) + "\n")
if command == "add-blob":
    source, path = args
    data = open(source, "rb").read()
    blobs[path] = {"size": len(data), "sha": "sha256:" + hashlib.sha256(data).hexdigest()}
    os.makedirs(os.path.dirname(os.path.join("blobs", path)), exist_ok=True)
    shutil.copyfile(source, os.path.join("blobs", path))
elif command == "remove-blob":
    (path,) = args
    if path not in blobs:
        sys.exit(f"Expected to find blob '{path}'")
    del blobs[path]
    if os.path.exists(os.path.join("blobs", path)):
        os.remove(os.path.join("blobs", path))
else:
    sys.exit(f"stand-in bosh: unexpected command {command}")
os.makedirs("config", exist_ok=True)
yaml.safe_dump(blobs, open(index, "w"))
"""


@pytest.fixture
def release() -> Iterator[Path]:
    """A copy of the release folder, as a clean clone has it (no blobs), plus one stale blob of
    each kind left by an earlier release."""
    folder = world_readable_tempdir("sb-release-")
    for name in ("jobs", "packages", "scripts", "config", "src"):
        shutil.copytree(RELEASE / name, folder / name)
    (folder / "config" / "blobs.yml").write_text(
        yaml.safe_dump(
            {
                "python3/Python-3.11.9.tar.xz": {"size": 1, "sha": "sha256:00"},
                "service-backup/wheels/boto3-1.0.0-py3-none-any.whl": {"size": 1, "sha": "x"},
                "service-backup_python/libffi-3.4.4.tar.gz": {"size": 1, "sha": "x"},
                "unrelated/blob.tgz": {"size": 1, "sha": "x"},
            }
        )
    )
    yield folder
    remove_tree(folder)


def tarball(path: Path, mode: str) -> Path:
    """A stand-in source tarball: the machine has none, and the script only tracks it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as archive:
        readme = path.parent / "README"
        readme.write_text(path.name)
        archive.add(readme, arcname=f"{path.name.split('.tar')[0]}/README")
    return path


def add_blobs(
    release: Path, tmp_path: Path, wheels: Path, python: str
) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    bosh = bin_dir / "bosh"
    bosh.write_text(STAND_IN_BOSH.replace("/usr/bin/env python3", sys.executable))
    bosh.chmod(0o755)
    calls = tmp_path / "bosh-calls"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BOSH_CALLS": str(calls),
        "PYTHON_TARBALL": str(tarball(tmp_path / "dl" / python, "w:xz")),
        "LIBFFI_TARBALL": str(tarball(tmp_path / "dl" / "libffi-3.4.6.tar.gz", "w:gz")),
        "WHEELS": str(wheels),
        "RELEASE_DIR": str(release),
        # Offline: any download attempt fails instead of succeeding quietly.
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "UV_OFFLINE": "1",
    }
    result = subprocess.run(
        [str(RELEASE / "scripts" / "add-blobs")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return result, calls


def package_files(release: Path) -> dict[str, list[str]]:
    return {
        spec.parent.name: yaml.safe_load(spec.read_text())["files"]
        for spec in (release / "packages").glob("*/spec")
    }


def test_blobs_are_exactly_what_the_packages_compile_from(
    release: Path, release_wheels: Path, tmp_path: Path
) -> None:
    result, calls = add_blobs(release, tmp_path, release_wheels, "Python-3.11.14.tar.xz")
    assert result.returncode == 0, result.stdout + result.stderr
    tracked = yaml.safe_load((release / "config" / "blobs.yml").read_text())
    wheels = sorted(p.name for p in release_wheels.glob("*.whl"))
    ours = {p for p in tracked if p != "unrelated/blob.tgz"}
    assert ours == {
        "service-backup_python/Python-3.11.14.tar.xz",
        "service-backup_python/libffi-3.4.6.tar.gz",
        *(f"service-backup/wheels/{w}" for w in wheels),
    }
    # Stale blobs of the release's folders are gone; other teams' blobs are left alone.
    assert "unrelated/blob.tgz" in tracked
    removed = {
        line.split(" ", 1)[1]
        for line in calls.read_text().splitlines()
        if line.startswith("remove-blob")
    }
    assert removed == {
        "python3/Python-3.11.9.tar.xz",
        "service-backup/wheels/boto3-1.0.0-py3-none-any.whl",
        "service-backup_python/libffi-3.4.4.tar.gz",
    }
    # Every package's `files` globs select its blobs: one CPython, one libffi, every wheel.
    files = package_files(release)
    for package, patterns in files.items():
        for pattern in patterns:
            matched = [p for p in tracked if fnmatch.fnmatch(p, pattern)]
            expected = len(wheels) if pattern.endswith("*.whl") else 1
            assert len(matched) == expected, f"{package}: {pattern} selects {matched}"
    # The blobs' content is what was given (a wheel round-trips byte for byte).
    first = wheels[0]
    copied = release / "blobs" / "service-backup" / "wheels" / first
    assert (
        hashlib.sha256(copied.read_bytes()).hexdigest()
        == hashlib.sha256((release_wheels / first).read_bytes()).hexdigest()
    )
    assert "apprise" in " ".join(wheels) and "service_backup_apprise" in " ".join(wheels)


def test_a_cpython_of_another_minor_version_is_refused(
    release: Path, release_wheels: Path, tmp_path: Path
) -> None:
    result, calls = add_blobs(release, tmp_path, release_wheels, "Python-3.12.7.tar.xz")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "add-blobs: PYTHON_TARBALL must be Python-3.11.<patch>.tar.xz (the wheels target CPython"
        " 3.11), not Python-3.12.7.tar.xz"
    )
    assert not calls.exists()  # nothing was changed
