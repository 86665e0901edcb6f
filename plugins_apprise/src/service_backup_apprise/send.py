"""Handing a message to apprise, one service at a time, without letting a URL out.

Each service gets its own ``apprise.Apprise`` object and its own worker thread, which the run
waits for at most ``timeout_seconds``: a Slack outage cannot stop the e-mail, and a service
that never answers cannot hold the run up. Failures are collected and raised together as one
secret-free ``NotifyError`` after every service was tried; the core logs it as ``error
notifying run state`` without changing the run's outcome.

apprise logs through the standard ``logging`` module, and its messages can quote a host, a
user or a token. Nothing configures ``logging`` in service-backup, so Python's last-resort
handler would print apprise's warnings on stderr: the ``apprise`` logger is detached from the
root logger here (``propagate = False``, level WARNING: its debug lines quote URLs and
payloads) and its warnings go to a collector instead, whose last message, with every piece of
every service URL scrubbed out, explains a failure.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from service_backup.errors import BackupError, one_line
from service_backup.secret import scrub

from .config import AppriseConfig, AppriseService
from .message import Message

APP_ID = "service-backup"
#: How long the run waits past ``timeout_seconds`` for a worker to report before moving on.
GRACE_SECONDS = 0.5
#: Scrubbing pieces shorter than this would mangle messages without protecting anything.
MIN_PIECE = 3


class NotifyError(BackupError):
    """Some services could not be told; one secret-free line naming them by label."""


class _Collector(logging.Handler):
    """Keeps apprise's warnings of the service being notified (not printed anywhere)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break a notification
            text = str(record.msg)
        with self._guard:
            self.messages.append(text)
            del self.messages[:-20]

    def take(self) -> list[str]:
        with self._guard:
            taken, self.messages = self.messages, []
        return taken


_COLLECTOR = _Collector()


def _capture_apprise_logs() -> _Collector:
    """Route the ``apprise`` logger to the collector only (idempotent, process-wide)."""
    apprise_logger = logging.getLogger("apprise")
    apprise_logger.propagate = False
    apprise_logger.setLevel(logging.WARNING)  # its debug lines quote URLs and payloads
    if _COLLECTOR not in apprise_logger.handlers:
        apprise_logger.addHandler(_COLLECTOR)
    return _COLLECTOR


def secret_pieces(services: tuple[AppriseService, ...]) -> list[str]:
    """Every part of every service URL that could identify or unlock it."""
    pieces: list[str] = []
    for service in services:
        url = service.url.reveal().strip()
        pieces += [url, unquote(url)]
        try:
            parts = urlsplit(url)
            netloc = parts.netloc.rpartition("@")
            pieces += [netloc[0], netloc[2], parts.hostname or ""]
            pieces += [parts.username or "", parts.password or ""]
            pieces += parts.path.split("/")
            pieces += [value for _, value in parse_qsl(parts.query)]
        except ValueError:
            pass
        pieces += [unquote(piece) for piece in pieces]
    return [piece for piece in set(pieces) if len(piece.strip()) >= MIN_PIECE]


def _trust_the_os_store() -> None:
    """apprise posts with ``requests`` (``verify=True``), which trusts certifi's list unless
    ``REQUESTS_CA_BUNDLE`` names a file: point it at the OS store (where BOSH installs
    ``trusted_certs``), as the destination plugins do, unless the operator set it."""
    from service_backup.tls import system_ca_bundle

    bundle = system_ca_bundle()
    if bundle and not os.environ.get("REQUESTS_CA_BUNDLE"):
        os.environ["REQUESTS_CA_BUNDLE"] = bundle


def notify_all(settings: AppriseConfig, message: Message, log: Any) -> None:
    """Tell every service; raise NotifyError naming those that could not be told."""
    collector = _capture_apprise_logs()  # before the import: apprise logs while loading
    _trust_the_os_store()
    import apprise  # the heavy import, only when a notification goes out

    secrets = secret_pieces(settings.services)
    failures: list[str] = []
    for name, service in zip(settings.names(), settings.services, strict=True):
        collector.take()
        problem = _notify_one(apprise, service, message, settings.timeout_seconds)
        if problem is None:
            log.bind(service=name).info("Sent apprise notification.")
            continue
        said = collector.take()
        if said and problem == "not delivered":
            problem = f"not delivered: {said[-1]}"
        failures.append(f"{name}: {scrub(one_line(problem, 300), secrets)}")
    if failures:
        total = len(settings.services)
        raise NotifyError(
            f"apprise: {len(failures)} of {total} services not notified: " + "; ".join(failures)
        )


def _notify_one(
    apprise: Any, service: AppriseService, message: Message, timeout: int
) -> str | None:
    """None when delivered, else what went wrong (may still hold URL pieces: scrub it)."""
    outcome: list[str | None] = []

    def deliver() -> None:
        try:
            notifier = apprise.Apprise(asset=apprise.AppriseAsset(app_id=APP_ID))
            if not notifier.add(service.url.reveal().strip()):
                outcome.append("apprise does not understand this URL (unknown scheme or fields)")
                return
            delivered = notifier.notify(
                body=message.body,
                title=message.title,
                notify_type=message.notify_type,
                body_format="text",  # plain lines: e-mail must not fold them into one
            )
            outcome.append(None if delivered else "not delivered")
        except Exception as exc:  # apprise's or a service plugin's bug: tell it, go on
            outcome.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=deliver, name="apprise-notify", daemon=True)
    worker.start()
    worker.join(timeout + GRACE_SECONDS)
    if not outcome:
        return f"no answer within {timeout} s"
    return outcome[0]
