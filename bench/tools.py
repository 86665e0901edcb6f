"""The peer tools: found on the machine, or installed the way an operator would.

rclone and GNU ``time`` come from Debian (apt); awscli from PyPI into its own virtualenv under
``bench/work/`` so it never touches the project's environment. A peer that cannot be installed
is reported as unavailable in the table rather than silently dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .measure import GNU_TIME

APT_PACKAGES = {"rclone": "rclone", GNU_TIME: "time", "scp": "openssh-client"}
_apt_updated = False


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _apt_install(package: str) -> str | None:
    """Install a Debian package; return an error text, or None on success."""
    global _apt_updated
    if shutil.which("apt-get") is None:
        return "apt-get not found"
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log(f"installing {package} (apt)")
    try:
        if not _apt_updated:
            subprocess.run(
                [*sudo, "apt-get", "update", "-qq"],
                env=env,
                check=True,
                capture_output=True,
                timeout=600,
            )
            _apt_updated = True
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            env=env,
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"apt-get install {package} failed: {exc}"
    return None


def ensure_gnu_time() -> None:
    """GNU time is how every figure is measured: without it there is no benchmark."""
    if not os.access(GNU_TIME, os.X_OK):
        error = _apt_install("time")
        if error:
            raise SystemExit(f"bench: GNU time is required: {error}")


def ensure_rclone() -> str | None:
    """Path of rclone, installing it if needed; None when it cannot be had."""
    found = shutil.which("rclone")
    if found:
        return found
    error = _apt_install("rclone")
    if error:
        _log(error)
        return None
    return shutil.which("rclone")


def ensure_awscli(work: Path) -> Path | None:
    """``aws`` from a virtualenv under ``work`` (PyPI's awscli), created on first use."""
    venv = work / "awscli-venv"
    aws = venv / "bin" / "aws"
    if aws.exists():
        return aws
    _log("installing awscli (PyPI) into its own virtualenv")
    uv = shutil.which("uv") or _repo_uv()
    try:
        if uv:
            subprocess.run(
                [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            subprocess.run(
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv / "bin" / "python"),
                    "awscli",
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
        else:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", "awscli"],
                check=True,
                capture_output=True,
                timeout=900,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _log(f"awscli install failed: {exc} {detail.decode(errors='replace')[-500:]}")
        shutil.rmtree(venv, ignore_errors=True)
        return None
    return aws if aws.exists() else None


def _repo_uv() -> str | None:
    candidate = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "uv"
    return str(candidate) if candidate.exists() else None


def version_of(argv: list[str], env: dict[str, str] | None = None) -> str:
    """First line of a tool's version output, or ``?``."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def ensure_bytecode(repo: Path, venvs: list[Path]) -> str:
    """Byte-compile our sources and every virtualenv a measured tool runs from; say so.

    ``make install`` runs ``compileall``, but a virtualenv synced by hand (or with
    ``PYTHONDONTWRITEBYTECODE`` set, as on some CI machines) has no ``.pyc`` files and never
    gets them: every measured run would then compile ~300 modules at start-up (about 0.2 s
    here), which no operator's installed package pays. The flag only stops *writing*;
    ``.pyc`` files compiled here are read by the measured processes. The check afterwards
    looks for the cached file of one of our modules, so a harness that still measures
    uncompiled imports says so instead of quietly reporting slower start-ups.
    """
    import compileall
    import importlib.util
    import sysconfig

    folders = [Path(sysconfig.get_paths()["purelib"])]
    folders += sorted(p for p in repo.glob("*/src") if p.is_dir())
    for venv in venvs:
        folders += sorted(venv.glob("lib/python*/site-packages"))
    for folder in dict.fromkeys(folders):
        compileall.compile_dir(str(folder), quiet=2, workers=0)
    probe = repo / "core" / "src" / "service_backup" / "run.py"
    cached = Path(importlib.util.cache_from_source(str(probe)))
    if not cached.exists() or cached.stat().st_mtime < probe.stat().st_mtime:
        return f"no up-to-date .pyc for {probe.name} after compileall: start-up includes compiling"
    return "byte-compiled (.pyc present for our packages and their dependencies)"
