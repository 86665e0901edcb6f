"""Cloud Foundry lager-style JSON log lines, written by a loguru sink.

One JSON object per line on stdout (log monitors depend on the shape)::

    {"timestamp":"2026-11-26T12:00:00.123456000Z","source":"ServiceBackup",
     "message":"ServiceBackup.Upload backup started","log_level":"info","data":{...}}

Code logs through ``logger.bind(**data)``; the bound values become ``data`` and an
``identifier`` in them switches the prefix to ``ServiceBackup.WithIdentifier.``. Nothing else is
written to stdout by ``daemon`` and ``backup``.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
from typing import IO, Any, ClassVar

from loguru import logger

from .secret import LOG_SCRUBBER

SOURCE = "ServiceBackup"
_LEVELS = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info",
           "WARNING": "info", "ERROR": "error", "CRITICAL": "fatal"}  # fmt: skip


def _scrubbed(value: Any) -> Any:
    """Every string in a log value scrubbed of the registered secrets (before JSON escaping)."""
    if isinstance(value, str):
        return LOG_SCRUBBER(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return LOG_SCRUBBER(str(value))


def format_line(record: dict[str, Any]) -> str:
    """One lager-style JSON line; every string in it is scrubbed of the registered secrets.

    Scrubbing here, at the sink, covers what plugins and libraries log as well as the core's
    own lines: a secret that reaches a log call in any form never reaches stdout or syslog.
    """
    data = {
        k: _scrubbed(v)
        for k, v in record["extra"].items()
        if not k.startswith("_") and v is not None
    }
    prefix = f"{SOURCE}.WithIdentifier." if data.get("identifier") else f"{SOURCE}."
    ts = record["time"].astimezone(datetime.UTC)
    timestamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}000Z"
    return json.dumps(
        {
            "timestamp": timestamp,
            "source": SOURCE,
            "message": prefix + LOG_SCRUBBER(record["message"]),
            "log_level": _LEVELS.get(record["level"].name, "info"),
            "data": data,
        },
        default=str,
        ensure_ascii=False,
        separators=(",", ":"),
    )


class JsonSink:
    """Writes one JSON line per record to a stream, flushing each, safe across threads."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        line = format_line(message.record)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class SyslogSink:
    """The same JSON lines to the local syslog socket (the seed logs to files and syslog).

    Speaks RFC 3164 over the ``/dev/log`` datagram socket (or ``SERVICE_BACKUP_SYSLOG_SOCKET``).
    A missing or failing syslog never stops a backup: lines are dropped after one warning.
    """

    _SEVERITY: ClassVar[dict[str, int]] = {"debug": 7, "info": 6, "error": 3, "fatal": 2}
    _FACILITY_USER = 1

    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get("SERVICE_BACKUP_SYSLOG_SOCKET", "/dev/log")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._warned = False
        self._connect()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            self._warn(f"syslog socket {self.address} unavailable: {exc.strerror or exc}")
            return
        self._sock = sock

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"service-backup: {text}; not logging to syslog", file=sys.stderr)

    def __call__(self, message: Any) -> None:
        record = message.record
        level = _LEVELS.get(record["level"].name, "info")
        priority = self._FACILITY_USER * 8 + self._SEVERITY[level]
        payload = f"<{priority}>service-backup[{os.getpid()}]: {format_line(record)}".encode()
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.send(payload)
            except OSError as exc:
                self._warn(f"syslog send failed: {exc.strerror or exc}")


def configure(*, debug: bool = True, syslog: bool = False, stream: IO[str] | None = None) -> None:
    """Route all logging to the JSON sink (and syslog); called once by the CLI."""
    logger.remove()
    level = "DEBUG" if debug else "INFO"
    logger.add(JsonSink(stream or sys.stdout), level=level, format="{message}", catch=False)
    if syslog:
        logger.add(SyslogSink(), level=level, format="{message}", catch=True)


__all__ = ["JsonSink", "configure", "format_line", "logger"]
