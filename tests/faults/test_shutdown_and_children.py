"""Shutdown bounds and children that die with the daemon (issue items 5 and 6).

Real daemons, real children, real signals. Waiting for a process that is not our child to end
uses a pidfd (readable when the process exits): an event, not a sleep.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts import cf_server
from tests.alerts.cf_server import CfServer
from tests.alerts.conftest import alerts_section

from .helpers import LogStream, install_plugin, local_config, script, write_config

STUBBORN_PREPARE = """#!/usr/bin/env bash
# Ignores SIGTERM (and so does its sleep, which inherits that), tells the test it runs.
trap '' TERM
echo ready > "$1"
sleep 600
"""

PREPARE_WITH_GRANDCHILD = """#!/usr/bin/env bash
# A prepare that starts a helper (like redis-cli --rdb) and waits for it.
sleep 600 &
echo "$$ $!" > "$1"
echo ready > "$2"
wait
"""


def wait_gone(pid: int, timeout: float) -> bool:
    """True when process ``pid`` exits within ``timeout`` seconds (any process, via pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture
def cf() -> Iterator[CfServer]:
    with cf_server.cf_server() as server:
        yield server


def test_prepare_ignoring_sigterm_is_killed_within_the_drain_window(
    tmp_path: Path, cf: CfServer
) -> None:
    ready = tmp_path / "ready.fifo"
    os.mkfifo(ready)
    prepare = script(tmp_path / "stubborn.sh", STUBBORN_PREPARE)
    data = local_config(tmp_path, source_executable=f"{prepare} {ready}", alerts=alerts_section(cf))
    log = LogStream("daemon", str(write_config(tmp_path / "d.yml", data)),
                    env={"SERVICE_BACKUP_LOCK_DIR": str(tmp_path / "locks")})  # fmt: skip
    try:
        log.wait_for("Perform backup started")
        with open(ready) as fifo:
            assert fifo.read().strip() == "ready"
        signalled = time.monotonic()
        log.proc.send_signal(signal.SIGTERM)
        code = log.proc.wait(timeout=30)
        took = time.monotonic() - signalled
        lines = log.rest()
    finally:
        log.close()
    assert code == 0
    assert took < 14, f"the daemon needed {took:.1f}s; BOSH's drain escalates after 15 s"
    assert took >= 9, f"{took:.1f}s: the child had its 10 s grace before SIGKILL"
    messages = [line["message"] for line in lines]
    error = next(line for line in lines if line["message"].endswith("completed with error"))
    assert error["message"] == "ServiceBackup.Perform backup completed with error"
    assert error["data"]["error"] == "source_executable interrupted by shutdown (signal: killed)"
    assert "ServiceBackup.Run interrupted by shutdown; alert not sent" in messages
    assert "ServiceBackup.Sending alert." not in messages
    assert cf.requests == [], "no alert is attempted inside the drain window"
    assert messages[-1] == "ServiceBackup.All backup processes terminated. Exiting"


def test_sigkilled_daemon_leaves_no_prepare_behind(tmp_path: Path) -> None:
    pids, ready = tmp_path / "pids.txt", tmp_path / "ready.fifo"
    os.mkfifo(ready)
    prepare = script(tmp_path / "prepare.sh", PREPARE_WITH_GRANDCHILD)
    data = local_config(tmp_path, source_executable=f"{prepare} {pids} {ready}")
    cfg = write_config(tmp_path / "d.yml", data)
    env = {"SERVICE_BACKUP_LOCK_DIR": str(tmp_path / "locks")}
    first = LogStream("daemon", str(cfg), env=env)
    try:
        first.wait_for("Perform backup started")
        with open(ready) as fifo:
            assert fifo.read().strip() == "ready"
        prepare_pid, helper_pid = map(int, pids.read_text().split())
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.close()
    # The prepare command itself dies with its parent (PR_SET_PDEATHSIG).
    assert wait_gone(prepare_pid, 10), "the prepare command outlived the SIGKILLed daemon"
    # Its helper is a grandchild: the kernel does not kill it; the next daemon must.
    assert not wait_gone(helper_pid, 0), "precondition: the helper is still running"

    second = LogStream("daemon", str(cfg), env=env)
    try:
        killed = second.wait_for(
            "Killed an orphaned child command of an earlier service-backup process"
        )
        assert helper_pid in killed["data"]["pids"]
        assert wait_gone(helper_pid, 10), "the orphaned helper is still running"
        second.wait_for("Perform backup started")  # only after the orphan is gone
        with open(ready) as fifo:
            assert fifo.read().strip() == "ready"
        new_prepare, new_helper = map(int, pids.read_text().split())
        assert new_prepare != prepare_pid
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=30) == 0
        assert wait_gone(new_helper, 10), "SIGTERM reaches the whole group of the new prepare"
    finally:
        second.close()
    assert not list((tmp_path / "locks").glob("child-*.json")), "records are removed"


def test_a_manual_backup_leaves_the_running_daemons_children_alone(tmp_path: Path) -> None:
    pids, ready = tmp_path / "pids.txt", tmp_path / "ready.fifo"
    os.mkfifo(ready)
    prepare = script(tmp_path / "prepare.sh", PREPARE_WITH_GRANDCHILD)
    daemon_data = local_config(tmp_path, source_executable=f"{prepare} {pids} {ready}")
    env = {"SERVICE_BACKUP_LOCK_DIR": str(tmp_path / "locks")}
    daemon = LogStream("daemon", str(write_config(tmp_path / "d.yml", daemon_data)), env=env)
    try:
        daemon.wait_for("Perform backup started")
        with open(ready) as fifo:
            fifo.read()
        prepare_pid, helper_pid = map(int, pids.read_text().split())
        manual_data = local_config(tmp_path, source_executable="true")
        manual = LogStream("backup", str(write_config(tmp_path / "m.yml", manual_data)), env=env)
        try:
            assert manual.proc.wait(timeout=60) == 0
            messages = [line["message"] for line in manual.rest()]
        finally:
            manual.close()
        assert not any("orphaned" in m for m in messages)
        assert not wait_gone(prepare_pid, 0) and not wait_gone(helper_pid, 0)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.close()


STUCK_PLUGIN = '''
"""A destination whose write never returns and ignores the stop event (a wedged SDK call)."""
import time

import attrs

from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import LocalDestination


@attrs.frozen
class StuckConfig:
    path: str
    ready_fifo: str


class StuckDestination(LocalDestination):
    def __init__(self, config, context):
        super().__init__(LocalConfig(path=config.path), context)
        self.ready_fifo = config.ready_fifo

    def write(self, key, source):
        with open(self.ready_fifo, "w") as fifo:
            fifo.write("writing")
        time.sleep(600)


@hookimpl
def destination_types():
    return [DestinationType("stuck", StuckConfig, StuckDestination, label="stuck")]
'''


def test_a_run_that_ignores_shutdown_cannot_hold_the_daemon_past_the_window(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.fifo"
    os.mkfifo(ready)
    env = install_plugin(tmp_path / "site", "stuck_destination", STUCK_PLUGIN, "stuck")
    env["SERVICE_BACKUP_LOCK_DIR"] = str(tmp_path / "locks")
    data = local_config(tmp_path)
    data["destinations"] = [
        {"type": "stuck", "config": {"path": str(tmp_path / "d"), "ready_fifo": str(ready)}}
    ]
    log = LogStream("daemon", str(write_config(tmp_path / "stuck.yml", data)), env=env)
    try:
        log.wait_for("Upload backup started")
        with open(ready) as fifo:
            assert fifo.read() == "writing"
        signalled = time.monotonic()
        log.proc.send_signal(signal.SIGTERM)
        code = log.proc.wait(timeout=30)
        took = time.monotonic() - signalled
        lines = log.rest()
    finally:
        log.close()
    assert code == 1, "exiting with the run still busy is a failure"
    assert took < 15, f"{took:.1f}s: BOSH's drain escalates after 15 s"
    [line] = [
        x
        for x in lines
        if x["message"].endswith("Shutdown deadline reached, exiting without waiting for the run")
    ]
    assert line["data"]["error"] == "a run was still busy 13s after the signal"
