"""The ``config:`` mapping of a ``type: webdav`` destination.

The core builds this class from the operator's YAML with cattrs: unknown keys are refused,
``required()`` fields must be present and non-empty, and every problem is reported with its
full path (``destinations[0].config.url``). The password is a ``Secret``, so neither ``repr``
nor an error message can show it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

from service_backup.config import NO_SECRET, required
from service_backup.secret import Secret


def _check_url(_instance: Any, _attribute: Any, value: str) -> None:
    """Refuse URLs the destination cannot use, with a message that names the field.

    Credentials inside the URL are refused too: they would be printed wherever the URL is
    (log lines, errors), while ``password`` is kept out of all of them.
    """
    if not value.strip():
        return  # ``required()`` reports the empty field
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: expected http://host[:port]/path or https://..., got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: put the user name and password in username and password")
    if parts.query or parts.fragment:
        raise ValueError("url: a query (?...) or fragment (#...) is not allowed")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("url: the port is not a number between 1 and 65535") from None


def _check_timeout(_instance: Any, _attribute: Any, value: int) -> None:
    if value <= 0:
        raise ValueError("timeout_seconds: must be a positive number of seconds")


@attrs.frozen
class WebDAVConfig:
    """Where to write and how to log in.

    ``url`` is the collection backups go under (created if missing, with its parents),
    e.g. ``https://dav.example.com/remote.php/dav/files/backup/redis``.
    """

    url: str = required(validator=_check_url)
    username: str = ""
    password: Secret = NO_SECRET
    #: PEM text of a CA certificate to trust besides the system store (private CAs).
    ca_cert: str = ""
    #: Connect and read timeout of every request, so a dead server fails the run in bounded time.
    timeout_seconds: int = attrs.field(default=60, validator=_check_timeout)
