"""The credentials a destination runs as, built in memory from the config.

google-auth signs a JWT with the service account's private key and exchanges it for an
access token at the key's ``token_uri``; nothing is written to disk.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.oauth2 import service_account

from service_backup.errors import DestinationError

from .config import parse_service_account

#: Full control covers creating the bucket; the seed asks for the Storage Admin role anyway.
SCOPES: Final = ("https://www.googleapis.com/auth/devstorage.full_control",)


@attrs.frozen
class Found:
    credentials: auth_credentials.Credentials
    #: Who requests run as, for error messages.
    principal: str
    token_uri: str
    #: Values no message may contain.
    secrets: list[str]


def load_credentials(config: Any) -> Found:
    key_text = config.service_account_json.reveal()
    try:
        info = parse_service_account(key_text)
    except ValueError as exc:
        raise DestinationError(str(exc)) from None
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, TypeError, IndexError, auth_exceptions.GoogleAuthError):
        # The SDK's message may quote the key; say which field is wrong, nothing more.
        raise DestinationError(
            "service_account_json: private_key is not a valid PEM private key"
        ) from None
    return Found(
        credentials=credentials,
        principal=f"the service account {info['client_email']}",
        token_uri=info["token_uri"],
        secrets=[key_text, info["private_key"]],
    )
