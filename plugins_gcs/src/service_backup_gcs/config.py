"""The ``gcs`` destination's config: the seed's keys plus a few optional ones.

``service_account_json`` is a credential file's text itself, as the BOSH manifest carries it:
any type google-auth loads (``service_account`` key, ``authorized_user``, ``external_account``
for workload identity federation, ...). It is loaded here, in memory, by google-auth's own
loader so that a bad one fails at validation (exit 2, field named) rather than at the first
backup hours later; it is never written to disk. Left empty, the destination uses
Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server of a
GCP VM / workload identity). Error messages name the field and what is wrong, never a value
from the document.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Final

import attrs

from service_backup.config import NO_SECRET, no_parent_segments, required
from service_backup.errors import one_line
from service_backup.secret import Secret, scrub
from service_backup.stall import DEFAULT_STALL_MIN_BYTES_PER_SECOND, DEFAULT_STALL_SECONDS

#: Fields google-auth needs to sign the JWT assertion and exchange it for a token.
KEY_FIELDS: Final = ("client_email", "private_key", "token_uri")
#: Credential types google-auth's loader knows (named in the error for any other).
CREDENTIAL_TYPES: Final = (
    "service_account",
    "authorized_user",
    "external_account",
    "external_account_authorized_user",
    "impersonated_service_account",
    "gdch_service_account",
)
#: Full control covers creating the bucket; the seed asks for the Storage Admin role anyway.
SCOPES: Final = ("https://www.googleapis.com/auth/devstorage.full_control",)
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


def parse_credential_json(text: str) -> dict[str, Any]:
    """The document as a dict, or ValueError saying what is wrong without quoting it.

    A document without ``type`` is a service account key (what the seed documented).
    """
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg/lineno/colno only: str(exc) is safe too, but the document must never leak.
        raise ValueError(
            f"service_account_json is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}); give the key file's contents as a YAML block string"
        ) from None
    if not isinstance(info, dict):
        raise ValueError("service_account_json must be a JSON object (a credential file)")
    kind = info.setdefault("type", "service_account")
    if kind not in CREDENTIAL_TYPES:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "something else"
        raise ValueError(
            f"service_account_json has type '{shown}', which google-auth does not load "
            f"(expected one of: {', '.join(CREDENTIAL_TYPES)})"
        )
    if kind == "service_account":
        missing = [f for f in KEY_FIELDS if not isinstance(info.get(f), str) or not info[f].strip()]
        if missing:
            raise ValueError(
                f"service_account_json has no {', '.join(missing)} "
                "(it must be a service account key file)"
            )
    return info


#: Fields that hold secrets in the credential types google-auth loads.
SECRET_FIELDS: Final = frozenset(
    {"private_key", "private_key_id", "client_secret", "refresh_token", "access_token"}
)


def secrets_in(text: str, info: dict[str, Any]) -> list[str]:
    """The document and its secret fields (at any depth): none may ever be echoed."""
    found = [text]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name in SECRET_FIELDS and isinstance(item, str) and item:
                    found.append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(info)
    return found


#: Fields whose values help an operator and are no secret (paths, URLs, names).
PUBLIC_FIELDS: Final = frozenset(
    {"type", "file", "url", "token_url", "token_uri", "audience", "subject_token_type",
     "client_email", "service_account_impersonation_url", "project_id"}
)  # fmt: skip


def _every_string(info: Any) -> list[str]:
    """Every value in the document but the public ones (what a loader message may quote)."""
    if isinstance(info, str):
        return [info] if len(info) >= 4 else []
    if isinstance(info, dict):
        return [
            s
            for name, item in info.items()
            if name not in PUBLIC_FIELDS
            for s in _every_string(item)
        ]
    if isinstance(info, list):
        return [s for item in info for s in _every_string(item)]
    return []


def _external_account(info: dict[str, Any]) -> Any:
    """google-auth's own loader for the external_account flavours, without its network call.

    ``load_credentials_from_dict`` also looks up the project (a token exchange and a
    Resource Manager call) for external accounts; validation must not touch the network, and
    the project is in the config anyway. The dispatch is google-auth's, in the same order.
    """
    source = info.get("credential_source")
    if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=SCOPES)
    if isinstance(source, dict) and source.get("executable") is not None:
        from google.auth import pluggable

        return pluggable.Credentials.from_info(info, scopes=SCOPES)
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=SCOPES)


def load_credential_json(text: str) -> tuple[Any, dict[str, Any]]:
    """google-auth's credentials for the document (and the parsed document), or ValueError.

    google-auth's own loader decides what is valid for each type; its reason is kept (it
    names fields), scrubbed of every value in the document.
    """
    info = parse_credential_json(text)
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        with warnings.catch_warnings():
            # Its advice about configs from untrusted sources: this one is the operator's.
            warnings.simplefilter("ignore")
            if info["type"] == "external_account":
                credentials = _external_account(info)
            else:
                credentials, _ = google.auth.load_credentials_from_dict(dict(info), scopes=SCOPES)
    except (ValueError, TypeError, KeyError, IndexError, auth_exceptions.GoogleAuthError) as exc:
        if info["type"] == "service_account":
            reason = "its private_key is not a valid PEM private key"
        else:
            cause: BaseException = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            # Its reasons name fields; no value of the document may follow them out.
            reason = one_line(scrub(str(cause), [text, *_every_string(info)]), 200)
        raise ValueError(
            f"service_account_json is not usable {info['type']} credentials: {reason}"
        ) from None
    return credentials, info


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

    project_id: str = required()
    bucket_name: str = required()
    #: Empty: Application Default Credentials.
    service_account_json: Secret = attrs.field(default=NO_SECRET)
    bucket_path: str = attrs.field(default="", converter=_bucket_path, validator=no_parent_segments)
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
    #: Stage a same-day re-run and promote it by server-side rewrite once complete, so that a
    #: failed re-run leaves the day's earlier complete run intact (costs a copy of every
    #: byte in the bucket, and delete rights; see docs/gcs.md).
    promote_by_copy: bool = False

    @service_account_json.validator
    def _check_service_account(self, attribute: attrs.Attribute, value: Secret) -> None:
        """Check the credential document at validation time (no network).

        Other types go through google-auth's own loader. A ``service_account`` key is checked
        for its fields and its PEM armour only; its key material is parsed when the destination
        opens (as the SCP key is), so a manifest rendered with a placeholder key, like the
        seed's example, validates, and ``validate`` does not pay for google-auth and RSA.
        """
        text = value.reveal()
        if not text.strip():
            return
        info = parse_credential_json(text)
        if info["type"] != "service_account":
            load_credential_json(text)
        elif not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", info["private_key"]):
            raise ValueError(
                "service_account_json is not usable service_account credentials: its "
                "private_key is not a PEM private key"
            )
