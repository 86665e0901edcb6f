"""The run pipeline's order and failure rules, with in-process recording plugins."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import pytest
from loguru import logger

from service_backup import logs
from service_backup.config import parse_config
from service_backup.errors import CommandError
from service_backup.hookspecs import hookimpl
from service_backup.plugins import load_registry
from service_backup.processes import ProcessManager
from service_backup.run import run_backup


class Recorder:
    def __init__(self, fail_at: str | None = None, identifier: str | None = "svc-1") -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.identifier = identifier
        self.alerts: list[str] = []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_at == name:
            raise CommandError("exit status 3")

    @hookimpl
    def identify(self, config, run):
        self._step("identify")
        return self.identifier

    @hookimpl
    def prepare(self, config, run):
        self._step("prepare")

    @hookimpl
    def cleanup(self, config, run):
        self._step("cleanup")

    @hookimpl
    def alert(self, config, run, error):
        self.calls.append("alert")
        self.alerts.append(error)


class BrokenAlerter:
    @hookimpl
    def alert(self, error):
        raise RuntimeError("smtp down")


@pytest.fixture
def captured():
    stream = io.StringIO()
    logs.configure(stream=stream)
    yield stream
    logger.remove()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def setup(tmp_path: Path, recorder: object, *extra_plugins: object, dests=None):
    registry = load_registry(hook_plugins=False)
    registry.register(recorder, name="recorder")
    for i, plugin in enumerate(extra_plugins):
        registry.register(plugin, name=f"extra-{i}")
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "f.txt").write_text("12345")
    config = parse_config(
        {
            "destinations": dests
            or [{"type": "local", "name": "d", "config": {"path": str(tmp_path / "out")}}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
            "deployment_name": "dep",
            "add_deployment_name_to_backup_path": True,
        },
        registry,
    )
    return config, registry


def test_order_of_a_successful_run(tmp_path, captured):
    recorder = Recorder()
    config, registry = setup(tmp_path, recorder)
    when = datetime.datetime(2026, 1, 2, 23, 59, 59)
    result = run_backup(config, registry, ProcessManager(), now=when)
    assert result.ok
    assert recorder.calls == ["identify", "prepare", "cleanup"]
    assert (tmp_path / "out" / "dep" / "2026" / "01" / "02" / "f.txt").read_text() == "12345"
    out = lines(captured)
    assert all(line["message"].startswith("ServiceBackup.WithIdentifier.") for line in out)
    assert {line["data"]["backup_guid"] for line in out} == {result.backup_guid}


def test_prepare_failure_skips_upload_and_cleanup_and_alerts_once(tmp_path, captured):
    recorder = Recorder(fail_at="prepare")
    config, registry = setup(tmp_path, recorder)
    result = run_backup(config, registry, ProcessManager())
    assert not result.ok and result.error == "exit status 3"
    assert recorder.calls == ["identify", "prepare", "alert"]
    assert recorder.alerts == ["exit status 3"]
    assert not (tmp_path / "out").exists()


def test_upload_failure_alerts_and_skips_cleanup(tmp_path, captured):
    recorder = Recorder()
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    config, registry = setup(
        tmp_path, recorder, dests=[{"type": "local", "config": {"path": str(blocker / "d")}}]
    )
    result = run_backup(config, registry, ProcessManager())
    assert not result.ok
    assert recorder.calls == ["identify", "prepare", "alert"]
    assert recorder.alerts[0].startswith("destination local[0]: cannot create folder")


def test_a_failing_alerter_does_not_stop_others_or_hide_the_error(tmp_path, captured):
    recorder = Recorder(fail_at="prepare")
    config, registry = setup(tmp_path, recorder, BrokenAlerter())
    result = run_backup(config, registry, ProcessManager())
    assert result.error == "exit status 3"
    assert recorder.alerts == ["exit status 3"]
    failed = [line for line in lines(captured) if line["message"].endswith("sending service alert")]
    assert failed[0]["data"]["error"] == "RuntimeError: smtp down"


def test_identify_failure_means_no_identifier(tmp_path, captured):
    recorder = Recorder(fail_at="identify")
    config, registry = setup(tmp_path, recorder)
    assert run_backup(config, registry, ProcessManager()).ok
    assert not any("WithIdentifier" in line["message"] for line in lines(captured))


def test_cleanup_failure_keeps_run_successful(tmp_path, captured):
    recorder = Recorder(fail_at="cleanup")
    config, registry = setup(tmp_path, recorder)
    assert run_backup(config, registry, ProcessManager()).ok
    assert "alert" not in recorder.calls
    errors = [line for line in lines(captured) if line["log_level"] == "error"]
    assert [e["message"] for e in errors] == [
        "ServiceBackup.WithIdentifier.Cleanup completed with error"
    ]


def test_secrets_scrubbed_from_errors(tmp_path):
    """Even if an SDK's error quotes a secret, the run's one-line error does not carry it."""
    from service_backup.run import _reason

    registry = load_registry(hook_plugins=False)
    config = parse_config(
        {
            "destinations": [{"type": "local", "config": {"path": str(tmp_path)}}],
            "source_folder": str(tmp_path),
            "cron_schedule": "@daily",
            "alerts": {"config": {"cloud_controller": {"password": "pw-secret-123"}}},
        },
        registry,
    )
    text = _reason(RuntimeError("login as admin:pw-secret-123 refused\n  at line 2"), config)
    assert text == "RuntimeError: login as admin:<redacted> refused at line 2"
