"""The credentials a destination runs as: the configured JSON, or Application Default ones.

``service_account_json`` is loaded in memory by google-auth (nothing is written to disk). When
it is empty, ``google.auth.default`` finds the credentials the platform provides: the key
file ``GOOGLE_APPLICATION_CREDENTIALS`` names, gcloud's user credentials, or the metadata
server of a GCP VM (its service account, or a GKE workload identity).
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import google.auth
from google.auth import compute_engine
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions

from service_backup.errors import DestinationError, one_line

from .config import SCOPES, load_credential_json, secrets_in


@attrs.frozen
class Found:
    credentials: auth_credentials.Credentials
    #: Who requests run as, for error messages.
    principal: str
    #: Where tokens come from, for error messages.
    token_uri: str
    #: Values no message may contain.
    secrets: list[str]


def load_credentials(config: Any) -> Found:
    text = config.service_account_json.reveal()
    if text.strip():
        try:
            credentials, info = load_credential_json(text)
        except ValueError as exc:
            raise DestinationError(str(exc)) from None
        return Found(
            credentials=credentials,
            principal=_principal(credentials, info),
            token_uri=_token_uri(credentials),
            secrets=secrets_in(text, info),
        )
    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except auth_exceptions.GoogleAuthError as exc:
        raise DestinationError(
            "service_account_json is empty and no Application Default Credentials were found "
            "(set GOOGLE_APPLICATION_CREDENTIALS to a key file, or run on a GCP VM or GKE pod "
            f"with a service account): {one_line(exc, 200)}"
        ) from None
    source = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    where = f"GOOGLE_APPLICATION_CREDENTIALS {source}" if source else "the platform"
    if isinstance(credentials, compute_engine.Credentials):
        where = "the metadata server"
    return Found(
        credentials=credentials,
        principal=f"Application Default Credentials from {where}" + _account_suffix(credentials),
        token_uri=_token_uri(credentials),
        secrets=[],
    )


def _principal(credentials: Any, info: dict[str, Any]) -> str:
    kind = info["type"]
    if kind == "service_account":
        return f"the service account {info['client_email']}"
    return f"the {kind} credentials in service_account_json" + _account_suffix(credentials)


def _account_suffix(credentials: Any) -> str:
    email = getattr(credentials, "service_account_email", None)
    return f" ({email})" if isinstance(email, str) and "@" in email else ""


def _token_uri(credentials: Any) -> str:
    if isinstance(credentials, compute_engine.Credentials):
        host = (
            os.environ.get("GCE_METADATA_HOST")
            or os.environ.get("GCE_METADATA_ROOT")
            or "metadata.google.internal"
        )
        return f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
    for name in ("_token_uri", "token_uri", "_token_url"):
        value = getattr(credentials, name, None)
        if isinstance(value, str) and value:
            return value
    return "Google's token endpoint"
