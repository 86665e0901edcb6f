"""The rendered job scripts run for real in a temporary /var/vcap (SERVICE_BACKUP_ROOT), with
the service-backup package built by its own packaging script: pre-start validates, ctl starts
the daemon as backup_user, drain stops it gracefully (a backup command traps SIGTERM and cleans
up) or escalates to SIGQUIT and SIGKILL, manual-backup uploads as backup_user."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import signal
import subprocess
import sys
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


#: Execs its arguments with SIGHUP, SIGINT and SIGQUIT back at their defaults, as monit starts
#: a job: a test run launched as a shell's background job has SIGINT and SIGQUIT ignored,
#: which its children inherit, and a process cannot trap a signal ignored since its start.
DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):\n"
    "    signal.signal(number, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def start(root: Path) -> subprocess.Popen:
    """``ctl start`` as monit runs it: it execs the daemon, so the child is the daemon."""
    return subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGNALS, str(root / "jobs/service-backup/bin/ctl"), "start"],
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
    # The hook plugins, apprise's distribution among them.
    for hook in ("healthchecks", "apprise"):
        assert f" {hook} " in result.stdout, f"hook plugin {hook} missing from the package"
    assert "service-backup-apprise" in result.stdout
    # The virtualenv runs on the service-backup_python package's interpreter.
    pyvenv = (packaged / "pyvenv.cfg").read_text().splitlines()
    assert f"home = {packaged.parent / 'service-backup_python' / 'bin'}" in pyvenv
    assert (packaged / "bin" / "manual-backup").exists()


#: C modules the service-backup_python package is built without: the Jammy stemcell has no
#: liblzma, libsqlite3 (nor bz2, readline, ncurses, gdbm, uuid, Tk) headers. libffi is vendored
#: instead (apprise imports ctypes unconditionally), so _ctypes is not among them.
MISSING_ON_THE_STEMCELL = (
    "_lzma", "_sqlite3", "_bz2", "readline", "_curses", "_curses_panel", "_dbm", "_gdbm",
    "_tkinter", "_uuid",
)  # fmt: skip

#: Run first, before ``site`` (``python -S``): the modules above do not exist, also for the
#: ``.pth`` files of the installed wheels, which ``site.main()`` then processes as usual.
NOT_BUILT = f"""
import sys

MISSING = {MISSING_ON_THE_STEMCELL!r}
for name in MISSING:
    assert name not in sys.modules, name + " was imported before the blocker"


class NotBuilt:  # a meta path finder (importlib.abc would import shutil, hence lzma)
    def find_spec(self, name, path=None, target=None):
        if name in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not built)", name=name)
        return None


sys.meta_path.insert(0, NotBuilt())
import site

site.main()
"""


def without_stemcell_modules(packaged: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(packaged / "bin" / "python"), "-S", "-c", NOT_BUILT + code, *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


#: Every module of every workspace distribution, then what the plugins do lazily: build each
#: SDK's client (no request is sent) and load apprise's notification services.
IMPORT_EVERYTHING = """
import importlib, importlib.metadata, io, json, pkgutil, sys

for blocked in ("lzma", "sqlite3", "bz2"):
    try:
        importlib.import_module(blocked)
    except ImportError:
        pass
    else:
        sys.exit(f"the blocker does not work: {blocked} imported")

imported = []
for dist in importlib.metadata.distributions():
    if not dist.metadata["Name"].startswith("service-backup"):
        continue
    tops = {f.parts[0] for f in dist.files or () if len(f.parts) == 2 and f.name == "__init__.py"}
    for top in sorted(tops):
        package = importlib.import_module(top)
        imported.append(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            # __main__ runs the CLI; service_backup.testing is the plugin authors' pytest kit.
            if info.name.endswith(".__main__") or ".testing" in info.name:
                continue
            importlib.import_module(info.name)
            imported.append(info.name)

import boto3
boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
             aws_access_key_id="x", aws_secret_access_key="y")
from azure.storage.blob import ContainerClient
ContainerClient.from_container_url("https://acct.blob.core.windows.net/c", credential="a2V5")
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
storage.Client(project="p", credentials=AnonymousCredentials()).bucket("b").blob("k")
import google_crc32c
google_crc32c.value(b"abc")
import paramiko
paramiko.Ed25519Key.from_private_key(io.StringIO(sys.argv[1]))
import apprise
notifier = apprise.Apprise()
assert notifier.add("json://127.0.0.1:9/hook"), "apprise refused a json:// URL"
assert notifier.details()["schemas"], "apprise loaded no services"
print(json.dumps(imported))
"""


def test_every_plugins_dependency_tree_works_without_the_modules_the_stemcell_cannot_build(
    packaged: Path, tmp_path: Path
) -> None:
    """The proof that building CPython without liblzma, libsqlite3 (and the rest) is safe: in
    the packaged environment, with those C modules absent, every module of the
    daemon and its plugins imports, each SDK builds its client, apprise loads its services,
    and ``plugins`` and ``validate`` (every destination type) succeed."""
    result = without_stemcell_modules(packaged, IMPORT_EVERYTHING, m.ssh_key_pair()[0])
    assert result.returncode == 0, result.stderr[-3000:]
    imported = json.loads(result.stdout.splitlines()[-1])
    expected = (
        "service_backup.daemon", "service_backup_s3.destination",
        "service_backup_azure.destination", "service_backup_gcs.destination",
        "service_backup_scp.destination", "service_backup_apprise.send",
        "service_backup_plugins.cf_alerts", "service_backup_plugins.healthchecks",
    )  # fmt: skip
    for module in expected:
        assert module in imported, f"{module} was not imported"

    cli = "import sys; from service_backup.cli import main; sys.exit(main(sys.argv[1:]))"
    plugins = without_stemcell_modules(packaged, cli, "plugins")
    assert plugins.returncode == 0, plugins.stdout + plugins.stderr
    assert "BROKEN" not in plugins.stdout
    config = tmp_path / "backup.yml"
    section = m.seed_manifest()["properties"]["service-backup"]
    config.write_text(json.dumps({**section, "deployment_name": DEPLOYMENT}))
    validated = without_stemcell_modules(packaged, cli, "validate", str(config))
    assert validated.returncode == 0, validated.stderr


def test_pre_start_accepts_a_valid_manifest(as_root: None, packaged: Path, root: Path) -> None:
    fake_root(root, packaged, m.service_backup(m.destination("local"), backup_user=BACKUP_USER))
    result = run_script(root, "pre-start")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_pre_start_checks_a_third_party_type_with_its_own_config_class(
    as_root: None, packaged: Path, root: Path
) -> None:
    """The director knows only the built-in types; a third-party type's mistakes render and
    fail pre-start, with the daemon's message."""
    manifest = m.service_backup(
        m.destination("local"),
        {"type": "toy", "name": "third-party", "config": {"pth": "/x"}},
        missing_properties_message="Fix it.",
        backup_user=BACKUP_USER,
    )
    fake_root(root, packaged, manifest)
    result = run_script(root, "pre-start")
    assert result.returncode == 2
    assert "destinations[1].config.pth: unknown key" in result.stderr
    assert "destinations[1].config.path: required field missing" in result.stderr
    assert result.stderr.strip().endswith("Fix it.")


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
        # No --syslog: service-backup.syslog is false by default (syslog-release forwards the
        # log files already).
        assert cmdline[-2:] == ["daemon", str(root / "data/service-backup/config/backup.yml")]
        assert "--syslog" not in cmdline
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
