"""The ``gcs`` destination's config: the seed's three keys plus a few optional ones.

``service_account_json`` is the key file's text itself, as the BOSH manifest carries it. It is
parsed here, in memory, only to fail at validation time (exit 2, field named) rather than at
the first backup hours later; it is never written to disk. Error messages name the field and
what is missing, never a value from the document.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from service_backup.config import required
from service_backup.secret import Secret
from service_backup.stall import DEFAULT_STALL_MIN_BYTES_PER_SECOND, DEFAULT_STALL_SECONDS

#: Fields google-auth needs to sign the JWT assertion and exchange it for a token.
KEY_FIELDS: Final = ("client_email", "private_key", "token_uri")
STORAGE_CLASSES: Final = (
    "STANDARD",
    "NEARLINE",
    "COLDLINE",
    "ARCHIVE",
    "MULTI_REGIONAL",
    "REGIONAL",
    "DURABLE_REDUCED_AVAILABILITY",
)
DEFAULT_LOCATION: Final = "US"
DEFAULT_STORAGE_CLASS: Final = "STANDARD"


def parse_service_account(text: str) -> dict[str, Any]:
    """The key document as a dict, or ValueError saying what is wrong without quoting it."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg/lineno/colno only: str(exc) is safe too, but the document must never leak.
        raise ValueError(
            f"service_account_json is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}); give the key file's contents as a YAML block string"
        ) from None
    if not isinstance(info, dict):
        raise ValueError(
            "service_account_json must be a JSON object (the service account's key file)"
        )
    kind = info.get("type", "service_account")
    if kind != "service_account":
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "something else"
        raise ValueError(
            f"service_account_json has type '{shown}', expected 'service_account' "
            "(create a key with: gcloud iam service-accounts keys create)"
        )
    missing = [f for f in KEY_FIELDS if not isinstance(info.get(f), str) or not info[f].strip()]
    if missing:
        raise ValueError(
            f"service_account_json has no {', '.join(missing)} "
            "(it must be a service account key file)"
        )
    return info


def _location(value: str) -> str:
    return value.strip() or DEFAULT_LOCATION


def _bucket_path(value: str) -> str:
    return value.strip().strip("/")


def _endpoint(value: str) -> str:
    return value.strip().rstrip("/")


def _storage_class(value: str) -> str:
    return value.strip().upper().replace("-", "_") or DEFAULT_STORAGE_CLASS


def _check_storage_class(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in STORAGE_CLASSES:
        raise ValueError(f"storage_class must be one of {', '.join(STORAGE_CLASSES)}")


def _check_endpoint(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("endpoint must be a URL starting with http:// or https://")


def _positive(name: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: float) -> None:
        if not value > 0:
            raise ValueError(f"{name} must be a number of seconds above 0")

    return check


def _not_negative(name: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"{name} must be 0 or more")

    return check


@attrs.frozen
class GCSConfig:
    """One ``type: gcs`` destination.

    ``endpoint`` points the client at an emulator or a private endpoint; when empty, the
    ``STORAGE_EMULATOR_HOST`` environment variable is honoured as google-cloud-storage does,
    and otherwise Google's public endpoint is used.
    """

    service_account_json: Secret = required()  # noqa: RUF009 - an attrs field
    project_id: str = required()
    bucket_name: str = required()
    bucket_path: str = attrs.field(default="", converter=_bucket_path)
    location: str = attrs.field(default=DEFAULT_LOCATION, converter=_location)
    storage_class: str = attrs.field(
        default=DEFAULT_STORAGE_CLASS, converter=_storage_class, validator=_check_storage_class
    )
    endpoint: str = attrs.field(default="", converter=_endpoint, validator=_check_endpoint)
    #: A transfer slower than the floor for this long is cut (like curl's --speed-time).
    stall_timeout_seconds: float = attrs.field(
        default=DEFAULT_STALL_SECONDS, validator=_positive("stall_timeout_seconds")
    )
    #: The floor (like curl's --speed-limit); 0 leaves only shutdown to abort a transfer.
    stall_min_bytes_per_second: float = attrs.field(
        default=DEFAULT_STALL_MIN_BYTES_PER_SECOND,
        validator=_not_negative("stall_min_bytes_per_second"),
    )

    @service_account_json.validator
    def _check_service_account(self, attribute: attrs.Attribute, value: Secret) -> None:
        """Parse the key at validation time; an empty value is reported by ``required()``."""
        if value.reveal().strip():
            parse_service_account(value.reveal())
