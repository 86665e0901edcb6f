"""Fixtures for the Cloud Foundry notifications alerter: the fake CF, configs, runs, logs."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from service_backup.config import BackupConfig, parse_config
from service_backup.context import RunContext
from service_backup.logs import format_line
from service_backup.plugins import load_registry
from service_backup.processes import ProcessManager
from tests.clock import VirtualClock

from . import cf_server
from .cf_server import CfServer

PRODUCT = "Redis for PCF"
REPLY_TO = "ops@example.com"


@pytest.fixture
def cf() -> Iterator[CfServer]:
    with cf_server.cf_server() as server:
        yield server


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return cf_server.self_signed_certificate(str(tmp_path_factory.mktemp("cf-tls")))


@pytest.fixture
def cf_tls(certificate: tuple[str, str]) -> Iterator[CfServer]:
    with cf_server.cf_server(tls=certificate) as server:
        yield server


def alerts_section(server: CfServer, **config: Any) -> dict[str, Any]:
    """The ``alerts`` mapping of backup.yml, as an operator writes it, pointing at ``server``."""
    return {
        "product_name": PRODUCT,
        "config": {
            "cloud_controller": {
                "url": server.cc_url,
                "user": cf_server.CC_USER,
                "password": cf_server.CC_PASSWORD,
            },
            "notifications": {
                "service_url": server.notifications_url,
                "cf_org": cf_server.ORG,
                "cf_space": cf_server.SPACE,
                "reply_to": REPLY_TO,
                "client_id": cf_server.CLIENT_ID,
                "client_secret": cf_server.CLIENT_SECRET,
            },
            "timeout_seconds": 10,
            "skip_ssl_validation": False,
            **config,
        },
    }


def backup_config(alerts: dict[str, Any] | None) -> BackupConfig:
    """Through the core's real config parsing, so the tests see what the daemon sees."""
    data: dict[str, Any] = {} if alerts is None else {"alerts": alerts}
    return parse_config(data, load_registry(hook_plugins=False))


def make_run(config: BackupConfig, identifier: str | None = "instance-42") -> RunContext:
    guid = "11111111-2222-3333-4444-555555555555"
    log = logger.bind(backup_guid=guid)
    if identifier:
        log = log.bind(identifier=identifier)
    return RunContext(
        config=config,
        backup_guid=guid,
        started_at=datetime.datetime.now().astimezone(),
        processes=ProcessManager(),
        log=log,
        identifier=identifier,
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line as the daemon would print it (parsed JSON), debug included."""
    lines: list[dict[str, Any]] = []
    sink = logger.add(
        lambda message: lines.append(json.loads(format_line(message.record))),
        level="DEBUG",
        format="{message}",
    )
    yield lines
    logger.remove(sink)


def messages(lines: list[dict[str, Any]]) -> list[str]:
    return [line["message"].split(".", 1)[1].removeprefix("WithIdentifier.") for line in lines]


ROOT = Path(__file__).resolve().parents[2]
