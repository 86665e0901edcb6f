"""How the destination authenticates: shared key, SAS token, or DefaultAzureCredential.

azure-identity is imported only when neither a key nor a SAS token is configured: it is a large
import (msal, cryptography) that key and SAS users never need. Its errors are many lines long
(one per credential it tried, plus a troubleshooting link); the wrapper here turns them into
one line naming the storage account and what was tried, so the operator reads, for example,
``EnvironmentCredential: ... ; ManagedIdentityCredential: no managed identity endpoint``.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import AccessToken, AzureSasCredential

from service_backup import tls
from service_backup.errors import DestinationError, one_line

from .config import AzureConfig

#: What each way of authenticating is called in error messages ("check <this>").
CHECK = {
    "key": "storage_access_key",
    "sas": "sas_token (its permissions, start and expiry)",
    "default": (
        "the identity's role assignment on the account (e.g. Storage Blob Data Contributor)"
    ),
}


def credential(config: AzureConfig, connection_verify: str | bool = True) -> Any:
    """The SDK credential for ``config``; nothing is contacted here.

    ``connection_verify`` is the CA bundle DefaultAzureCredential's own token requests verify
    against (Entra ID through a TLS-inspecting proxy needs the OS trust store too).
    """
    kind = config.credential_kind
    if kind == "key":
        return {
            "account_name": config.storage_account,
            "account_key": "".join(config.storage_access_key.reveal().split()),
        }
    if kind == "sas":
        return AzureSasCredential(config.sas_token.reveal().strip().removeprefix("?"))
    from azure.identity import DefaultAzureCredential

    return _OneLineErrors(
        DefaultAzureCredential(connection_verify=connection_verify), config.storage_account
    )


class _OneLineErrors:
    """A token credential whose failures are one ``DestinationError`` line.

    Raised from inside the SDK's pipeline, a non-Azure error is not retried: a credential that
    cannot produce a token will not produce one a second later.
    """

    def __init__(self, inner: Any, account: str) -> None:
        self._inner = inner
        self._account = account

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            token: AccessToken = self._inner.get_token(*scopes, **kwargs)
        except Exception as exc:  # azure-identity raises several types, all to be reported
            untrusted = tls.untrusted_reason(exc)
            if untrusted is not None:  # ahead of the summary, which may cut it off
                endpoint = f"the {_refused_by(exc)} token endpoint"
                raise DestinationError(
                    f"no token for storage account {self._account} from "
                    f"DefaultAzureCredential: {tls.untrusted_message(endpoint, untrusted)}"
                ) from None
            raise DestinationError(
                f"no token for storage account {self._account} from DefaultAzureCredential "
                f"(neither storage_access_key nor sas_token is set): {summary(exc)}"
            ) from None
        return token

    def close(self) -> None:
        self._inner.close()


def _refused_by(exc: BaseException) -> str:
    """Which credential's request met the refused certificate (``ManagedIdentityCredential``)."""
    for line in str(getattr(exc, "message", None) or exc).splitlines():
        name, _, rest = line.strip().partition(":")
        if name.endswith("Credential") and "CERTIFICATE_VERIFY_FAILED" in rest:
            return name
    return "credential's"


def summary(exc: BaseException) -> str:
    """azure-identity's multi-line report as one line: each credential tried and why it failed."""
    lines = [line.strip() for line in str(getattr(exc, "message", None) or exc).splitlines()]
    tried = [
        line
        for line in lines
        if line and ":" in line and line.split(":", 1)[0].endswith("Credential")
    ]
    text = "; ".join(tried) if tried else (lines[0] if lines else type(exc).__name__)
    return one_line(text, 400)
