"""End to end: the real ``service-backup backup`` process with every notifier configured.

A failing prepare must produce exactly one CF alert, one apprise notification per service
and one ``/fail`` ping; a successful run with every state on, a start and a finish of each.
Nothing secret (ping UUID, webhook and SMTP passwords, CF credentials) may appear anywhere in
what the process prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerts import cf_server
from tests.alerts.conftest import alerts_section
from tests.core.cli import CliResult, run_cli, write_config
from tests.servers import free_port

from .conftest import (
    JSON_PASSWORD,
    PING_UUID,
    SMTP_PASSWORD,
    backup_data,
    json_url,
    mailto_url,
    ping_url,
)
from .servers import HttpServer, SmtpServer, http_server

SECRETS = (PING_UUID, JSON_PASSWORD, SMTP_PASSWORD, cf_server.CC_PASSWORD, cf_server.CLIENT_SECRET)


@pytest.fixture
def cf() -> Iterator[cf_server.CfServer]:
    with cf_server.cf_server() as server:
        yield server


@pytest.fixture
def hc() -> Iterator[HttpServer]:
    with http_server() as server:
        yield server


def backup(tmp_path: Path, data: dict[str, Any]) -> CliResult:
    result = run_cli("backup", str(write_config(tmp_path / "backup.yml", data)), timeout=120)
    assert result.lines, "stdout is JSON log lines only"  # parses every line
    output = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in output, "a secret appeared in the process's output"
    return result


def test_a_failed_prepare_tells_everyone_exactly_once(
    tmp_path: Path, cf: cf_server.CfServer, hc: HttpServer, server: HttpServer, smtp: SmtpServer
) -> None:
    data = backup_data(
        tmp_path,
        succeed=False,
        alerts=alerts_section(cf),
        healthchecks={"ping_url": ping_url(hc)},
        apprise={
            "services": [
                {"url": json_url(server), "label": "webhook"},
                {"url": mailto_url(smtp), "label": "ops-mail"},
            ]
        },
    )
    result = backup(tmp_path, data)

    assert result.returncode == 1, result.stderr
    assert len(cf.notifications()) == 1, "one CF alert"
    start, fail = hc.wait_for(2)
    assert [start.path, fail.path] == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}/fail"]
    assert fail.body == b"exit status 1"
    (webhook,) = server.wait_for(1)
    assert webhook.json()["title"] == "[Service Alert][Redis for PCF] Service Backup Failed"
    assert "Service instance: instance-42" in webhook.json()["message"]
    (mail,) = smtp.wait_for(1)
    assert mail.subject == "[Service Alert][Redis for PCF] Service Backup Failed"
    assert "following error: exit status 1" in mail.text()
    assert len(hc.requests) == 2 and len(server.requests) == 1 and len(smtp.mails) == 1
    sent = [line["data"]["service"] for line in result.find("Sent apprise notification.")]
    assert sent == ["webhook (json)", "ops-mail (mailto)"]
    assert not result.find("error notifying run state"), result.stdout


def test_a_successful_run_with_every_state(
    tmp_path: Path, hc: HttpServer, server: HttpServer
) -> None:
    data = backup_data(
        tmp_path,
        healthchecks={"ping_url": ping_url(hc)},
        apprise={"services": [{"url": json_url(server)}], "states": ["start", "finish", "fail"]},
    )
    result = backup(tmp_path, data)

    assert result.returncode == 0, result.stderr
    assert [r.path for r in hc.wait_for(2)] == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}"]
    titles = [r.json()["title"] for r in server.wait_for(2)]
    assert titles == [
        "[Service Alert][service-backup] Service Backup Started",
        "[Service Alert][service-backup] Service Backup Succeeded",
    ]


def test_unreachable_notifiers_are_logged_and_change_nothing(tmp_path: Path) -> None:
    dead = free_port()
    data = backup_data(
        tmp_path,
        healthchecks={
            "ping_url": f"http://127.0.0.1:{dead}/ping/{PING_UUID}",
            "timeout_seconds": 1,
        },
        apprise={
            "services": [
                {"url": f"json://u:{JSON_PASSWORD}@127.0.0.1:{dead}/x"},
                {"url": f"mailtos://u:{SMTP_PASSWORD}@127.0.0.1:{dead}?to=a@example.com"},
            ],
            "states": ["finish"],
            "timeout_seconds": 5,
        },
    )
    result = backup(tmp_path, data)

    assert result.returncode == 0, "notifiers never fail a run"
    errors = [line["data"]["error"] for line in result.find("error notifying run state")]
    assert len(errors) == 3, errors  # healthchecks start, finish; apprise finish
    (apprise,) = [e for e in errors if e.startswith("apprise: ")]
    assert apprise.startswith("apprise: 2 of 2 services not notified: services[0] (json): ")
    assert "; services[1] (mailtos): " in apprise, apprise
    assert sum(e.startswith("healthchecks ") for e in errors) == 2, errors
    assert "Traceback" not in result.stderr
