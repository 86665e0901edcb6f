"""A dead man's switch: ping healthchecks.io (or a self-hosted instance) as a run goes.

borgmatic's ``healthchecks`` section, so its users feel at home::

    healthchecks:
      ping_url: https://hc-ping.com/<uuid>
      states: [start, finish, fail]      # default: all three
      timeout_seconds: 10                # default
      skip_ssl_validation: false         # default

A run that starts pings ``<ping_url>/start``, one that succeeds ``<ping_url>``, one that fails
``<ping_url>/fail`` with the error line as the POST body. Each ping carries ``rid=<backup
guid>`` so healthchecks pairs a start with its end even when runs overlap. The point of the
switch is that *silence* raises the alarm: if the VM or the daemon is gone, no ping arrives.

A ping is best effort and bounded: transient failures (refused or reset connections, time-outs,
5xx, 429) are retried with the core's back-off while ``timeout_seconds`` allow, and the whole
ping, retries included, runs in a worker thread the run waits for at most ``timeout_seconds``
(plus a moment), so even a server that trickles its answer byte by byte cannot hold a run up.
A ping that fails raises ``BackupError``; the core logs it as ``error notifying run state`` and
the run's outcome does not change.

The UUID in ``ping_url`` is a capability (anyone holding it can ping, or silence, the check),
so the URL is a ``Secret``: no log line, error or repr shows it. This module is loaded for every
run, ``validate`` and ``check``; it imports only attrs and the core's config helpers, urllib is
imported when a ping goes out.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Literal

import attrs

from service_backup.config import ConfigSection, required
from service_backup.errors import BackupError, one_line
from service_backup.hookspecs import hookimpl
from service_backup.secret import Secret, scrub

if TYPE_CHECKING:
    from service_backup.config import BackupConfig
    from service_backup.context import RunContext

SECTION = "healthchecks"
State = Literal["start", "finish", "fail"]
ALL_STATES: tuple[State, ...] = ("start", "finish", "fail")
#: Path suffix per state: success is the bare ping URL.
SUFFIX: dict[str, str] = {"start": "/start", "finish": "", "fail": "/fail"}
#: healthchecks.io stores at most 100 kB of a ping body; an error line is far shorter.
MAX_BODY = 10_000
#: How long the run waits past ``timeout_seconds`` for the worker to report before moving on.
GRACE_SECONDS = 0.5
USER_AGENT = "service-backup healthchecks"


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be a whole number of seconds above 0")


def _http_url(_: object, attribute: attrs.Attribute[Secret], value: Secret) -> None:
    """An http(s) URL with a host; the message never repeats the URL (it is a secret)."""
    from urllib.parse import urlsplit

    text = value.reveal().strip()
    if not text:
        return  # "required field missing" is reported by the core
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{attribute.name}: expected an http:// or https:// URL")


@attrs.frozen
class HealthchecksConfig:
    """The ``healthchecks`` section."""

    ping_url: Secret = required(validator=_http_url)  # noqa: RUF009 - an attrs field
    states: tuple[State, ...] = ALL_STATES
    timeout_seconds: int = attrs.field(default=10, validator=_positive)
    skip_ssl_validation: bool = False


class PingError(BackupError):
    """A ping that could not be delivered: one secret-free line."""


@hookimpl
def config_sections() -> list[ConfigSection]:
    return [ConfigSection(SECTION, HealthchecksConfig)]


@hookimpl
def run_state(config: BackupConfig, run: RunContext, state: str, error: str | None) -> None:
    settings: HealthchecksConfig | None = config.section(SECTION)
    if settings is None or state not in settings.states:
        return
    status = ping(settings, state, run_id=run.backup_guid, body=error or "")
    run.log.bind(state=state, status=status).debug("Healthchecks ping sent")


def ping_target(ping_url: str, state: str, run_id: str | None) -> str:
    """``<ping_url>[/start|/fail]`` with ``rid=<run_id>`` (healthchecks' run id) appended."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(ping_url.strip())
    path = parts.path.rstrip("/") + SUFFIX[state]
    query = parts.query
    if run_id:
        query = (query + "&" if query else "") + urlencode({"rid": run_id})
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def ping(settings: HealthchecksConfig, state: str, run_id: str | None, body: str = "") -> int:
    """Send one ping, retrying transient failures; return the HTTP status or raise PingError.

    Never takes longer than ``timeout_seconds`` plus ``GRACE_SECONDS``: the attempts run in a
    daemon thread; if it is still busy then, the run goes on and the thread ends at its own
    socket time-out.
    """
    secret = settings.ping_url.reveal()
    outcome: list[int | BaseException] = []
    worker = threading.Thread(
        target=_attempts,
        args=(settings, ping_target(secret, state, run_id), body, outcome),
        name=f"healthchecks-{state}",
        daemon=True,
    )
    worker.start()
    worker.join(settings.timeout_seconds + GRACE_SECONDS)
    if not outcome:
        raise PingError(f"healthchecks {state} ping: no answer within {settings.timeout_seconds} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        text = f"healthchecks {state} ping: {_describe(result)}"
        raise PingError(scrub(text, secret_parts(secret)))
    return result


def secret_parts(url: str) -> list[str]:
    """The URL and the pieces of it that carry the capability (path segments, password)."""
    from urllib.parse import unquote, urlsplit

    url = url.strip()
    parts = urlsplit(url)
    pieces = [url, url.rstrip("/"), parts.password or ""]
    pieces += [unquote(p) for p in parts.path.split("/") if len(p) >= 8]
    return [p for p in pieces if p]


def _attempts(
    settings: HealthchecksConfig, url: str, body: str, outcome: list[int | BaseException]
) -> None:
    from service_backup.backoff import retry

    started = time.monotonic()

    def attempt() -> int:
        left = settings.timeout_seconds - (time.monotonic() - started)
        return _send(url, body, max(left, 0.1), settings.skip_ssl_validation)

    try:
        outcome.append(
            retry(
                attempt,
                retryable=_transient,
                deadline=settings.timeout_seconds,
                first=0.5,
                cap=4.0,
            )
        )
    except BaseException as exc:  # handed to the waiting run, which reports it
        outcome.append(exc)


def _send(url: str, body: str, timeout: float, skip_ssl_validation: bool) -> int:
    """One POST (healthchecks accepts GET, HEAD and POST alike); the body is the error line."""
    import urllib.request

    from service_backup.tls import client_context

    context = client_context(skip_ssl_validation)
    data = body.encode("utf-8")[:MAX_BODY]
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked at load time
        url,
        data=data,
        method="POST",
        headers={"User-Agent": USER_AGENT, "Content-Type": "text/plain; charset=utf-8"},
    )
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=timeout) as response:
        response.read(MAX_BODY)
        return int(response.status)


def _transient(exc: BaseException) -> bool:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        import ssl

        return not isinstance(exc.reason, ssl.SSLError)
    return isinstance(exc, OSError | TimeoutError) or type(exc).__module__ == "http.client"


def _describe(exc: BaseException) -> str:
    """The reason without the URL: an HTTP status, or what the connection did."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        text = str(reason) if not isinstance(reason, BaseException) else _describe(reason)
        return one_line(text, 200)
    return one_line(f"{type(exc).__name__}: {exc}", 200)
