"""The healthchecks dead man's switch against a local server speaking its ping protocol."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service_backup.errors import ConfigError
from service_backup.secret import Secret
from service_backup_plugins.healthchecks import HealthchecksConfig, PingError, ping
from tests.alerts.cf_server import self_signed_certificate
from tests.faultproxy import fault_proxy
from tests.servers import free_port

from .conftest import PING_UUID, backup_data, errors_of, load, messages, ping_url, run
from .servers import HttpServer, http_server

PING_PATH = f"/ping/{PING_UUID}"


def test_a_successful_run_pings_start_then_success(
    server: HttpServer, tmp_path: Path, log_lines: list
) -> None:
    result = run(backup_data(tmp_path, healthchecks={"ping_url": ping_url(server)}))

    assert result.ok, result.error
    start, success = server.wait_for(2)
    assert (start.method, start.path) == ("POST", PING_PATH + "/start"), "start ping path"
    assert (success.method, success.path) == ("POST", PING_PATH), "success is the bare URL"
    assert start.query["rid"] == success.query["rid"] == result.backup_guid, (
        "both pings carry the run id, so healthchecks pairs them"
    )
    assert len(server.requests) == 2, f"exactly two pings, got {server.requests}"
    assert "error notifying run state" not in messages(log_lines)


def test_a_failed_run_pings_fail_with_the_error_line_as_body(
    server: HttpServer, tmp_path: Path, log_lines: list
) -> None:
    result = run(backup_data(tmp_path, succeed=False, healthchecks={"ping_url": ping_url(server)}))

    assert not result.ok
    start, fail = server.wait_for(2)
    assert start.path == PING_PATH + "/start"
    assert (fail.method, fail.path) == ("POST", PING_PATH + "/fail")
    assert fail.body.decode() == "exit status 1" == result.error, "the fail ping's body"
    assert len(server.requests) == 2, f"no success ping after a failure: {server.requests}"


def test_states_chooses_which_pings_go_out(server: HttpServer, tmp_path: Path) -> None:
    section = {"ping_url": ping_url(server) + "/", "states": ["fail"]}
    assert run(backup_data(tmp_path, healthchecks=section)).ok
    assert run(backup_data(tmp_path, succeed=False, healthchecks=section)).ok is False

    (only,) = server.wait_for(1)
    assert only.path == PING_PATH + "/fail", "a trailing slash on ping_url is harmless"
    assert len(server.requests) == 1, f"states: [fail] sends only fail pings: {server.requests}"


def test_a_5xx_is_retried_within_the_timeout(tmp_path: Path, log_lines: list) -> None:
    with http_server(statuses=[500, 503]) as flaky:
        result = run(
            backup_data(tmp_path, healthchecks={"ping_url": ping_url(flaky), "states": ["start"]})
        )
        requests = flaky.wait_for(3)

    assert result.ok
    assert [r.path for r in requests] == [PING_PATH + "/start"] * 3, "two retries, then success"
    assert "error notifying run state" not in messages(log_lines), "the retry succeeded"


def test_a_4xx_is_not_retried_and_is_logged_without_the_url(
    tmp_path: Path, log_lines: list
) -> None:
    with http_server(statuses=[404]) as wrong:
        section = {"ping_url": ping_url(wrong), "states": ["finish"]}
        result = run(backup_data(tmp_path, healthchecks=section))
        requests = list(wrong.requests)

    assert result.ok, "a failing ping never fails the run"
    assert len(requests) == 1, "a 404 (wrong UUID) is not worth retrying"
    (error,) = errors_of(log_lines, "error notifying run state")
    assert error == "healthchecks finish ping: HTTP 404 Not Found"
    assert PING_UUID not in str(log_lines)


def test_a_server_that_never_answers_does_not_hold_the_run_up(
    tmp_path: Path, log_lines: list
) -> None:
    with http_server(hang=True) as silent:
        section = {"ping_url": ping_url(silent), "timeout_seconds": 1}
        started = time.monotonic()
        result = run(backup_data(tmp_path, healthchecks=section))
        took = time.monotonic() - started
        assert silent.wait_for(2), "both pings reached the server"

    assert result.ok, "a silent healthchecks server never fails the run"
    assert took < 4.5, f"two pings of at most 1 s (+0.5 s grace) each, the run took {took:.1f} s"
    errors = errors_of(log_lines, "error notifying run state")
    assert len(errors) == 2, f"start and finish pings both reported: {errors}"
    assert all(e.startswith("healthchecks ") for e in errors), errors
    assert PING_UUID not in str(log_lines)


def test_a_closed_port_is_bounded_and_harmless(tmp_path: Path, log_lines: list) -> None:
    url = f"http://127.0.0.1:{free_port()}/ping/{PING_UUID}"
    section = {"ping_url": url, "timeout_seconds": 2, "states": ["fail"]}
    started = time.monotonic()
    result = run(backup_data(tmp_path, succeed=False, healthchecks=section))
    took = time.monotonic() - started

    assert result.error == "exit status 1", "the run keeps its own error"
    assert took < 4, f"retries stop within timeout_seconds (2 s), took {took:.1f} s"
    (error,) = errors_of(log_lines, "error notifying run state")
    assert error.startswith("healthchecks fail ping: ") and "refused" in error, error
    assert PING_UUID not in str(log_lines)


def test_ping_direct_returns_the_status_and_errors_name_no_url(server: HttpServer) -> None:
    settings = HealthchecksConfig(ping_url=Secret(ping_url(server)), timeout_seconds=2)
    assert ping(settings, "start", run_id=None) == 200
    (request,) = server.wait_for(1)
    assert request.query == {}, "no run id, no query"
    assert PING_UUID not in repr(settings), "the URL is a secret in repr"

    broken = HealthchecksConfig(
        ping_url=Secret(f"http://127.0.0.1:{free_port()}/{PING_UUID}"), timeout_seconds=1
    )
    with pytest.raises(PingError) as caught:
        ping(broken, "fail", run_id=None, body="x")
    assert PING_UUID not in str(caught.value)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"ping_url": "https://hc-ping.com/x", "pingurl": "y"},
            "healthchecks.pingurl: unknown key",
        ),
        ({}, "healthchecks.ping_url: required field missing"),
        ({"ping_url": f"ftp://hc-ping.com/{PING_UUID}"}, "healthchecks.ping_url: expected an"),
        (
            {"ping_url": "https://hc-ping.com/x", "states": ["start", "done"]},
            "healthchecks.states[1]: must be one of start, finish, fail",
        ),
        (
            {"ping_url": "https://hc-ping.com/x", "timeout_seconds": 0},
            "healthchecks.timeout_seconds: must be a whole number of seconds above 0",
        ),
        ("https://hc-ping.com/x", "healthchecks: expected a mapping of keys"),
    ],
)
def test_bad_sections_are_rejected_with_their_field_path(
    tmp_path: Path, section: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(backup_data(tmp_path, healthchecks=section))
    assert expected in str(caught.value)
    assert PING_UUID not in str(caught.value), "a rejected URL is not quoted back"


def test_defaults(tmp_path: Path) -> None:
    config, _ = load(backup_data(tmp_path, healthchecks={"ping_url": "https://hc-ping.com/u"}))
    section = config.section("healthchecks")
    assert section.states == ("start", "finish", "fail")
    assert section.timeout_seconds == 10
    assert section.skip_ssl_validation is False
    assert load(backup_data(tmp_path))[0].section("healthchecks") is None


def test_an_answer_trickling_in_is_cut_off_at_the_timeout(server: HttpServer) -> None:
    """Socket time-outs never fire on a byte every 0.2 s: the worker-thread bound does."""
    with fault_proxy(server.port, mode="trickle", interval=0.2) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/ping/{PING_UUID}"
        settings = HealthchecksConfig(ping_url=Secret(url), timeout_seconds=1)
        started = time.monotonic()
        with pytest.raises(PingError) as caught:
            ping(settings, "finish", run_id=None)
        took = time.monotonic() - started

    assert str(caught.value) == "healthchecks finish ping: no answer within 1 s"
    assert took < 2, f"bounded by timeout_seconds (1 s) + 0.5 s grace, took {took:.1f} s"
    assert server.wait_for(1), "the ping itself reached the server"


def test_a_self_signed_certificate_needs_skip_ssl_validation(tmp_path: Path) -> None:
    tls = self_signed_certificate(str(tmp_path))
    with http_server(tls=tls) as secure:
        url = f"{secure.url}/ping/{PING_UUID}"
        strict = HealthchecksConfig(ping_url=Secret(url), timeout_seconds=2)
        with pytest.raises(PingError) as caught:
            ping(strict, "start", run_id=None)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), "an untrusted certificate"
        assert secure.requests == [], "no request was sent over the untrusted connection"

        lax = HealthchecksConfig(ping_url=Secret(url), timeout_seconds=2, skip_ssl_validation=True)
        assert ping(lax, "start", run_id=None) == 200
        (request,) = secure.wait_for(1)
        assert request.path == f"/ping/{PING_UUID}/start"
