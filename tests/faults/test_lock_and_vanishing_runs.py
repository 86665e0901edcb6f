"""Runs that used to vanish, and the lock (issue items 4 and 12).

Each failure that used to kill a scheduled run with a raw traceback on stderr (no JSON line,
no alert) now ends like any failed run: ``Perform backup completed with error`` naming the
reason, and an alert. The daemon runs as an unprivileged user (``nobody``) where the fault
needs one: root can write anywhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts import cf_server
from tests.alerts.cf_server import CfServer
from tests.alerts.conftest import alerts_section

from .helpers import LogStream, local_config, run_cli, write_config

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def cf() -> Iterator[CfServer]:
    with cf_server.cf_server() as server:
        yield server


def _nobody_can_run_python() -> str | None:
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
         sys.executable, "-c", "import service_backup.cli"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return None if probe.returncode == 0 else probe.stderr.strip()[-300:]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder ``nobody`` owns (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the daemon as nobody beside files root owns")
    problem = _nobody_can_run_python()
    if problem:
        pytest.fail(f"cannot run this Python as nobody through setpriv: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    os.chown(folder, NOBODY.pw_uid, NOBODY.pw_gid)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.lchown(name, uid, gid)


def hand_to_nobody(folder: Path, data: dict) -> Path:
    """Write the config and give the whole folder to nobody (before root plants its files)."""
    cfg = write_config(folder / "daemon.yml", data)
    chown_tree(folder, NOBODY.pw_uid, NOBODY.pw_gid)
    return cfg


def daemon_as_nobody(folder: Path, cfg: Path, lock_dir: Path) -> LogStream:
    return LogStream(
        "daemon",
        str(cfg),
        env={"SERVICE_BACKUP_LOCK_DIR": str(lock_dir), "HOME": str(folder)},
        user=NOBODY.pw_uid,
    )


def first_run_error(log: LogStream) -> dict:
    """Wait for the first run's end, stop the daemon, return the error line."""
    try:
        line = log.wait_for("Perform backup completed with error")
        log.wait_for("Sent alert.")  # then stop (a shutdown would skip the alert)
        log.proc.send_signal(signal.SIGTERM)
        assert log.proc.wait(timeout=30) == 0
        stderr = log.stderr()
        assert "Traceback" not in stderr, stderr
        log.rest()
        return line
    finally:
        log.close()


def test_lock_folder_owned_by_another_user(shared_dir: Path, cf: CfServer) -> None:
    locks = shared_dir / "locks"
    data = local_config(shared_dir, exit_if_in_progress=True, alerts=alerts_section(cf))
    cfg = hand_to_nobody(shared_dir, data)
    locks.mkdir(mode=0o755)  # created by root, e.g. by a manual run: unwritable for nobody
    os.chown(locks, 0, 0)
    log = daemon_as_nobody(shared_dir, cfg, locks)
    line = first_run_error(log)
    assert line["data"]["error"] == (
        f"lock folder {locks} is owned by uid 0, not by this user (uid {NOBODY.pw_uid})"
    )
    assert len(cf.notifications()) >= 1, "the failed run sent its alert"


def test_root_owned_lock_file_left_by_a_manual_run(shared_dir: Path, cf: CfServer) -> None:
    locks = shared_dir / "locks"
    data = local_config(shared_dir, exit_if_in_progress=True, alerts=alerts_section(cf))
    cfg = hand_to_nobody(shared_dir, data)
    locks.mkdir(mode=0o700)
    os.chown(locks, NOBODY.pw_uid, NOBODY.pw_gid)
    # What `sudo manual-backup` leaves behind: the lock file, root's, 0600.
    from service_backup.guard import lock_path

    os.environ["SERVICE_BACKUP_LOCK_DIR"] = str(locks)
    try:
        planted = lock_path(data["source_folder"])
    finally:
        del os.environ["SERVICE_BACKUP_LOCK_DIR"]
    planted.touch(mode=0o600)
    log = daemon_as_nobody(shared_dir, cfg, locks)
    line = first_run_error(log)
    assert line["data"]["error"].startswith(f"lock file {planted} cannot be opened: Permission")
    assert "owned by uid 0, perhaps left by a manual run" in line["data"]["error"]
    assert len(cf.notifications()) >= 1


def test_planted_symlink_instead_of_the_lock_file_is_not_followed(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    data = local_config(tmp_path, exit_if_in_progress=True)
    env = {"SERVICE_BACKUP_LOCK_DIR": str(locks)}
    os.environ.update(env)
    try:
        from service_backup.guard import lock_path

        path = lock_path(data["source_folder"])
    finally:
        del os.environ["SERVICE_BACKUP_LOCK_DIR"]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path.symlink_to(victim)
    result = run_cli("backup", str(write_config(tmp_path / "b.yml", data)), env=env)
    assert result.returncode == 1
    [line] = result.find("Perform backup completed with error")
    assert line["data"]["error"] == f"lock file {path} is a symbolic link; refusing to follow it"
    assert victim.read_text() == "precious"
    assert not (tmp_path / "dest").exists(), "nothing uploaded without the lock"


@pytest.mark.parametrize("case", ["symlinked-folder", "world-writable-parent", "too-open"])
def test_lock_folder_must_be_private(tmp_path: Path, case: str) -> None:
    data = local_config(tmp_path, exit_if_in_progress=True)
    locks = tmp_path / "locks"
    if case == "symlinked-folder":
        (tmp_path / "elsewhere").mkdir()
        locks.symlink_to(tmp_path / "elsewhere")
        expected = f"lock folder {locks} is not a folder (a symbolic link or a file)"
    elif case == "world-writable-parent":
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        locks = shared / "locks"
        expected = f"lock folder {locks} is inside a world-writable folder"
    else:
        locks.mkdir()
        locks.chmod(0o777)
        expected = None
    env = {"SERVICE_BACKUP_LOCK_DIR": str(locks)}
    result = run_cli("backup", str(write_config(tmp_path / "b.yml", data)), env=env)
    if expected is None:  # ours but too open: tightened, and the run goes on
        assert result.returncode == 0, result.stdout
        assert stat.S_IMODE(locks.stat().st_mode) == 0o700
        return
    assert result.returncode == 1
    [line] = result.find("Perform backup completed with error")
    assert line["data"]["error"].startswith(expected), line
    assert "Traceback" not in result.stderr


def test_default_lock_folder_is_private_not_tmp(tmp_path: Path) -> None:
    from service_backup.guard import lock_dir, private_dir

    env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_BACKUP_LOCK_DIR",)}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({**env, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": ""})
        folder = private_dir()
        assert folder == lock_dir()
        assert not str(folder).startswith(tempfile.gettempdir() + "/service-backup")
        assert folder.is_relative_to(tmp_path)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        os.environ.clear()
        os.environ.update(saved)


def remove_chain(top: str | Path) -> None:
    """Remove a folder holding a chain of ``d`` folders, one level at a time.

    shutil.rmtree recurses once per level and fails at this depth (pytest's own clean-up of
    old temporary folders would then crash), so the chain is shortened from the top.
    """
    top = Path(top)
    while (top / "d").is_dir():
        if (top / "d" / "d").is_dir():
            os.rename(top / "d" / "d", top / "next")
        shutil.rmtree(top / "d")
        if (top / "next").is_dir():
            os.rename(top / "next", top / "d")
    shutil.rmtree(top)


def test_a_1100_level_deep_source_tree_is_backed_up(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    source = Path(data["source_folder"])
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:  # level by level (pathlib and os.makedirs recurse too deep themselves)
        for _ in range(1100):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as out:
            out.write("at the bottom")
    finally:
        os.close(fd)
    try:
        result = run_cli("backup", str(write_config(tmp_path / "deep.yml", data)))
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        [done] = result.find("Upload backup completed successfully")
        assert done["data"]["files"] == 2, "data.txt and the file 1,100 folders down"
        [dated] = [p for p in (tmp_path / "dest").glob("*/*/*")]
        stored = os.path.join(dated, *["d"] * 1100, "bottom.txt")
        with open(stored) as handle:
            assert handle.read() == "at the bottom"
    finally:
        remove_chain(source)
        for dated in (tmp_path / "dest").glob("*/*/*"):
            remove_chain(dated)
