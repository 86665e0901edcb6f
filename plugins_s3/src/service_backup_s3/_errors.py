"""Turning botocore/s3transfer exceptions into one readable line.

The destination adds what was being done to which bucket or key; this module only says what
went wrong, from S3's error code and message (never the request, never a credential).
"""

from __future__ import annotations

import http
import urllib.parse

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from service_backup import tls
from service_backup.errors import one_line

#: Codes meaning the key or bucket is absent, as S3 (body) or a HEAD (status only) reports it.
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
#: Codes meaning the credentials themselves were refused (as opposed to lacking a permission).
BAD_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "InvalidToken"}
)
ACCESS_DENIED_CODES = frozenset({"403", "AccessDenied", "AllAccessDisabled", "Forbidden"})


def error_code(exc: BaseException) -> str:
    """S3's error code (``NoSuchKey``, ``AccessDenied``, ``404`` for a HEAD), or ``""``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or status_of(exc) or "")
    return ""


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def reason(exc: BaseException) -> str:
    """What went wrong, in one line: ``AccessDenied: Access Denied``, ``cannot connect ...``."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "")
        message = one_line(err.get("Message") or "")
        status = status_of(exc)
        if code.isdigit() and not message:
            # A HEAD answer has no body: S3 gives nothing but the status.
            try:
                message = http.HTTPStatus(int(code)).phrase
            except ValueError:
                message = "error"
            return f"HTTP {code} {message}"
        if not message and status:
            message = f"HTTP {status}"
        return f"{code}: {message}" if message else code or "unknown S3 error"
    if isinstance(exc, SSLError):
        untrusted = tls.untrusted_reason(exc)
        if untrusted is not None:
            url = urllib.parse.urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
            endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "the S3 endpoint"
            return tls.untrusted_message(endpoint, untrusted)
        return f"TLS verification failed: {one_line(exc)}"
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError):
        return f"cannot connect: {one_line(exc)}"
    if isinstance(exc, ReadTimeoutError):
        return f"no answer in time: {one_line(exc)}"
    if isinstance(exc, BotoCoreError):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"
