"""Secrets in the logs (issue item 9): encoded forms, short secrets, and lines plugins log.

Real processes: the ``backup`` CLI with a third-party destination plugin installed (a
distribution on PYTHONPATH with its entry point) that logs its own token on every write, and
the CF alerter against the fake CF whose UAA echoes the request back in its error body.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_backup.secret import REDACTED, Scrubber
from tests.alerts import cf_server
from tests.alerts.cf_server import CfServer
from tests.alerts.conftest import alerts_section

from .helpers import install_plugin, local_config, run_cli, write_config

LEAKY_PLUGIN = '''
"""A destination that logs its own token, in every form, on each successful write."""
import base64
import urllib.parse

import attrs
from loguru import logger

from service_backup.config import required
from service_backup.destination import DestinationType
from service_backup.hookspecs import hookimpl
from service_backup.secret import Secret
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import LocalDestination


@attrs.frozen
class LeakyConfig:
    path: str = required()
    client_id: str = "leaky-client"
    token: Secret = Secret("")


class LeakyDestination(LocalDestination):
    def __init__(self, config, context):
        super().__init__(LocalConfig(path=config.path), context)
        self.config = config

    def write(self, key, source):
        info = super().write(key, source)
        token = self.config.token.reveal()
        basic = base64.b64encode(f"{self.config.client_id}:{token}".encode()).decode()
        logger.info(f"wrote {key} with token {token}")
        logger.bind(echo=f"body=token%3D{urllib.parse.quote(token, safe='')}").info("echoed")
        logger.bind(headers={"Authorization": f"Basic {basic}"}).info("request headers")
        return info


@hookimpl
def destination_types():
    return [DestinationType("leaky", LeakyConfig, LeakyDestination, label="leaky")]
'''

TOKEN = "tok/en+with spaces&=-8c1d"  # URL-encoding changes every other character


@pytest.fixture
def leaky_plugin(tmp_path: Path) -> dict[str, str]:
    return install_plugin(tmp_path / "site", "leaky_destination", LEAKY_PLUGIN, "leaky")


def test_a_plugin_logging_its_own_secret_does_not_leak_it(
    tmp_path: Path, leaky_plugin: dict[str, str]
) -> None:
    data = local_config(tmp_path)
    data["destinations"] = [
        {"type": "leaky", "name": "leaky", "config": {"path": str(tmp_path / "d"), "token": TOKEN}}
    ]
    result = run_cli("backup", str(write_config(tmp_path / "b.yml", data)), env=leaky_plugin)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("wrote 2" in m for m in result.messages()), (
        "the plugin's own line is logged (scrubbed, not dropped)"
    )
    basic = base64.b64encode(f"leaky-client:{TOKEN}".encode()).decode()
    output = result.stdout + result.stderr
    for form in (TOKEN, urllib.parse.quote(TOKEN, safe=""), urllib.parse.quote_plus(TOKEN), basic):
        assert form not in output, f"{form!r} leaked: {output}"
    assert REDACTED in json.dumps(result.find("request headers")[0]["data"])
    assert (tmp_path / "d").exists(), "the upload itself still happened"


@pytest.fixture
def cf() -> Iterator[CfServer]:
    with cf_server.cf_server() as server:
        yield server


def test_uaa_echoing_the_request_leaks_no_encoded_password(tmp_path: Path, cf: CfServer) -> None:
    password = "p@ss w/rd+&%x=1"
    basic_cc = base64.b64encode(f"{cf_server.CC_USER}:{password}".encode()).decode()
    basic_client = base64.b64encode(
        f"{cf_server.CLIENT_ID}:{cf_server.CLIENT_SECRET}".encode()
    ).decode()
    echo = (
        f"bad request: grant_type=password&username={cf_server.CC_USER}"
        f"&password={urllib.parse.quote_plus(password)} (also {urllib.parse.quote(password)}); "
        f"Authorization: Basic {basic_cc}; Authorization: Basic {basic_client}"
    )
    cf.fail("POST", "/uaa/oauth/token", 400, body=echo.encode())
    alerts = alerts_section(cf, timeout_seconds=5)
    alerts["config"]["cloud_controller"]["password"] = password
    data = local_config(tmp_path, source_executable="false", alerts=alerts)
    result = run_cli("backup", str(write_config(tmp_path / "a.yml", data)))
    assert result.returncode == 1
    [line] = result.find("error sending service alert")
    assert "bad request" in line["data"]["error"], "the echo itself is still reported"
    output = result.stdout + result.stderr
    forms = [password, urllib.parse.quote_plus(password), urllib.parse.quote(password),
             basic_cc, basic_client, cf_server.CLIENT_SECRET]  # fmt: skip
    for form in forms:
        assert form not in output, f"{form!r} leaked: {line}"


@pytest.mark.parametrize("secret", ["x", "k9", "a"])
def test_short_secrets_are_scrubbed_only_as_whole_tokens(secret: str) -> None:
    scrub = Scrubber([secret])
    text = f"Upload backup completed: examples and max-{secret}-values; password={secret} ok"
    cleaned = scrub(text)
    assert cleaned.count(REDACTED) == 2, cleaned  # "-x-" and "=x", not every letter
    assert "examples" in cleaned and "completed" in cleaned, "words keep their letters"
    basic = base64.b64encode(f"cf:{secret}".encode()).decode()
    assert scrub(f"Authorization: Basic {basic}") == f"Authorization: Basic {REDACTED}"


def test_short_secret_in_a_real_run_does_not_redact_every_letter(
    tmp_path: Path, cf: CfServer
) -> None:
    alerts = alerts_section(cf, timeout_seconds=5)
    alerts["config"]["cloud_controller"]["password"] = "e"
    data = local_config(tmp_path, alerts=alerts)
    result = run_cli("backup", str(write_config(tmp_path / "s.yml", data)))
    assert result.returncode == 0, result.stdout
    assert "ServiceBackup.Upload backup completed successfully" in result.messages()
    assert REDACTED not in result.stdout, "a one-letter secret must not redact every 'e'"


def test_secret_lines_of_a_multi_line_key_are_scrubbed() -> None:
    key = "\n".join(
        [
            "-----BEGIN KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEF",
            "AASCBKcwggSjAgEAAoIBAQC7",
            "-----END KEY-----",
        ]
    )
    scrub = Scrubber([key])
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEF" not in scrub(
        "paramiko: bad line MIIEvQIBADANBgkqhkiG9w0BAQEF"
    )
