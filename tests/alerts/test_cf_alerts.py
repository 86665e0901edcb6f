"""The Cloud Foundry notifications alerter against a local CC / UAA / notifications server.

Hook-level tests go through the core's alert dispatch (``service_backup.run._alert``), so what
is asserted about log lines is what the daemon prints. Retry tests call the client with a
virtual clock: the requests are real, only the back-off waits are counted instead of slept.
"""

from __future__ import annotations

import base64
import datetime
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from service_backup.errors import ConfigError
from service_backup.plugins import load_registry
from service_backup.run import _alert
from service_backup_plugins.cf_client import AlertError, send_service_alert

from . import cf_server
from .cf_server import CfServer
from .conftest import (
    PRODUCT,
    REPLY_TO,
    ROOT,
    VirtualClock,
    alerts_section,
    backup_config,
    make_run,
    messages,
)

ERROR = "exit status 1"
FIXED_NOW = datetime.datetime(2026, 11, 26, 12, 34, 56, 789000, tzinfo=datetime.UTC)
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def fire(config: Any, identifier: str | None = "instance-42", error: str = ERROR) -> None:
    """What the core does for a failed run: call every alerter, log a failure once."""
    _alert(config, make_run(config, identifier), load_registry(), error)


def send(server: CfServer, clock: VirtualClock, **config: Any) -> None:
    alerts = backup_config(alerts_section(server, **config)).alerts
    assert alerts is not None
    send_service_alert(alerts, identifier="instance-42", error=ERROR, clock=clock, now=FIXED_NOW)


def assert_no_secrets(server: CfServer, *texts: str) -> None:
    secrets = {cf_server.CC_PASSWORD, cf_server.CLIENT_SECRET, *server.issued_tokens()}
    for text in texts:
        for secret in secrets:
            assert secret not in text


def route(server: CfServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.requests]


FULL_ROUTE = [  # a foundation with CC API v3 (v2 may or may not be there)
    "GET /cc/",
    "POST /uaa/oauth/token",
    "GET /cc/v3/organizations",
    "GET /cc/v3/spaces",
    "POST /uaa/oauth/token",
    f"POST /notifications/spaces/{cf_server.SPACE_GUID}",
]
V2_ROUTE = [  # an older foundation: no v3 root, so v2/info and v2 queries
    "GET /cc/",
    "GET /cc/v2/info",
    "POST /uaa/oauth/token",
    "GET /cc/v2/organizations",
    f"GET /cc/v2/organizations/{cf_server.ORG_GUID}/spaces",
    "POST /uaa/oauth/token",
    f"POST /notifications/spaces/{cf_server.SPACE_GUID}",
]


# --- the whole conversation -------------------------------------------------------------


def test_full_sequence_headers_and_bodies(cf: CfServer, clock: VirtualClock) -> None:
    send(cf, clock)

    assert route(cf) == FULL_ROUTE
    info, cc_token, orgs, spaces, client_token, notify = cf.requests
    for request in cf.requests:
        assert request.headers["accept"] == "application/json"

    assert info.headers.get("authorization") is None

    assert cc_token.headers["authorization"] == "Basic " + base64.b64encode(b"cf:").decode()
    assert cc_token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert cc_token.form() == {
        "grant_type": "password",
        "username": cf_server.CC_USER,
        "password": cf_server.CC_PASSWORD,
    }

    (issued_cc_token,) = cf.cc_tokens
    assert orgs.query == {"names": [cf_server.ORG]}
    assert orgs.headers["authorization"] == f"Bearer {issued_cc_token}"
    assert spaces.query == {
        "names": [cf_server.SPACE],
        "organization_guids": [cf_server.ORG_GUID],
    }
    assert spaces.headers["authorization"] == f"Bearer {issued_cc_token}"

    client_basic = f"{cf_server.CLIENT_ID}:{cf_server.CLIENT_SECRET}".encode()
    assert (
        client_token.headers["authorization"] == "Basic " + base64.b64encode(client_basic).decode()
    )
    assert client_token.form() == {"grant_type": "client_credentials"}

    (issued_notify_token,) = cf.notification_tokens
    assert notify.headers["authorization"] == f"Bearer {issued_notify_token}"
    assert notify.headers["x-notifications-version"] == "1"
    assert notify.headers["content-type"] == "application/json"
    assert notify.json() == {
        "kind_id": "service-alerts",
        "subject": f"[Service Alert][{PRODUCT}] Service Backup Failed",
        "text": (
            f"Alert from {PRODUCT}, service instance instance-42:\n\n"
            f"A backup run has failed with the following error: {ERROR}\n\n"
            "[Alert generated at 2026-11-26T12:34:56Z]"
        ),
        "reply_to": REPLY_TO,
    }
    assert clock.waits == []


def test_hook_sends_one_alert_and_logs_sending_and_sent(cf: CfServer, log_lines: list) -> None:
    fire(backup_config(alerts_section(cf)))

    assert route(cf) == FULL_ROUTE
    (notification,) = cf.notifications()
    text = notification.json()["text"]
    assert re.fullmatch(
        rf"Alert from {PRODUCT}, service instance instance-42:\n\n"
        rf"A backup run has failed with the following error: {ERROR}\n\n"
        rf"\[Alert generated at {RFC3339}\]",
        text,
    ), text
    generated = datetime.datetime.fromisoformat(text[-21:-1])
    assert abs(generated - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)

    assert messages(log_lines) == ["Sending alert.", "Sent alert."]
    for line in log_lines:
        assert line["message"].startswith("ServiceBackup.WithIdentifier.")
        assert line["data"]["backup_guid"] and line["data"]["identifier"] == "instance-42"
    assert_no_secrets(cf, repr(log_lines))


def test_without_identifier_and_reply_to(cf: CfServer, log_lines: list) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["notifications"]["reply_to"] = ""
    fire(backup_config(alerts), identifier=None)

    (notification,) = cf.notifications()
    body = notification.json()
    assert "reply_to" not in body
    assert body["text"].startswith(f"Alert from {PRODUCT}:\n\nA backup run has failed")
    assert messages(log_lines) == ["Sending alert.", "Sent alert."]
    assert log_lines[0]["message"] == "ServiceBackup.Sending alert."


def test_settings_indented_under_notifications_are_honoured(
    cf: CfServer, certificate: tuple[str, str], log_lines: list
) -> None:
    """The seed's manifest template puts timeout/skip_ssl_validation under notifications."""
    with cf_server.cf_server(tls=certificate) as tls:
        alerts = alerts_section(tls)
        alerts["config"].pop("skip_ssl_validation")
        alerts["config"]["notifications"]["skip_ssl_validation"] = True
        fire(backup_config(alerts))
        assert len(tls.notifications()) == 1
    assert messages(log_lines)[-1] == "Sent alert."


# --- not configured -----------------------------------------------------------------------


def test_no_alerts_section_sends_nothing(cf: CfServer, log_lines: list) -> None:
    fire(backup_config(None))

    assert cf.requests == []
    assert messages(log_lines) == ["Alerts not configured."]
    assert log_lines[0]["log_level"] == "info"


def test_empty_product_name_sends_nothing(cf: CfServer, log_lines: list) -> None:
    fire(backup_config({**alerts_section(cf), "product_name": ""}))

    assert cf.requests == []
    assert messages(log_lines) == ["Alerts not configured."]


def test_incomplete_alerts_section_is_rejected_by_validation(cf: CfServer) -> None:
    """Missing alert fields are a config error up front, not a surprise when a run fails."""
    alerts = alerts_section(cf)
    alerts["config"]["cloud_controller"]["url"] = ""
    del alerts["config"]["notifications"]["client_secret"]
    with pytest.raises(ConfigError) as info:
        backup_config(alerts)
    assert "alerts.config.cloud_controller.url: required field missing" in str(info.value)
    assert "alerts.config.notifications.client_secret: required field missing" in str(info.value)
    assert cf.requests == []


# --- retries ------------------------------------------------------------------------------


def test_500_twice_then_200_is_delivered(cf: CfServer, clock: VirtualClock) -> None:
    cf.fail("POST", "/notifications/spaces/", 500, times=2, body=b"database is down")
    send(cf, clock)

    assert route(cf) == FULL_ROUTE[:-1] + [FULL_ROUTE[-1]] * 3
    assert clock.waits == [1.0, 2.0]
    assert len(cf.notifications()) == 3


def test_retry_is_logged_at_debug_and_delivery_still_logged_once(
    cf: CfServer, log_lines: list
) -> None:
    cf.fail("GET", "/cc/", 502, times=1, exact=True)
    fire(backup_config(alerts_section(cf)))

    assert messages(log_lines) == [
        "Sending alert.",
        "Alert request failed, retrying",
        "Sent alert.",
    ]
    retry = log_lines[1]
    assert retry["log_level"] == "debug"
    assert "returned 502" in retry["data"]["error"]
    assert retry["data"]["retry_in_seconds"] == 1.0
    assert len(cf.notifications()) == 1


def test_router_unknown_route_404_is_retried(cf: CfServer, clock: VirtualClock) -> None:
    cf.fail("POST", "/uaa/oauth/token", 404, times=2, headers={"X-Cf-Routererror": "unknown_route"})
    send(cf, clock)

    assert clock.waits == [1.0, 2.0]
    assert len(cf.notifications()) == 1


def test_other_404_fails_at_once_with_status_and_body(cf: CfServer, clock: VirtualClock) -> None:
    cf.fail("GET", "/cc/v3/organizations", 404, body=b'{"error_code":"CF-NotFound"}')
    with pytest.raises(AlertError) as caught:
        send(cf, clock)

    assert clock.waits == []
    assert route(cf) == FULL_ROUTE[:3]
    message = str(caught.value)
    assert "returned 404" in message and "CF-NotFound" in message
    assert f"CF org '{cf_server.ORG}'" in message


def test_back_off_doubles_to_16s_and_stops_at_the_timeout(
    cf: CfServer, clock: VirtualClock
) -> None:
    cf.fail("GET", "/cc/", 503, body=b"maintenance", exact=True)
    with pytest.raises(AlertError) as caught:
        send(cf, clock, timeout_seconds=60)

    # 1+2+4+8+16+16 = 47 s, then the last wait is cut to the 13 s left, one final attempt.
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 13.0]
    assert route(cf) == ["GET /cc/"] * 8
    message = str(caught.value)
    assert "gave up after 8 attempts" in message
    assert "timeout_seconds 60" in message and "returned 503: maintenance" in message


def test_always_500_gives_up_within_timeout_seconds(cf: CfServer, log_lines: list) -> None:
    """Real time: ``timeout_seconds: 3`` is honoured by the hook as configured."""
    cf.fail("GET", "/cc/", 500, body=b"internal error", exact=True)
    started = time.monotonic()
    fire(backup_config(alerts_section(cf, timeout_seconds=3)))
    elapsed = time.monotonic() - started

    assert 2.9 <= elapsed < 5.0, elapsed
    assert route(cf) == ["GET /cc/"] * 3  # at 0 s, 1 s and 3 s
    assert cf.notifications() == []
    final = [line for line in log_lines if line["log_level"] == "error"]
    assert len(final) == 1 and final[0]["message"].endswith("error sending service alert")
    assert "gave up after 3 attempts" in final[0]["data"]["error"]
    assert "returned 500: internal error" in final[0]["data"]["error"]
    assert "Sent alert." not in messages(log_lines)


def test_unreachable_cloud_controller_is_retried_until_the_timeout(clock: VirtualClock) -> None:
    with cf_server.cf_server() as gone:
        pass  # a port that just closed: connections are refused
    with pytest.raises(AlertError) as caught:
        send(gone, clock, timeout_seconds=5)

    assert clock.waits == [1.0, 2.0, 2.0]
    assert "Connection refused" in str(caught.value)
    assert "gave up after 4 attempts" in str(caught.value)


# --- failures that are not retried ----------------------------------------------------------


def test_unknown_org(cf: CfServer, log_lines: list) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["notifications"]["cf_org"] = "no-such-org"
    fire(backup_config(alerts))

    assert route(cf) == FULL_ROUTE[:3]
    assert messages(log_lines) == ["Sending alert.", "error sending service alert"]
    assert log_lines[-1]["data"]["error"] == "CF org 'no-such-org' not found"
    assert log_lines[-1]["log_level"] == "error"


def test_unknown_space(cf: CfServer, log_lines: list) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["notifications"]["cf_space"] = "no-such-space"
    fire(backup_config(alerts))

    assert route(cf) == FULL_ROUTE[:4]
    assert messages(log_lines) == ["Sending alert.", "error sending service alert"]
    assert log_lines[-1]["data"]["error"] == (
        f"CF space 'no-such-space' not found in org '{cf_server.ORG}'"
    )


def test_uaa_401_fails_at_once_without_leaking_the_password(cf: CfServer, log_lines: list) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["cloud_controller"]["password"] = "wrong-password-77"
    started = time.monotonic()
    fire(backup_config(alerts))

    assert time.monotonic() - started < 2
    assert route(cf) == FULL_ROUTE[:2]
    error = log_lines[-1]["data"]["error"]
    assert messages(log_lines) == ["Sending alert.", "error sending service alert"]
    assert f"UAA token for Cloud Controller user '{cf_server.CC_USER}'" in error
    assert "returned 401" in error and "Bad credentials" in error
    assert "wrong-password-77" not in repr(log_lines)
    assert_no_secrets(cf, repr(log_lines))


def test_wrong_notifications_client_secret(cf: CfServer, log_lines: list) -> None:
    alerts = alerts_section(cf)
    alerts["config"]["notifications"]["client_secret"] = "not-the-secret-88"
    fire(backup_config(alerts))

    assert route(cf) == FULL_ROUTE[:5]
    error = log_lines[-1]["data"]["error"]
    assert f"UAA token for notifications client '{cf_server.CLIENT_ID}'" in error
    assert "returned 401" in error
    assert "not-the-secret-88" not in repr(log_lines)
    assert_no_secrets(cf, repr(log_lines))


def test_echoed_secret_in_an_error_body_is_scrubbed(cf: CfServer, clock: VirtualClock) -> None:
    cf.fail("POST", "/uaa/oauth/token", 400, body=f"bad form {cf_server.CC_PASSWORD}".encode())
    with pytest.raises(AlertError) as caught:
        send(cf, clock)

    assert cf_server.CC_PASSWORD not in str(caught.value)
    assert "bad form <redacted>" in str(caught.value)


# --- Cloud Controller API versions ------------------------------------------------------


@pytest.mark.parametrize(
    ("apis", "expected"),
    [(frozenset({"v3"}), FULL_ROUTE), (frozenset({"v2"}), V2_ROUTE)],
    ids=["v3-only", "v2-only"],
)
def test_v3_is_used_when_present_and_v2_is_the_fallback(
    cf: CfServer, clock: VirtualClock, apis: frozenset[str], expected: list[str]
) -> None:
    cf.apis = apis
    send(cf, clock)
    assert route(cf) == expected, f"CC with {sorted(apis)}: wrong endpoints used"
    assert len(cf.notifications()) == 1, "the alert was not delivered"
    (space_lookup,) = [r for r in cf.requests if "spaces" in r.path and r.method == "GET"]
    if "v3" in apis:
        assert space_lookup.query["organization_guids"] == [cf_server.ORG_GUID]
    else:
        assert space_lookup.query == {"q": [f"name:{cf_server.SPACE}"]}


def test_v3_org_missing_is_named(cf: CfServer, clock: VirtualClock) -> None:
    cf.apis = frozenset({"v3"})
    cf.orgs = {}
    with pytest.raises(AlertError, match=f"CF org '{cf_server.ORG}' not found"):
        send(cf, clock)


# --- TLS ------------------------------------------------------------------------------------


def test_self_signed_server_is_refused_when_validating(cf_tls: CfServer, log_lines: list) -> None:
    started = time.monotonic()
    fire(backup_config(alerts_section(cf_tls, skip_ssl_validation=False, timeout_seconds=30)))

    assert time.monotonic() - started < 5  # not retried: a certificate does not heal
    assert cf_tls.requests == []
    assert messages(log_lines) == ["Sending alert.", "error sending service alert"]
    error = log_lines[-1]["data"]["error"]
    assert cf_tls.cc_url + "/" in error
    assert "TLS certificate not trusted" in error and "self-signed certificate" in error
    assert "skip_ssl_validation" in error


def test_self_signed_server_is_accepted_when_skipping_validation(
    cf_tls: CfServer, log_lines: list
) -> None:
    fire(backup_config(alerts_section(cf_tls, skip_ssl_validation=True)))

    assert route(cf_tls) == FULL_ROUTE
    assert messages(log_lines) == ["Sending alert.", "Sent alert."]


# --- packaging ------------------------------------------------------------------------------


def test_registered_as_a_hook_plugin() -> None:
    registry = load_registry()
    plugin = registry.pm.get_plugin("service_backup.hooks:cf_notifications")
    assert plugin is not None and plugin.__name__ == "service_backup_plugins.cf_alerts"
    assert plugin in [impl.plugin for impl in registry.hook.alert.get_hookimpls()]


def test_importing_the_alerter_does_not_load_the_http_stack() -> None:
    """It is imported on every run; the HTTP/TLS modules load only when an alert goes out."""
    code = (
        "import sys, service_backup.hookspecs, service_backup.config;"
        "before = set(sys.modules);"
        "import service_backup_plugins.cf_alerts;"
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = out.stdout
    assert "cf_alerts" in loaded
    for heavy in ("urllib.request", "http.client", "ssl", "service_backup_plugins.cf_client"):
        assert f"'{heavy}'" not in loaded, loaded


def test_a_server_that_never_answers_fails_within_the_timeout(log_lines: list) -> None:
    """Accepted by the kernel, never answered: the socket timeout is the remaining budget."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        alerts = alerts_section(cf_server.CfServer(base_url=url), timeout_seconds=2)
        started = time.monotonic()
        fire(backup_config(alerts))
        elapsed = time.monotonic() - started

    assert elapsed < 4.0, elapsed
    assert messages(log_lines) == ["Sending alert.", "error sending service alert"]
    assert "timed out" in log_lines[-1]["data"]["error"]
