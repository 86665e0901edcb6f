"""DefaultAzureCredential's own token requests verify against the OS trust store too.

A managed identity (App Service style ``IDENTITY_ENDPOINT``) behind the private-CA TLS relay,
and Azurite checking bearer tokens (``--oauth basic``, which needs HTTPS) serving a
certificate the same private CA signed. The CA is only in the test OS bundle
(``SSL_CERT_FILE``); ``REQUESTS_CA_BUNDLE`` is unset. Before the fix the credential's pipeline
verified against certifi, so the token request failed even with the CA in the OS store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.errors import DestinationError
from service_backup.source import Source
from tests.azure.identity import ManagedIdentityEndpoint
from tests.azure.server import AzuriteServer, AzuriteUnavailable, azurite
from tests.azure.test_azure import open_destination
from tests.servers import unavailable
from tests.tls.relay import PrivateCA, TlsRelay


@pytest.fixture(scope="module")
def oauth_azurite(
    tmp_path_factory: pytest.TempPathFactory, private_ca: PrivateCA
) -> Iterator[AzuriteServer]:
    folder = tmp_path_factory.mktemp("azurite-oauth-private-ca")
    args = ["--oauth", "basic", "--cert", str(private_ca.cert_file)]
    args += ["--key", str(private_ca.key_file)]
    try:
        with azurite(folder, extra_args=args) as server:
            yield server
    except AzuriteUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def identity_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def config(server: AzuriteServer) -> dict[str, Any]:
    return {
        "storage_account": server.account_name,
        "container": f"mi-{uuid.uuid4().hex[:16]}",
        "path": "svc",
        "endpoint": f"https://127.0.0.1:{server.port}/{server.account_name}",
    }


def test_managed_identity_token_over_tls_uses_the_os_store(
    oauth_azurite: AzuriteServer,
    identity_env: pytest.MonkeyPatch,
    os_bundles: dict[str, Path],
    relay_to: Any,
) -> None:
    identity = ManagedIdentityEndpoint(header_secret=uuid.uuid4().hex)
    with identity.running():
        relay: TlsRelay = relay_to(identity.server.server_address[1])
        identity_env.setenv("IDENTITY_ENDPOINT", relay.url("/msi/token"))
        identity_env.setenv("IDENTITY_HEADER", identity.header_secret)
        identity_env.setenv("SSL_CERT_FILE", str(os_bundles["with_ca"]))
        with open_destination(config(oauth_azurite)) as dest:
            dest.ensure_location()
            stored = dest.write("over-tls.txt", Source.from_bytes(b"token over tls"))
            assert stored.size == 14
    assert identity.requests, "DefaultAzureCredential never asked the managed identity"
    assert relay.accepted > 0 and relay.refused == 0, (relay.accepted, relay.refused)


def test_managed_identity_without_the_ca_fails_in_one_line(
    oauth_azurite: AzuriteServer,
    identity_env: pytest.MonkeyPatch,
    os_bundles: dict[str, Path],
    relay_to: Any,
) -> None:
    identity = ManagedIdentityEndpoint(header_secret=uuid.uuid4().hex)
    with identity.running():
        relay: TlsRelay = relay_to(identity.server.server_address[1])
        identity_env.setenv("IDENTITY_ENDPOINT", relay.url("/msi/token"))
        identity_env.setenv("IDENTITY_HEADER", identity.header_secret)
        identity_env.setenv("SSL_CERT_FILE", str(os_bundles["without_ca"]))
        with (
            open_destination(config(oauth_azurite)) as dest,
            pytest.raises(DestinationError) as info,
        ):
            dest.ensure_location()
    message = str(info.value)
    assert (
        "TLS certificate of the ManagedIdentityCredential token endpoint not trusted" in message
    ), message
    assert "trusted_certs" in message, message
    assert "\n" not in message, message
    assert relay.refused > 0, "the token request never reached the relay"
    assert identity.header_secret not in message
