"""The Cloud Foundry notifications alerter: tells a CF space that a backup run failed.

The seed's "Sending an Alert When a Backup Fails": when the optional ``alerts`` section is
configured, a failed run sends an e-mail to the SpaceDevelopers of ``cf_space`` through the
Cloud Foundry Notifications Service. Without an ``alerts`` section, or with an empty
``product_name``, nothing is sent and ``Alerts not configured.`` is logged (the v18.4.0 fix).

This module is loaded on every run (entry-point group ``service_backup.hooks``), so it imports
nothing heavy: the HTTP/TLS conversation lives in ``cf_client`` and is imported only when an
alert actually goes out.

A failed alert raises ``AlertError``; the core logs it once as ``error sending service alert``
(with ``data.error`` = the reason, secrets scrubbed) and the run still reports its own error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service_backup.hookspecs import hookimpl

if TYPE_CHECKING:
    from service_backup.config import AlertsConfig, BackupConfig
    from service_backup.context import RunContext


def configured(alerts: AlertsConfig | None) -> bool:
    """An ``alerts`` section with a product name; anything less means "do not alert"."""
    return alerts is not None and bool(alerts.product_name.strip())


@hookimpl
def alert(config: BackupConfig, run: RunContext, error: str) -> None:
    alerts = config.alerts
    if alerts is None or not configured(alerts):
        run.log.info("Alerts not configured.")
        return
    run.log.info("Sending alert.")
    from .cf_client import send_service_alert  # the stdlib HTTP/TLS stack, only when needed

    send_service_alert(alerts, identifier=run.identifier, error=error, log=run.log)
    run.log.info("Sent alert.")
