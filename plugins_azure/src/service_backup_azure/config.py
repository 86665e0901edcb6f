"""The ``azure`` destination's ``config:`` mapping, as the Go release's job template renders it.

``storage_account``, ``container`` and ``path`` were required by that template and still are.
``storage_access_key`` was required too and is now one of three ways to authenticate, because
a static account key in a BOSH manifest is not what a security team accepts today:

* ``storage_access_key``: the account's shared key (key1 or key2), as the Go release used;
* ``sas_token``: a shared access signature (account or container SAS, the query string);
* neither: ``DefaultAzureCredential`` from azure-identity (managed identity, workload
  identity, ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET`` in the environment),
  which sends bearer tokens and so needs an https endpoint.

Giving both a key and a SAS token is refused: which one would be used is not obvious.

``endpoint`` is optional and takes two forms:

* a DNS suffix, as the Go release passed to blobxfer: ``core.windows.net`` (the default, public
  cloud), ``core.chinacloudapi.cn``, ``core.usgovcloudapi.net``. The account URL is then
  ``https://<storage_account>.blob.<suffix>``;
* a full URL, used as the account URL itself: Azurite's ``http://127.0.0.1:10000/devstoreaccount1``
  or a private endpoint such as ``https://acct.privatelink.blob.core.windows.net``.

``stall_timeout_seconds`` (default 60) and ``stall_min_bytes_per_second`` (default 1024) are
the stall rule every SDK destination applies: a write that moves fewer bytes per second than
the floor for that long is aborted with an error saying it stalled.

Values that can only fail later (a key that is not base64, a container name Azure rejects, an
endpoint that is neither form) are refused here, so ``service-backup validate`` catches them
before the first run instead of the first upload failing at 3 a.m.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import attrs

from service_backup.config import NO_SECRET, no_parent_segments, required
from service_backup.secret import Secret
from service_backup.stall import (
    DEFAULT_STALL_MIN_BYTES_PER_SECOND,
    DEFAULT_STALL_SECONDS,
    StallRule,
)

DEFAULT_ENDPOINT_SUFFIX: Final = "core.windows.net"

# https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DNS_SUFFIX = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(?:\.{_DNS_LABEL})+$")


def _check_account(_: Any, attribute: attrs.Attribute, value: str) -> None:
    # Empty is reported by the core as "required field missing"; only judge what was given.
    if value and not _ACCOUNT_NAME.match(value):
        raise ValueError(
            f"{attribute.name}: '{value}' is not a storage account name "
            "(3-24 lowercase letters and digits)"
        )


def _check_container(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if value and not _CONTAINER_NAME.match(value):
        raise ValueError(
            f"{attribute.name}: '{value}' is not a valid container name (3-63 lowercase "
            "letters, digits and single hyphens, starting and ending with a letter or digit)"
        )


def _check_key(_: Any, attribute: attrs.Attribute, value: Secret) -> None:
    text = "".join(value.reveal().split())
    if not text:
        return
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # Never quote the value: it is (a mistyped) secret.
        raise ValueError(
            f"{attribute.name}: not a base64 account key (copy key1 or key2 of the storage account)"
        ) from None


def _check_sas(_: Any, attribute: attrs.Attribute, value: Secret) -> None:
    text = value.reveal().strip()
    if not text:
        return
    # Never quote the value: a SAS token is a secret.
    if "://" in text:
        raise ValueError(
            f"{attribute.name}: give the SAS token alone (the query string after '?'), not a URL"
        )
    fields = parse_qs(text.removeprefix("?"), keep_blank_values=True)
    if not {"sv", "sig"} <= fields.keys():
        raise ValueError(
            f"{attribute.name}: not a SAS token (expected a query string with sv=... and sig=...)"
        )


def _check_endpoint(_: Any, attribute: attrs.Attribute, value: str) -> None:
    text = value.strip()
    if not text:
        return
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{attribute.name}: '{value}' is not an http(s) URL with a host name")
        if parts.query or parts.fragment:
            raise ValueError(
                f"{attribute.name}: '{value}' must not carry a query or fragment "
                "(give the account URL; the access key is a separate field)"
            )
        return
    if not _DNS_SUFFIX.match(text.strip(".")):
        raise ValueError(
            f"{attribute.name}: '{value}' is neither a DNS suffix such as core.chinacloudapi.cn "
            "nor a URL such as https://account.blob.core.windows.net"
        )


def _positive(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be a whole number above 0, not {value}")


@attrs.frozen
class AzureConfig:
    """One ``type: azure`` destination."""

    storage_account: str = required(validator=_check_account)
    container: str = required(validator=_check_container)
    path: str = required(validator=no_parent_segments)
    #: How to authenticate: at most one of the two; with neither, DefaultAzureCredential.
    storage_access_key: Secret = attrs.field(default=NO_SECRET, validator=_check_key)
    sas_token: Secret = attrs.field(default=NO_SECRET, validator=_check_sas)
    endpoint: str = attrs.field(default="", validator=_check_endpoint)
    #: A write whose throughput stays below ``stall_min_bytes_per_second`` for this long is
    #: aborted (an endpoint that black-holes or trickles), as is every write at shutdown.
    stall_timeout_seconds: int = attrs.field(default=DEFAULT_STALL_SECONDS, validator=_positive)
    stall_min_bytes_per_second: int = attrs.field(
        default=DEFAULT_STALL_MIN_BYTES_PER_SECOND, validator=_positive
    )
    #: Stage a same-day re-run and promote it by server-side copy once complete, so that a
    #: failed re-run leaves the day's earlier complete run intact (costs a copy of every
    #: byte in the account, and delete rights; see docs/azure.md).
    promote_by_copy: bool = False

    def __attrs_post_init__(self) -> None:
        if self.storage_access_key.reveal().strip() and self.sas_token.reveal().strip():
            raise ValueError(
                "sas_token: give either storage_access_key or sas_token, not both "
                "(or neither, to authenticate with DefaultAzureCredential)"
            )
        if self.credential_kind == "default" and self.endpoint.strip().startswith("http://"):
            raise ValueError(
                "endpoint: an http:// endpoint needs storage_access_key or sas_token "
                "(DefaultAzureCredential sends its tokens over https only)"
            )

    @property
    def credential_kind(self) -> str:
        """``key``, ``sas`` or ``default`` (DefaultAzureCredential from azure-identity)."""
        if self.storage_access_key.reveal().strip():
            return "key"
        if self.sas_token.reveal().strip():
            return "sas"
        return "default"

    @property
    def stall_rule(self) -> StallRule:
        return StallRule(self.stall_timeout_seconds, self.stall_min_bytes_per_second)


def account_url(config: AzureConfig) -> str:
    """The blob service URL of the configured account (no network involved)."""
    endpoint = config.endpoint.strip()
    if "://" in endpoint:
        return endpoint.rstrip("/")
    suffix = endpoint.strip(".") or DEFAULT_ENDPOINT_SUFFIX
    # Accept the blob service's own host suffix too (``blob.core.windows.net``).
    suffix = suffix.removeprefix("blob.")
    return f"https://{config.storage_account}.blob.{suffix}"
