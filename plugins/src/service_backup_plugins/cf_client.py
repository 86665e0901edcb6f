"""The HTTP conversation behind a Cloud Foundry service alert (standard library only).

The protocol is the Go release's service-alerts client, on Cloud Controller API v3 where the
foundation has it (newer foundations disable v2), on v2 otherwise:

1. ``GET <cc>/`` → ``links.uaa`` and ``links.cloud_controller_v3``; when the root is missing
   (404) or names no v3 API: ``GET <cc>/v2/info`` → ``token_endpoint`` (the UAA), and v2 below.
2. ``POST <uaa>/oauth/token`` password grant for the CC user, basic auth ``cf:``.
3. v3 ``GET <cc>/v3/organizations?names=<org>`` (v2 ``/v2/organizations?q=name:<org>``).
4. v3 ``GET <cc>/v3/spaces?names=<space>&organization_guids=<org guid>``
   (v2 ``/v2/organizations/<org guid>/spaces?q=name:<space>``).
5. ``POST <uaa>/oauth/token`` client-credentials grant for the notifications client.
6. ``POST <notifications>/spaces/<space guid>`` with ``X-NOTIFICATIONS-VERSION: 1``.

Every request shares one deadline, ``timeout_seconds`` after the alert started. A 5xx answer,
a CF router ``404`` with ``X-Cf-Routererror: unknown_route`` (the app is being restaged) and a
connection that fails or times out are retried with exponential back-off (1 s, doubling, capped
at 16 s) until the deadline: the last wait is cut short so that one final attempt happens right
at the deadline, whose socket timeout is ``MIN_REQUEST_TIMEOUT``; so the alert gives up within
``timeout_seconds`` plus about a second. Any other 4xx, an untrusted TLS certificate, or an
unknown org or space fails at once. The loop is the core's ``backoff.retry`` (with
``final_at_deadline``), run on the conversation's clock so that tests can count the waits.

Besides the core, only the standard library is used, and this module is imported only when an
alert goes out, so the daemon pays nothing for it on successful runs.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from service_backup.backoff import retry
from service_backup.config import AlertsConfig, AlertsSettings
from service_backup.errors import BackupError, one_line
from service_backup.secret import scrub
from service_backup.tls import client_context

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 16.0
MIN_REQUEST_TIMEOUT = 1.0
MAX_BODY = 64 * 1024
SNIPPET = 300
KIND_ID = "service-alerts"
USER_AGENT = "service-backup cf-notifications-alerter"


class AlertError(BackupError):
    """The alert could not be delivered; the message is one secret-free line."""


class Clock(Protocol):
    """Time as the retry loop sees it; tests pass a virtual one to check the back-off."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@attrs.frozen
class Response:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower()) or ""


def _headers(message: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in (message.items() if message else ())}


class _Absent(Exception):
    """A 404 where the caller accepts that the endpoint does not exist (the v3 root)."""


class _Fatal(Exception):
    """A transport failure that retrying cannot fix (an untrusted certificate)."""


class _Transient(Exception):
    """A failure worth another attempt (5xx, router 404, connection); the text says which."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the Authorization header to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def retryable(response: Response) -> bool:
    if response.status >= 500:
        return True
    return (
        response.status == 404
        and response.header("X-Cf-Routererror").strip().lower() == "unknown_route"
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


class Conversation:
    """One alert's requests: a shared deadline, retries, and errors scrubbed of secrets."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        skip_ssl_validation: bool,
        secrets: list[str],
        clock: Clock | None = None,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self.monotonic = clock.monotonic if clock is not None else time.monotonic
        self.sleep = clock.sleep if clock is not None else None
        self.timeout_seconds = timeout_seconds
        self.started = self.monotonic()
        self.deadline = self.started + timeout_seconds
        self.skip_ssl_validation = skip_ssl_validation
        self.secrets = list(secrets)
        self.on_retry = on_retry
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=client_context(skip_ssl_validation)),
            _NoRedirects(),
        )

    def remember_secret(self, value: str) -> None:
        self.secrets.append(value)

    def clean(self, text: str) -> str:
        return scrub(text, self.secrets)

    def fail(self, what: str, problem: str) -> AlertError:
        return AlertError(self.clean(f"{what}: {one_line(problem, 2 * SNIPPET)}"))

    def _attempt(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        timeout = max(MIN_REQUEST_TIMEOUT, self.deadline - self.monotonic())
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise _Fatal("invalid URL (expected http:// or https://)")
        try:
            request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
        except ValueError as exc:
            raise _Fatal(f"invalid URL ({exc})") from None
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                return Response(answer.status, _headers(answer.headers), answer.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                data = exc.read(MAX_BODY) if exc.fp is not None else b""
            return Response(exc.code, _headers(exc.headers), data)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise _Fatal(
                    f"TLS certificate not trusted ({reason.verify_message or reason}); "
                    "set skip_ssl_validation: true to accept it"
                ) from None
            if isinstance(reason, ssl.SSLError):
                raise _Fatal(f"TLS handshake failed ({reason})") from None
            if isinstance(reason, OSError) and reason.strerror:
                raise OSError(reason.strerror) from None
            raise OSError(str(reason)) from None
        except (http.client.HTTPException, ssl.SSLError) as exc:
            raise OSError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    def call(
        self,
        what: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        missing_ok: bool = False,
    ) -> Response:
        """One request, retried while the failure is transient and the budget lasts.

        With ``missing_ok`` a plain 404 raises ``_Absent`` for the caller to fall back.
        """
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        attempts = 0

        def attempt() -> Response:
            nonlocal attempts
            attempts += 1
            try:
                response = self._attempt(method, url, headers, body)
            except _Fatal as exc:
                raise self.fail(what, f"{method} {url}: {exc}") from None
            except OSError as exc:
                raise _Transient(f"{method} {url} failed: {exc.strerror or exc}") from None
            if 200 <= response.status < 300:
                return response
            if missing_ok and response.status == 404 and not retryable(response):
                raise _Absent(url)
            text = response.body.decode("utf-8", "replace")
            problem = f"{method} {url} returned {response.status}: {one_line(text) or '-'}"
            if not retryable(response):
                raise self.fail(what, problem)
            raise _Transient(problem)

        def on_retry(exc: BaseException, wait: float) -> None:
            if self.on_retry is not None:
                self.on_retry(self.clean(f"{what}: {exc}"), wait)

        try:
            return retry(
                attempt,
                retryable=lambda exc: isinstance(exc, _Transient),
                deadline=self.deadline - self.monotonic(),
                first=INITIAL_BACKOFF,
                cap=MAX_BACKOFF,
                final_at_deadline=True,
                on_retry=on_retry,
                clock=self.monotonic,
                sleep=self.sleep,
            )
        except _Transient as exc:
            raise self.fail(
                what,
                f"gave up after {attempts} attempt{'s' if attempts > 1 else ''} in "
                f"{self.monotonic() - self.started:.1f}s "
                f"(timeout_seconds {self.timeout_seconds:g}); last: {exc}",
            ) from None

    def json(self, what: str, response: Response, url: str) -> Any:
        try:
            return json.loads(response.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self.fail(what, f"{url} did not answer with JSON") from None

    def token(self, what: str, uaa: str, basic: str, form: dict[str, str]) -> str:
        url = _join(uaa, "/oauth/token")
        response = self.call(
            what,
            "POST",
            url,
            {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
            urllib.parse.urlencode(form).encode("ascii"),
        )
        document = self.json(what, response, url)
        token = document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise self.fail(what, f"{url} answered without an access_token")
        self.remember_secret(token)
        return token

    def first_guid(self, what: str, url: str, bearer: str, missing: str) -> str:
        """The GUID of the first resource: ``guid`` (v3) or ``metadata.guid`` (v2)."""
        response = self.call(what, "GET", url, {"Authorization": f"Bearer {bearer}"})
        document = self.json(what, response, url)
        resources = document.get("resources") if isinstance(document, dict) else None
        if not resources:
            raise AlertError(self.clean(missing))
        try:
            first = resources[0]
            guid = first["guid"] if "guid" in first else first["metadata"]["guid"]
        except (KeyError, TypeError, IndexError):
            guid = None
        if not isinstance(guid, str) or not guid:
            raise self.fail(what, f"{url} answered without a guid")
        return guid

    def endpoints(self, cc_url: str) -> tuple[str, bool]:
        """(UAA URL, whether the CC speaks v3), from the v3 root or, failing that, v2/info."""
        what = "getting the UAA address from the Cloud Controller"
        root_url = _join(cc_url, "/")
        try:
            root = self.json(what, self.call(what, "GET", root_url, {}, missing_ok=True), root_url)
        except _Absent:
            root = None
        links = root.get("links") if isinstance(root, dict) else None
        links = links if isinstance(links, dict) else {}
        v3 = isinstance(links.get("cloud_controller_v3"), dict)
        uaa = (links.get("uaa") or {}).get("href") if isinstance(links.get("uaa"), dict) else None
        if v3 and isinstance(uaa, str) and uaa:
            return uaa, True
        info_url = _join(cc_url, "/v2/info")
        info = self.json(what, self.call(what, "GET", info_url, {}), info_url)
        uaa = info.get("token_endpoint") if isinstance(info, dict) else None
        if not isinstance(uaa, str) or not uaa:
            raise self.fail(what, f"{info_url} answered without a token_endpoint")
        return uaa, False


@attrs.frozen
class Notification:
    subject: str
    text: str
    reply_to: str = ""

    def payload(self) -> dict[str, str]:
        body = {"kind_id": KIND_ID, "subject": self.subject, "text": self.text}
        if self.reply_to:
            body["reply_to"] = self.reply_to
        return body


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compose(
    product: str, identifier: str | None, error: str, reply_to: str, at: datetime.datetime
) -> Notification:
    """The Go release's subject and text, word for word."""
    who = f"{product}, service instance {identifier}" if identifier else product
    text = (
        f"Alert from {who}:\n\n"
        f"A backup run has failed with the following error: {error}\n\n"
        f"[Alert generated at {rfc3339(at)}]"
    )
    return Notification(f"[Service Alert][{product}] Service Backup Failed", text, reply_to)


def _missing_fields(settings: AlertsSettings) -> list[str]:
    cc, notifications = settings.cloud_controller, settings.notifications
    fields = {
        "cloud_controller.url": cc.url,
        "cloud_controller.user": cc.user,
        "cloud_controller.password": cc.password.reveal(),
        "notifications.service_url": notifications.service_url,
        "notifications.cf_org": notifications.cf_org,
        "notifications.cf_space": notifications.cf_space,
        "notifications.client_id": notifications.client_id,
        "notifications.client_secret": notifications.client_secret.reveal(),
    }
    return [f"alerts.config.{name}" for name, value in fields.items() if not value.strip()]


def send_service_alert(
    alerts: AlertsConfig,
    *,
    identifier: str | None,
    error: str,
    log: Any = None,
    clock: Clock | None = None,
    now: datetime.datetime | None = None,
) -> None:
    """Deliver one alert or raise ``AlertError`` saying which step failed and why."""
    settings = alerts.config
    missing = _missing_fields(settings)
    if missing:
        raise AlertError(f"alerts are not fully configured: missing {', '.join(missing)}")
    cc, notify = settings.cloud_controller, settings.notifications
    password, client_secret = cc.password.reveal(), notify.client_secret.reveal()

    def on_retry(problem: str, delay: float) -> None:
        if log is not None:
            log.bind(error=problem, retry_in_seconds=delay).debug("Alert request failed, retrying")

    talk = Conversation(
        timeout_seconds=settings.effective_timeout_seconds,
        skip_ssl_validation=settings.effective_skip_ssl_validation,
        secrets=[password, client_secret],
        clock=clock,
        on_retry=on_retry,
    )
    message = compose(
        alerts.product_name.strip(),
        identifier,
        error,
        notify.reply_to.strip(),
        now or datetime.datetime.now(datetime.UTC),
    )

    uaa, v3 = talk.endpoints(cc.url)
    cc_token = talk.token(
        f"UAA token for Cloud Controller user '{cc.user}'",
        uaa,
        _basic("cf", ""),
        {"grant_type": "password", "username": cc.user, "password": password},
    )
    if v3:
        org_url = _join(cc.url, "/v3/organizations?") + urllib.parse.urlencode(
            {"names": notify.cf_org}
        )
    else:
        org_url = _join(cc.url, "/v2/organizations?") + urllib.parse.urlencode(
            {"q": f"name:{notify.cf_org}"}
        )
    org_guid = talk.first_guid(
        f"looking up CF org '{notify.cf_org}'",
        org_url,
        cc_token,
        f"CF org '{notify.cf_org}' not found",
    )
    if v3:
        space_url = _join(cc.url, "/v3/spaces?") + urllib.parse.urlencode(
            {"names": notify.cf_space, "organization_guids": org_guid}
        )
    else:
        space_url = _join(
            cc.url, f"/v2/organizations/{urllib.parse.quote(org_guid, safe='')}/spaces?"
        ) + urllib.parse.urlencode({"q": f"name:{notify.cf_space}"})
    space_guid = talk.first_guid(
        f"looking up CF space '{notify.cf_space}'",
        space_url,
        cc_token,
        f"CF space '{notify.cf_space}' not found in org '{notify.cf_org}'",
    )
    notify_token = talk.token(
        f"UAA token for notifications client '{notify.client_id}'",
        uaa,
        _basic(notify.client_id, client_secret),
        {"grant_type": "client_credentials"},
    )
    talk.call(
        f"sending the notification to CF space '{notify.cf_space}'",
        "POST",
        _join(notify.service_url, f"/spaces/{urllib.parse.quote(space_guid, safe='')}"),
        {
            "Authorization": f"Bearer {notify_token}",
            "Content-Type": "application/json",
            "X-NOTIFICATIONS-VERSION": "1",
        },
        json.dumps(message.payload()).encode("utf-8"),
    )
