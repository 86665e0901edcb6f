"""The rendered job scripts run for real in a temporary /var/vcap (SERVICE_BACKUP_ROOT), with
the service-backup package built by its own packaging script: pre-start validates, ctl starts
the daemon as backup_user, drain stops it gracefully (a backup command traps SIGTERM and cleans
up) or escalates to SIGQUIT and SIGKILL, manual-backup uploads as backup_user."""

from __future__ import annotations

import datetime
import os
import pwd
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import manifests as m
from .conftest import BACKUP_USER
from .job import (
    DEPLOYMENT,
    fake_root,
    job_env,
    json_lines,
    process_cmdline,
    process_uid,
    remove_tree,
    run_script,
    wait_until,
    world_readable_tempdir,
)

NOBODY = pwd.getpwnam(BACKUP_USER)


@pytest.fixture
def root() -> Iterator[Path]:
    path = world_readable_tempdir("sb-vcap-")
    yield path
    remove_tree(path)


def shared_dir(path: Path) -> Path:
    """A folder the backup user may write to (for evidence files and local backups)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def fake_monit(root: Path) -> Path:
    """monit's CLI as the drain script calls it: records its arguments."""
    calls = root / "monit-calls"
    script(root / "bosh" / "bin" / "monit", f'#!/bin/sh\necho "$*" >> {calls}\n')
    return calls


def start(root: Path) -> subprocess.Popen:
    """``ctl start`` as monit runs it: it execs the daemon, so the child is the daemon."""
    return subprocess.Popen(
        [str(root / "jobs/service-backup/bin/ctl"), "start"],
        env=job_env(root),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def log_file(root: Path, name: str) -> Path:
    return root / "sys/log/service-backup" / name


def log_text(root: Path, name: str) -> str:
    path = log_file(root, name)
    return path.read_text() if path.exists() else ""


def stdout_messages(root: Path) -> list[str]:
    return [line["message"] for line in json_lines(log_text(root, "service-backup.stdout.log"))]


def wait_for_message(root: Path, message: str, timeout: float = 60) -> None:
    wait_until(
        lambda: f"ServiceBackup.{message}" in stdout_messages(root),
        timeout,
        f"log line {message!r} (stderr: {log_text(root, 'service-backup.stderr.log')[-500:]})",
    )


def stop_leftover(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait()


def test_package_installs_offline_with_every_destination_type(packaged: Path) -> None:
    result = subprocess.run(
        [str(packaged / "bin/service-backup"), "plugins"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for kind in ("s3", "azure", "gcs", "scp", "local", "cf_notifications", "commands"):
        assert f" {kind} " in result.stdout
    # The third-party plugin added through EXTRA_REQUIREMENTS (see docs/bosh.md).
    assert " toy " in result.stdout and "service-backup-toy" in result.stdout
    # The virtualenv runs on the python3 package's interpreter, not on the build machine's.
    pyvenv = (packaged / "pyvenv.cfg").read_text().splitlines()
    assert f"home = {packaged.parent / 'python3' / 'bin'}" in pyvenv
    assert (packaged / "bin" / "manual-backup").exists()


def test_pre_start_accepts_a_valid_manifest(as_root: None, packaged: Path, root: Path) -> None:
    fake_root(root, packaged, m.service_backup(m.destination("local"), backup_user=BACKUP_USER))
    result = run_script(root, "pre-start")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_pre_start_fails_the_deploy_with_the_daemons_message(
    as_root: None, packaged: Path, root: Path
) -> None:
    manifest = m.service_backup(
        m.destination("local"),
        m.destination("s3"),
        missing_properties_message="Fix it.",
        backup_user=BACKUP_USER,
    )
    del manifest["properties"]["service-backup"]["destinations"][1]["config"]["bucket_name"]
    fake_root(root, packaged, manifest)
    result = run_script(root, "pre-start")
    assert result.returncode == 2
    assert "destinations[1].config.bucket_name: required field missing" in result.stderr
    assert result.stderr.strip().endswith("Fix it.")
    assert m.S3_SECRET not in result.stdout + result.stderr


def test_pre_start_fails_when_backup_user_does_not_exist(
    as_root: None, packaged: Path, root: Path
) -> None:
    fake_root(root, packaged, m.service_backup(m.destination("local"), backup_user="no-such-u"))
    result = run_script(root, "pre-start")
    assert result.returncode == 1
    assert "backup_user 'no-such-u' does not exist" in result.stderr


def test_ctl_starts_daemon_as_backup_user_and_drain_stops_it_gracefully(
    as_root: None, packaged: Path, root: Path
) -> None:
    evidence = shared_dir(root / "evidence")
    backups = shared_dir(root / "backups")
    snapshot = script(
        root / "bin" / "snapshot",
        f"""
        #!/bin/bash
        # A source_executable that takes long and cleans up when told to stop.
        trap 'echo "cleaned up after SIGTERM" > {evidence}/terminated.$$; exit 143' TERM
        echo started > {evidence}/started.$$
        while :; do sleep 0.2 & wait $!; done
        """,
    )
    source = root / "store" / "source"
    manifest = m.service_backup(
        {"type": "local", "name": "nfs", "config": {"path": str(backups)}},
        source_folder=str(source),
        source_executable=f"{snapshot} --wait",
        cron_schedule="* * * * * *",
        exit_if_in_progress=True,
        backup_user=BACKUP_USER,
    )
    fake_root(root, packaged, manifest)
    monit_calls = fake_monit(root)
    daemon = start(root)
    try:
        wait_for_message(root, "Service-backup Started")
        pid_text = (root / "sys/run/service-backup/service-backup.pid").read_text().strip()
        assert int(pid_text) == daemon.pid  # ctl exec'd the daemon: monit watches the right pid
        assert process_uid(daemon.pid) == NOBODY.pw_uid
        cmdline = process_cmdline(daemon.pid)
        assert cmdline[-3:] == [
            "daemon",
            "--syslog",
            str(root / "data/service-backup/config/backup.yml"),
        ]
        # ctl created the source folder for backup_user and gave it a private config copy.
        assert source.stat().st_uid == NOBODY.pw_uid
        runtime_config = root / "data/service-backup/config/backup.yml"
        assert runtime_config.stat().st_uid == NOBODY.pw_uid
        assert runtime_config.stat().st_mode & 0o777 == 0o600

        started = wait_until(lambda: list(evidence.glob("started.*")), 30, "the backup command")
        assert all(p.stat().st_uid == NOBODY.pw_uid for p in started)  # children run as nobody

        began = time.monotonic()
        drain = run_script(root, "drain", "job_changed", "hash_unchanged")
        took = time.monotonic() - began
        assert drain.returncode == 0, drain.stderr
        assert drain.stdout == "0\n"  # BOSH reads an integer and nothing else
        assert daemon.wait(timeout=10) == 0  # exited by itself, not killed
        assert took < 15, f"graceful drain took {took:.1f}s"
    finally:
        stop_leftover(daemon)

    # Every backup command that started got SIGTERM forwarded and cleaned up.
    started = list(evidence.glob("started.*"))
    for path in started:
        pid = path.name.split(".")[1]
        assert (evidence / f"terminated.{pid}").read_text() == "cleaned up after SIGTERM\n"
    messages = stdout_messages(root)
    assert "ServiceBackup.All backup processes terminated. Exiting" in messages
    assert "ServiceBackup.Upload backup completed successfully" not in messages
    drain_log = log_text(root, "drain.log")
    assert "exited after SIGTERM" in drain_log and "SIGQUIT" not in drain_log
    assert monit_calls.read_text() == "unmonitor service-backup\n"
    assert not (root / "sys/run/service-backup/service-backup.pid").exists()
    # A second drain (BOSH may call it again) finds nothing to do and still answers 0.
    again = run_script(root, "drain")
    assert (again.returncode, again.stdout) == (0, "0\n")


def test_drain_escalates_to_sigquit_then_sigkill(as_root: None, root: Path) -> None:
    """A daemon that ignores SIGTERM and SIGQUIT: a stand-in package whose bin/service-backup is a
    hung process (the real daemon always honours SIGTERM). ctl and drain are the real scripts."""
    evidence = shared_dir(root / "evidence") / "signals"
    stand_in = world_readable_tempdir("sb-stand-in-")
    try:
        script(
            stand_in / "bin" / "service-backup",
            f"""
            #!/bin/bash
            trap 'echo TERM >> {evidence}' TERM
            trap 'echo QUIT >> {evidence}' QUIT
            echo "ready $*" >> {evidence}
            while :; do sleep 0.2 & wait $!; done
            """,
        )
        fake_root(root, stand_in, m.service_backup(m.destination("local"), backup_user=BACKUP_USER))
        daemon = start(root)
        try:
            wait_until(
                lambda: evidence.exists() and "ready" in evidence.read_text(), 30, "stand-in"
            )
            assert process_uid(daemon.pid) == NOBODY.pw_uid
            began = time.monotonic()
            drain = run_script(root, "drain", timeout=60)
            took = time.monotonic() - began
            assert (drain.returncode, drain.stdout) == (0, "0\n")
            assert daemon.wait(timeout=10) == -signal.SIGKILL
        finally:
            stop_leftover(daemon)
        assert evidence.read_text().splitlines()[1:] == ["TERM", "QUIT"]
        assert 15 <= took < 40, f"drain took {took:.1f}s"
        drain_log = log_text(root, "drain.log")
        assert "15s after SIGTERM: sending SIGQUIT" in drain_log
        assert "still running after SIGQUIT: sending SIGKILL" in drain_log
    finally:
        remove_tree(stand_in)


def test_without_a_service_backup_section_the_job_starts_and_idles(
    as_root: None, packaged: Path, root: Path
) -> None:
    # backup_user is the only property set, and only because vcap may not exist here.
    fake_root(root, packaged, {"properties": {"service-backup": {"backup_user": BACKUP_USER}}})
    assert run_script(root, "pre-start").returncode == 0
    daemon = start(root)
    try:
        wait_for_message(root, "No destination provided - skipping backup")
        assert daemon.poll() is None  # still running: monit sees a healthy job
        stop = run_script(root, "ctl", "stop")
        assert stop.returncode == 0, stop.stderr
        assert daemon.wait(timeout=10) == 0
    finally:
        stop_leftover(daemon)
    assert stdout_messages(root)[-1] == "ServiceBackup.All backup processes terminated. Exiting"


def test_ctl_start_twice_keeps_one_daemon(as_root: None, packaged: Path, root: Path) -> None:
    fake_root(root, packaged, {"properties": {"service-backup": {"backup_user": BACKUP_USER}}})
    daemon = start(root)
    try:
        wait_for_message(root, "Service-backup Started")
        second = run_script(root, "ctl", "start")
        assert second.returncode == 0
        assert f"already running (pid {daemon.pid})" in log_text(root, "ctl.log")
        assert stdout_messages(root).count("ServiceBackup.Service-backup Started") == 1
    finally:
        run_script(root, "ctl", "stop")
        stop_leftover(daemon)


def test_ctl_start_ignores_a_stale_pidfile(as_root: None, packaged: Path, root: Path) -> None:
    """After a crash the pidfile's pid may belong to another process: start anyway, never
    signal that process."""
    fake_root(root, packaged, {"properties": {"service-backup": {"backup_user": BACKUP_USER}}})
    unrelated = subprocess.Popen(["sleep", "300"])
    pidfile = root / "sys/run/service-backup/service-backup.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{unrelated.pid}\n")
    daemon = start(root)
    try:
        wait_for_message(root, "Service-backup Started")
        assert int(pidfile.read_text()) == daemon.pid
        assert run_script(root, "ctl", "stop").returncode == 0
        assert daemon.wait(timeout=10) == 0
        assert unrelated.poll() is None  # untouched
    finally:
        stop_leftover(daemon)
        unrelated.kill()
        unrelated.wait()


def test_manual_backup_uploads_as_backup_user(as_root: None, packaged: Path, root: Path) -> None:
    """To a built-in and to a third-party destination type, both from the package."""
    backups = shared_dir(root / "backups")
    toy_backups = shared_dir(root / "toy-backups")
    source = root / "store" / "source"
    manifest = m.service_backup(
        {"type": "local", "name": "nfs", "config": {"path": str(backups)}},
        {"type": "toy", "name": "third-party", "config": {"path": str(toy_backups)}},
        source_folder=str(source),
        add_deployment_name_to_backup_path=True,
        backup_user=BACKUP_USER,
    )
    fake_root(root, packaged, manifest)
    source.mkdir(parents=True)
    (source / "dump.rdb").write_bytes(b"redis dump\n")
    days = {datetime.date.today()}
    result = run_script(root, "manual-backup", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = [line["message"] for line in json_lines(result.stdout)]
    assert "ServiceBackup.Upload backup completed successfully" in messages
    uploaded = list(backups.glob(f"{DEPLOYMENT}/*/*/*/dump.rdb"))
    assert len(uploaded) == 1, list(backups.rglob("*"))
    days.add(datetime.date.today())  # the run may straddle midnight
    day = "/".join(uploaded[0].parent.relative_to(backups / DEPLOYMENT).parts)
    assert day in {d.strftime("%Y/%m/%d") for d in days}
    assert uploaded[0].read_bytes() == b"redis dump\n"
    assert uploaded[0].stat().st_uid == NOBODY.pw_uid  # written by backup_user, not root
    toy_uploaded = list(toy_backups.glob(f"{DEPLOYMENT}/*/*/*/dump.rdb"))
    assert [p.read_bytes() for p in toy_uploaded] == [b"redis dump\n"]
    assert any("to Toy remote path" in message for message in messages)
    assert os.environ.get("SERVICE_BACKUP_ROOT") is None  # the test did not leak its root
