"""What a notification says: the CF alert's title format, with the state, and a body that
tells an operator which instance, which deployment, what went wrong and when."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from service_backup.config import BackupConfig
    from service_backup.context import RunContext

DEFAULT_PRODUCT = "service-backup"
OUTCOME = {"start": "Started", "finish": "Succeeded", "fail": "Failed"}
#: apprise's notify types (``apprise.NotifyType`` values), so chat services colour the message.
NOTIFY_TYPE = {"start": "info", "finish": "success", "fail": "failure"}


@attrs.frozen
class Message:
    title: str
    body: str
    notify_type: str


def product_name(config: BackupConfig) -> str:
    """The ``alerts.product_name`` operators already set for CF alerts, else service-backup."""
    name = config.alerts.product_name.strip() if config.alerts is not None else ""
    return name or DEFAULT_PRODUCT


def compose(
    config: BackupConfig,
    run: RunContext,
    state: str,
    error: str | None,
    at: datetime.datetime | None = None,
) -> Message:
    product = product_name(config)
    moment = (at or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    what = {
        "start": "A backup run has started.",
        "finish": "A backup run has completed successfully.",
        "fail": f"A backup run has failed with the following error: {error or '-'}",
    }[state]
    lines = [
        f"Alert from {product}:",
        "",
        what,
        "",
        f"Service instance: {run.identifier or '-'}",
        f"Deployment: {config.deployment_name.strip() or '-'}",
        f"Backup run: {run.backup_guid}",
        f"Time: {moment.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    return Message(
        title=f"[Service Alert][{product}] Service Backup {OUTCOME[state]}",
        body="\n".join(lines),
        notify_type=NOTIFY_TYPE[state],
    )
