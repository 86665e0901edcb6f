"""The apprise notifier against local servers: a json:// webhook and an SMTP server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service_backup.errors import ConfigError
from tests.servers import free_port

from .conftest import (
    JSON_PASSWORD,
    JSON_USER,
    SMTP_PASSWORD,
    SMTP_USER,
    backup_data,
    errors_of,
    json_url,
    load,
    mailto_url,
    run,
)
from .servers import HttpServer, SmtpServer, http_server

FAILED = "[Service Alert][service-backup] Service Backup Failed"


def services(*urls: str, **labels: str) -> list[dict[str, str]]:
    names = list(labels.values())
    return [
        {"url": url, **({"label": names[i]} if i < len(names) else {})}
        for i, url in enumerate(urls)
    ]


def assert_no_secret(text: str) -> None:
    for secret in (JSON_PASSWORD, SMTP_PASSWORD):
        assert secret not in text, "a service URL's password leaked"


def test_a_failed_run_posts_title_and_body_to_a_json_webhook(
    server: HttpServer, tmp_path: Path, log_lines: list, capfd: pytest.CaptureFixture[str]
) -> None:
    section = {"services": services(json_url(server), a="ops-webhook")}
    result = run(backup_data(tmp_path, succeed=False, apprise=section))

    assert result.error == "exit status 1"
    (request,) = server.wait_for(1)
    assert request.path == "/hooks/backup"
    assert request.basic_auth() == (JSON_USER, JSON_PASSWORD), "the webhook's credentials"
    body = request.json()
    assert body["title"] == FAILED
    assert body["type"] == "failure"
    text = body["message"]
    assert "A backup run has failed with the following error: exit status 1" in text
    assert "Service instance: instance-42" in text
    assert "Deployment: redis-prod" in text
    assert f"Backup run: {result.backup_guid}" in text
    assert "Time: 20" in text and text.rstrip().endswith("Z"), text
    sent = [line for line in log_lines if line["message"].endswith("Sent apprise notification.")]
    assert [line["data"]["service"] for line in sent] == ["ops-webhook (json)"]
    out, err = capfd.readouterr()
    assert_no_secret(out + err + str(log_lines))


def test_an_email_arrives_at_the_smtp_server(smtp: SmtpServer, tmp_path: Path) -> None:
    data = backup_data(
        tmp_path,
        succeed=False,
        alerts={"product_name": ""},
        apprise={"services": services(mailto_url(smtp), a="ops-mail")},
    )
    data["alerts"]["product_name"] = "Redis for PCF"
    data["alerts"]["config"] = {
        "cloud_controller": {"url": "http://127.0.0.1:1", "user": "u", "password": "p"},
        "notifications": {
            "service_url": "http://127.0.0.1:1",
            "cf_org": "o",
            "cf_space": "s",
            "client_id": "c",
            "client_secret": "cs",
        },
        "timeout_seconds": 1,
    }
    run(data)

    (mail,) = smtp.wait_for(1)
    assert smtp.logins == [(SMTP_USER, True)], "apprise logged in with the URL's credentials"
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.subject == "[Service Alert][Redis for PCF] Service Backup Failed", (
        "the title uses alerts.product_name when set"
    )
    lines = mail.text().splitlines()
    assert lines[:3] == [
        "Alert from Redis for PCF:",
        "",
        "A backup run has failed with the following error: exit status 1",
    ], "the e-mail keeps the body's lines"
    assert "Service instance: instance-42" in lines
    assert "Deployment: redis-prod" in lines


def test_states_default_to_fail_only(server: HttpServer, tmp_path: Path) -> None:
    section = {"services": services(json_url(server))}
    assert run(backup_data(tmp_path, apprise=section)).ok
    assert server.requests == [], "a successful run notifies nobody by default"

    section["states"] = ["start", "finish"]
    assert run(backup_data(tmp_path, apprise=section)).ok
    start, finish = server.wait_for(2)
    assert start.json()["title"] == "[Service Alert][service-backup] Service Backup Started"
    assert start.json()["type"] == "info"
    assert finish.json()["title"] == "[Service Alert][service-backup] Service Backup Succeeded"
    assert "A backup run has completed successfully." in finish.json()["message"]


def test_each_service_is_notified_on_its_own(
    server: HttpServer, tmp_path: Path, log_lines: list, capfd: pytest.CaptureFixture[str]
) -> None:
    closed = f"json://{JSON_USER}:{JSON_PASSWORD}@127.0.0.1:{free_port()}/dead"
    with http_server(statuses=[500]) as broken:
        section = {
            "services": [
                {"url": closed, "label": "dead-hook"},
                {"url": json_url(broken, "broken")},
                {"url": "nosuchscheme://token-abcdef123/x", "label": "typo"},
                {"url": json_url(server), "label": "good-hook"},
            ]
        }
        result = run(backup_data(tmp_path, succeed=False, apprise=section))
        assert broken.wait_for(1), "the 500 service was tried"

    assert result.error == "exit status 1", "the run keeps its own error"
    (delivered,) = server.wait_for(1)
    assert delivered.json()["title"] == FAILED, "later services are told despite earlier failures"
    (error,) = errors_of(log_lines, "error notifying run state")
    assert error.startswith("apprise: 3 of 4 services not notified: dead-hook (json): "), error
    assert "; services[1] (json): not delivered" in error, error
    assert "; typo (nosuchscheme): apprise does not understand this URL" in error, error
    assert "token-abcdef123" not in error
    assert "good-hook" not in error
    out, err = capfd.readouterr()
    everything = out + err + str(log_lines)
    assert_no_secret(everything)
    assert "token-abcdef123" not in everything
    assert "Failed to send" not in out + err, "apprise's own warnings are not printed"


def test_apprise_log_output_never_reaches_the_root_logger(tmp_path: Path) -> None:
    """apprise's log lines (which quote hosts, URLs and payloads) reach no handler of the app.

    A handler on the root logger at DEBUG stands for an embedding application that configured
    logging (pytest's own capture handlers are attached to non-propagating loggers too, so
    caplog cannot tell).
    """
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    closed = f"json://{JSON_USER}:{JSON_PASSWORD}@127.0.0.1:{free_port()}/dead-token-path"
    try:
        run(backup_data(tmp_path, succeed=False, apprise={"services": services(closed)}))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    leaked = [r.getMessage() for r in records if r.name.startswith("apprise")]
    assert leaked == [], f"apprise logged through the root logger: {leaked}"
    assert logging.getLogger("apprise").getEffectiveLevel() == logging.WARNING


def test_a_service_that_never_answers_is_bounded(tmp_path: Path, log_lines: list) -> None:
    with http_server(hang=True) as silent:
        section = {"services": services(json_url(silent)), "timeout_seconds": 1}
        started = time.monotonic()
        result = run(backup_data(tmp_path, succeed=False, apprise=section))
        took = time.monotonic() - started
        assert silent.wait_for(1), "the webhook was called"

    assert result.error == "exit status 1"
    assert took < 5, f"timeout_seconds (1 s) bounds the notification, the run took {took:.1f} s"
    (error,) = errors_of(log_lines, "error notifying run state")
    assert (
        error == "apprise: 1 of 1 services not notified: services[0] (json): no answer within 1 s"
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"services": [{"url": "json://h/x", "lable": "x"}]},
            "apprise.services[0].lable: unknown key",
        ),
        ({"services": [{"url": "json://h/x"}], "extra": 1}, "apprise.extra: unknown key"),
        ({"services": [{"label": "x"}]}, "apprise.services[0].url: required field missing"),
        ({"services": [{"url": "slack/T000/B000/XXXX"}]}, "apprise.services[0].url: expected an"),
        ({"services": []}, "apprise.services: list at least one service"),
        ({"services": [{"url": "json://h/x"}], "states": ["fial"]}, "apprise.states[0]: must be"),
        ({"services": [{"url": "json://h/x"}], "timeout_seconds": -1}, "apprise.timeout_seconds:"),
    ],
)
def test_bad_sections_are_rejected_with_their_field_path(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(backup_data(tmp_path, apprise=section))
    assert expected in str(caught.value)
    assert "T000/B000/XXXX" not in str(caught.value), "a rejected URL is not quoted back"


def test_urls_are_secret_in_repr(tmp_path: Path, server: HttpServer) -> None:
    config, _ = load(backup_data(tmp_path, apprise={"services": services(json_url(server))}))
    assert JSON_PASSWORD not in repr(config.section("apprise"))
    assert config.section("apprise").states == ("fail",)


def test_apprise_is_imported_only_when_a_notification_goes_out() -> None:
    code = (
        "import sys, service_backup_apprise;"
        "from service_backup.plugins import load_registry; load_registry();"
        "print('apprise' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", "registering the plugin must not import apprise"


def test_validate_knows_the_sections(tmp_path: Path) -> None:
    """``service-backup validate`` loads hook plugins, so their sections are checked."""
    from tests.core.cli import run_cli, write_config

    path = write_config(
        tmp_path / "backup.yml",
        backup_data(tmp_path, apprise={"services": [{"url": "json://h/x", "oops": 1}]}),
    )
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "apprise.services[0].oops: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_apprise_trusts_the_os_store_not_certifi(tmp_path: Path, monkeypatch: Any) -> None:
    """apprise posts through requests, which reads only REQUESTS_CA_BUNDLE: it is pointed at
    the store OpenSSL uses (where BOSH installs trusted_certs), and an operator's value wins."""
    from service_backup_apprise.send import _trust_the_os_store

    bundle = tmp_path / "os-store.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    _trust_the_os_store()
    assert os.environ["REQUESTS_CA_BUNDLE"] == str(bundle), "apprise would trust certifi only"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/operator/choice.pem")
    _trust_the_os_store()
    assert os.environ["REQUESTS_CA_BUNDLE"] == "/operator/choice.pem"
