"""SDK and HTTP exceptions as one-line ``DestinationError``s naming the thing at fault.

The SDK's exceptions carry URLs, response bodies and nested causes; an operator needs the
bucket, object, token endpoint or GCS endpoint and the reason, with no key material (every
message is scrubbed of the credential's secrets as a last line of defence).
"""

from __future__ import annotations

import http
import re
from typing import Final

import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from service_backup import tls
from service_backup.errors import DestinationError, ObjectNotFound, one_line
from service_backup.secret import scrub

#: Statuses worth another attempt after a back-off (GCS's documented retry set).
RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
#: Failures of the connection itself (urllib3's own errors escape from a streamed body).
NETWORK_ERRORS: Final = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    urllib3.exceptions.HTTPError,
)
_METHOD_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD) \S+: ")


class Retryable(Exception):
    """A failed attempt worth repeating (a 308 that kept only part, a 5xx from our requests)."""


def status_of(exc: BaseException) -> int:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return int(exc.code or 0)
    if isinstance(exc, InvalidResponse):
        return int(getattr(getattr(exc, "response", None), "status_code", 0) or 0)
    return 0


def transient(exc: BaseException) -> bool:
    """Worth retrying: a network failure, a 408/429/5xx; never our own errors or a refused token."""
    if isinstance(exc, DestinationError | auth_exceptions.RefreshError):
        return False
    if tls.untrusted_reason(exc) is not None:
        return False  # a refused certificate is refused again on every attempt
    if isinstance(exc, Retryable | auth_exceptions.TransportError):
        return True
    if status_of(exc) in RETRYABLE_STATUS:
        return True
    return isinstance(exc, NETWORK_ERRORS)


class Translator:
    """Knows the bucket, endpoint, credentials and secrets that messages name or hide."""

    def __init__(
        self, bucket: str, endpoint: str, principal: str, token_uri: str, secrets: list[str]
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        #: Who the requests run as: "service account x@p.iam...", "Application Default ...".
        self.principal = principal
        self.token_uri = token_uri
        self.secrets = secrets

    def error(self, text: str, cls: type[DestinationError] = DestinationError) -> DestinationError:
        return cls(scrub(one_line(text, 600), self.secrets))

    def translate(
        self, exc: BaseException, what: str, *, missing: str | None = None
    ) -> DestinationError:
        """A DestinationError for ``exc`` raised while doing ``what``.

        A 404 is ``ObjectNotFound(missing)`` when ``missing`` is given (the call named an
        object), else it means the bucket is missing.
        """
        if isinstance(exc, DestinationError):
            return exc
        if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
            return self.translate(exc.cause, what, missing=missing)
        status = status_of(exc)
        if status == 404:
            if missing is not None:
                return self.error(missing, ObjectNotFound)
            return self.error(f"{what} failed: bucket {self.bucket} not found")
        if status == 403:
            return self.error(
                f"{what} failed: access denied to bucket {self.bucket} for {self.principal} "
                "(it needs the Storage Admin role)"
            )
        if status == 401:
            return self.error(f"{what} failed: GCS rejected the credentials of {self.principal}")
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            return self.error(f"{what} failed: {_api_reason(exc)}")
        if isinstance(exc, DataCorruption):
            return self.error(
                f"{what} failed: checksum mismatch, GCS stored different data than was sent"
            )
        if isinstance(exc, InvalidResponse):
            return self.error(f"{what} failed: unexpected HTTP {status} from GCS")
        if isinstance(exc, auth_exceptions.RefreshError):
            reason = exc.args[0] if exc.args else "refused"
            return self.error(
                f"{what} failed: the token endpoint {self.token_uri} refused "
                f"{self.principal}: {one_line(reason, 200)}"
            )
        untrusted = tls.untrusted_reason(exc)
        if untrusted is not None:
            token = isinstance(exc, auth_exceptions.TransportError)
            endpoint = f"the token endpoint {self.token_uri}" if token else self.endpoint
            return self.error(f"{what} failed: {tls.untrusted_message(endpoint, untrusted)}")
        if isinstance(exc, auth_exceptions.TransportError):
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
            return self.error(
                f"{what} failed: cannot reach the token endpoint {self.token_uri}: "
                f"{network_reason(cause)}"
            )
        if isinstance(exc, (*NETWORK_ERRORS, requests.RequestException)):
            return self.error(
                f"{what} failed: cannot reach GCS at {self.endpoint}: {network_reason(exc)}"
            )
        if isinstance(exc, Retryable):
            return self.error(f"{what} failed: {exc}")
        if isinstance(exc, auth_exceptions.GoogleAuthError):
            return self.error(f"{what} failed: credentials problem: {one_line(exc, 200)}")
        return self.error(f"{what} failed: {type(exc).__name__}: {one_line(exc, 200)}")


def network_reason(exc: BaseException) -> str:
    """'connection refused', 'timed out', ... from a requests/urllib3 exception chain."""
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not known"),
        ("Temporary failure in name resolution", "host name not resolvable"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("RemoteDisconnected", "connection closed by the server"),
    ):
        if marker in text:
            return reason
    return one_line(f"{type(exc).__name__}: {text}", 160)


def _api_reason(exc: api_exceptions.GoogleAPICallError) -> str:
    message = _METHOD_PREFIX.sub("", str(exc.message or "")).strip()
    code = int(exc.code or 0)
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    head = f"HTTP {code} {phrase}".strip()
    return one_line(f"{head}: {message}" if message and message != phrase else head)
