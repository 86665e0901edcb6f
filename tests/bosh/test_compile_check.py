"""bosh/scripts/compile-check's argument and tarball checks, offline, with ``--dry-run`` (the real
compile is too slow for the suite): Debian's orig tarballs and python.org's names are staged
under the names the package spec selects, and wrong names, versions or top folders are refused
with exit 2 and a one-line reason naming the tarball."""

from __future__ import annotations

import fnmatch
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from .job import RELEASE

SCRIPT = RELEASE / "scripts" / "compile-check"


def tarball(path: Path, top: str, mode: str = "w:gz") -> Path:
    """A tiny source tarball whose single top folder is ``top``."""
    with tarfile.open(path, mode) as tar:
        data = b"#!/bin/sh\n"
        info = tarfile.TarInfo(f"{top}/configure")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def compile_check(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def spec_files() -> list[str]:
    spec = yaml.safe_load((RELEASE / "packages/service-backup_python/spec").read_text())
    return list(spec["files"])


@pytest.mark.parametrize(
    ("python_name", "python_top", "mode"),
    [
        ("python3.11_3.11.2.orig.tar.gz", "Python-3.11.2", "w:gz"),  # Debian's
        ("Python-3.11.14.tar.xz", "Python-3.11.14", "w:xz"),  # python.org's
    ],
)
def test_dry_run_stages_what_the_package_spec_selects(
    tmp_path: Path, python_name: str, python_top: str, mode: str
) -> None:
    python = tarball(tmp_path / python_name, python_top, mode)
    libffi = tarball(tmp_path / "libffi_3.4.4.orig.tar.gz", "libffi-3.4.4")
    result = compile_check("--dry-run", "--host-headers", "--python-tarball", python,
                           "--libffi-tarball", libffi)  # fmt: skip
    assert result.returncode == 0, result.stderr
    staged = [
        line.split("would stage: ")[1].split(" ")[0]
        for line in result.stdout.splitlines()
        if "would stage: " in line
    ]
    assert staged == [
        f"service-backup_python/{python_top}.tar.xz",
        "service-backup_python/libffi-3.4.4.tar.gz",
    ], result.stdout
    for blob in staged:
        assert any(fnmatch.fnmatch(blob, p) for p in spec_files()), f"{blob} not in the spec"
    assert "packaging" in result.stdout and "test_compiled_python.py" in result.stdout
    assert not list(tmp_path.glob("*/")), "a dry run must not create folders"


def test_dry_run_hides_the_stemcell_s_missing_dev_packages_by_default(tmp_path: Path) -> None:
    python = tarball(tmp_path / "Python-3.11.2.tar.xz", "Python-3.11.2", "w:xz")
    libffi = tarball(tmp_path / "libffi-3.4.4.tar.gz", "libffi-3.4.4")
    result = compile_check("--dry-run", "--python-tarball", python, "--libffi-tarball", libffi)
    if result.returncode == 2 and "needs root" in result.stderr:
        assert "--host-headers" in result.stderr  # says how to go on without root
        return
    assert result.returncode == 0, result.stderr
    hidden = result.stdout.split("would hide while compiling: ")[1].splitlines()[0].split()
    for package in ("libffi-dev", "liblzma-dev", "libsqlite3-dev", "libbz2-dev", "uuid-dev"):
        assert package in hidden, f"{package} is not hidden: {hidden}"
    for package in ("libssl-dev", "zlib1g-dev", "libc6-dev"):
        assert package not in hidden, f"{package} is on the stemcell but hidden"


@pytest.mark.parametrize(
    ("python_name", "python_top", "libffi_name", "libffi_top", "reason"),
    [
        ("Python-3.12.1.tar.xz", "Python-3.12.1", "libffi-3.4.4.tar.gz", "libffi-3.4.4",
         "the wheels target CPython 3.11"),
        ("python3.11_3.11.2.orig.tar.gz", "cpython-main", "libffi-3.4.4.tar.gz", "libffi-3.4.4",
         "must hold one top folder Python-3.11.2/"),
        ("Python-3.11.2.tar.xz", "Python-3.11.2", "libffi_3.4.4-1.debian.tar.xz", "debian",
         "libffi_3.4.4-1.debian.tar.xz"),
        ("Python-3.11.2.tar.xz", "Python-3.11.2", "libffi-3.4.4.tar.gz", "libffi-3.4.5",
         "must hold one top folder libffi-3.4.4/"),
    ],
)  # fmt: skip
def test_wrong_tarballs_are_refused_naming_them(
    tmp_path: Path,
    python_name: str,
    python_top: str,
    libffi_name: str,
    libffi_top: str,
    reason: str,
) -> None:
    python = tarball(tmp_path / python_name, python_top, "w:xz" if "xz" in python_name else "w:gz")
    libffi = tarball(tmp_path / libffi_name, libffi_top, "w:xz" if "xz" in libffi_name else "w:gz")
    result = compile_check("--dry-run", "--host-headers", "--python-tarball", python,
                           "--libffi-tarball", libffi)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert reason in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "--python-tarball (or --fetch) is required"),
        (["--python-tarball", "/nonexistent/Python-3.11.2.tar.xz", "--libffi-tarball", "x"],
         "Python-3.11.2.tar.xz does not exist"),
        (["--fetch", "--python-tarball", "Python-3.11.2.tar.xz"], "--fetch downloads both"),
        (["--work"], "--work needs a value"),
        (["--frobnicate"], "unknown argument --frobnicate"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_a_reason(args: list[str], reason: str) -> None:
    result = compile_check("--dry-run", "--host-headers", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert reason in result.stderr, result.stderr


def test_fetch_dry_run_says_what_it_would_download() -> None:
    result = compile_check("--dry-run", "--host-headers", "--fetch", "--compile-only")
    assert result.returncode == 0, result.stderr
    assert "apt-get source --download-only libffi python3.11" in result.stdout
    assert "test_compiled_python.py" not in result.stdout  # --compile-only stops after compiling


def test_help_lists_every_option() -> None:
    result = compile_check("--help")
    assert result.returncode == 0
    for option in ("--python-tarball", "--libffi-tarball", "--fetch", "--work", "--host-headers",
                   "--compile-only", "--dry-run"):  # fmt: skip
        assert option in result.stdout, f"{option} missing from --help"


PACKAGING = RELEASE / "packages" / "service-backup_python" / "packaging"


def run_packaging(compile_target: Path, install_target: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "BOSH_COMPILE_TARGET": str(compile_target),
           "BOSH_INSTALL_TARGET": str(install_target)}  # fmt: skip
    return subprocess.run(
        ["bash", str(PACKAGING)], cwd=compile_target, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("blobs", "reason"),
    [
        # A libffi tarball whose folder is not libffi-3.*: refused before anything is configured.
        ({"Python-3.11.2.tar.xz": "Python-3.11.2", "libffi-3.4.4.tar.gz": "libffi"},
         "expected exactly one libffi-3.*/ folder extracted"),
        ({"Python-3.11.2.tar.xz": "Python-3.11.2"},
         "expected exactly one service-backup_python/libffi-3.*.tar.gz blob, found 0"),
    ],
)  # fmt: skip
def test_packaging_refuses_blobs_it_cannot_build_from(
    tmp_path: Path, blobs: dict[str, str], reason: str
) -> None:
    """The packaging script's own checks of what BOSH put in BOSH_COMPILE_TARGET (the compile
    itself is compile-check's)."""
    compile_target = tmp_path / "compile"
    (compile_target / "service-backup_python").mkdir(parents=True)
    for name, top in blobs.items():
        tarball(compile_target / "service-backup_python" / name, top,
                "w:xz" if name.endswith("xz") else "w:gz")  # fmt: skip
    result = run_packaging(compile_target, tmp_path / "install")
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stderr, result.stderr
    assert not (tmp_path / "install").exists(), "nothing may be installed"
