"""The three ways to authenticate: shared key (elsewhere), SAS token, DefaultAzureCredential.

SAS tokens are generated with the SDK for Azurite and used over plain HTTP. DefaultAzureCredential
runs for real against Azurite in its OAuth mode (HTTPS with a self-signed certificate), getting
its token from a local App Service-style managed-identity endpoint; with environment (client
secret) credentials and no reachable authority it must fail in one clear line.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    ResourceTypes,
    generate_account_sas,
    generate_container_sas,
)

from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_azure.destination import AzureDestination
from tests.azure.identity import ManagedIdentityEndpoint, self_signed_certificate
from tests.azure.server import AzuriteServer, AzuriteUnavailable, azurite
from tests.core.cli import run_cli, write_config
from tests.servers import free_port, unavailable

IN_A_DAY = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
KEY = "Zm9yIHRoZSBjb25maWcgb25seSwgbmV2ZXIgc2VudCB0byBhbnkgc2VydmVyIGF0IGFsbA=="
SAS_LIKE = "sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=c2VjcmV0c2lnbmF0dXJl"


def open_destination(raw: dict[str, Any]) -> AzureDestination:
    dtype = load_registry(hook_plugins=False).destination_type("azure")
    config = structure_destination_config(raw, dtype.config_class)
    destination = dtype.factory(config, DestinationContext("cred-test", stop=threading.Event()))
    assert isinstance(destination, AzureDestination)
    return destination


def round_trip(dest: AzureDestination) -> None:
    """Create (or find) the container, write, list, read back, delete: all with this credential."""
    dest.ensure_location()
    dest.write("2026/11/26/dump.rdb", Source.from_bytes(b"payload"))
    assert [o.key for o in dest.list("2026/")] == ["2026/11/26/dump.rdb"]
    with dest.open_read("2026/11/26/dump.rdb") as stream:
        assert stream.read() == b"payload"
    dest.delete("2026/11/26/dump.rdb")
    assert list(dest.list("2026/")) == []


def config_problem(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "destinations": [{"type": "azure", "config": raw}],
                "source_folder": "/tmp",
                "cron_schedule": "@daily",
            },
            load_registry(hook_plugins=False),
        )
    return str(info.value)


@pytest.fixture
def clean_identity_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No credential from the machine running the tests leaks into DefaultAzureCredential."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    return monkeypatch


# ------------------------------------------------------------------------------ validation
def test_key_and_sas_together_are_refused_naming_the_field() -> None:
    base = {"storage_account": "examplestorage", "container": "backups", "path": "p"}
    message = config_problem({**base, "storage_access_key": KEY, "sas_token": SAS_LIKE})
    assert "destinations[0].config.sas_token" in message, message
    assert "storage_access_key or sas_token, not both" in message, message
    assert KEY not in message and "c2VjcmV0c2lnbmF0dXJl" not in message


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("not a sas token at all", "not a SAS token"),
        ("sv=2024-08-04&sp=r", "not a SAS token"),
        (f"https://examplestorage.blob.core.windows.net/backups?{SAS_LIKE}", "not a URL"),
    ],
)
def test_malformed_sas_token_is_refused_without_quoting_it(token: str, expected: str) -> None:
    base = {"storage_account": "examplestorage", "container": "backups", "path": "p"}
    message = config_problem({**base, "sas_token": token})
    assert "destinations[0].config.sas_token" in message and expected in message, message
    assert token not in message


def test_token_credentials_need_https() -> None:
    raw = {
        "storage_account": "devstoreaccount1",
        "container": "backups",
        "path": "p",
        "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
    }
    message = config_problem(raw)
    assert "destinations[0].config.endpoint" in message and "https" in message, message


def test_each_way_to_authenticate_validates_alone() -> None:
    dtype = load_registry(hook_plugins=False).destination_type("azure")
    base = {"storage_account": "examplestorage", "container": "backups", "path": "p"}
    kinds = {
        "key": {**base, "storage_access_key": KEY},
        "sas": {**base, "sas_token": "?" + SAS_LIKE},
        "default": base,
    }
    for kind, raw in kinds.items():
        config = structure_destination_config(raw, dtype.config_class)
        assert config.credential_kind == kind
        assert SAS_LIKE not in repr(config) and KEY not in repr(config)


def test_default_credential_is_imported_only_when_used(tmp_path: Path) -> None:
    code = f"""
import sys
from service_backup.destination import DestinationContext
from service_backup.secret import Secret
from service_backup_azure.config import AzureConfig
from service_backup_azure.destination import AzureDestination
config = AzureConfig(
    storage_account="acct", storage_access_key=Secret("{KEY}"), container="backups", path="p"
)
AzureDestination(config, DestinationContext("x")).close()
print("azure.identity" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "False", "azure-identity was imported for a key-based destination"


# ---------------------------------------------------------------------------- SAS tokens
def test_account_sas_over_http(azurite_server: AzuriteServer) -> None:
    token = generate_account_sas(
        azurite_server.account_name,
        azurite_server.account_key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, create=True
        ),
        expiry=IN_A_DAY,
    )
    raw = {
        "storage_account": azurite_server.account_name,
        "sas_token": "?" + token,  # as the portal shows it
        "container": f"sas-{uuid.uuid4().hex[:16]}",
        "path": "svc",
        "endpoint": azurite_server.account_url,
    }
    with open_destination(raw) as dest:
        round_trip(dest)  # the account SAS also creates the missing container


def test_container_sas_over_http(azurite_server: AzuriteServer) -> None:
    container = f"sas-{uuid.uuid4().hex[:16]}"
    BlobServiceClient.from_connection_string(azurite_server.connection_string).create_container(
        container
    )
    token = generate_container_sas(
        azurite_server.account_name,
        container,
        account_key=azurite_server.account_key,
        permission=ContainerSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, create=True
        ),
        expiry=IN_A_DAY,
    )
    raw = {
        "storage_account": azurite_server.account_name,
        "sas_token": token,
        "container": container,
        "path": "svc",
        "endpoint": azurite_server.account_url,
    }
    with open_destination(raw) as dest:
        round_trip(dest)


def test_write_only_container_sas_is_enough_to_back_up(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = service.create_container(f"sas-{uuid.uuid4().hex[:16]}")
    token = generate_container_sas(
        azurite_server.account_name,
        container.container_name,
        account_key=azurite_server.account_key,
        permission=ContainerSasPermissions(create=True, write=True),  # least privilege
        expiry=IN_A_DAY,
    )
    raw = {
        "storage_account": azurite_server.account_name,
        "sas_token": token,
        "container": container.container_name,
        "path": "svc",
        "endpoint": azurite_server.account_url,
    }
    big = os.urandom(5 * 1024 * 1024)  # above the single-put size: blocks and a commit
    with open_destination(raw) as dest:
        dest.ensure_location()  # can neither read properties nor list: must not fail
        dest.write("small.txt", Source.from_bytes(b"small"))
        dest.write("big.bin", Source.from_bytes(big))
    assert container.download_blob("svc/small.txt").readall() == b"small"
    assert container.download_blob("svc/big.bin").readall() == big


def test_sas_without_write_permission_is_denied_clearly(azurite_server: AzuriteServer) -> None:
    container = f"sas-{uuid.uuid4().hex[:16]}"
    BlobServiceClient.from_connection_string(azurite_server.connection_string).create_container(
        container
    )
    token = generate_container_sas(
        azurite_server.account_name,
        container,
        account_key=azurite_server.account_key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=IN_A_DAY,
    )
    raw = {
        "storage_account": azurite_server.account_name,
        "sas_token": token,
        "container": container,
        "path": "svc",
        "endpoint": azurite_server.account_url,
    }
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.write("denied.txt", Source.from_bytes(b"x"))
    message = str(info.value)
    assert "access denied by storage account devstoreaccount1" in message, message
    assert "check sas_token" in message, message
    assert token not in message and token.split("sig=")[1][:12] not in message
    assert "\n" not in message


# ------------------------------------------------------------------ DefaultAzureCredential
@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AzuriteServer, Path]]:
    """Azurite checking bearer tokens (``--oauth basic``), over HTTPS with a local certificate."""
    folder = tmp_path_factory.mktemp("azurite-oauth")
    cert, key = self_signed_certificate(folder / "tls")
    try:
        with azurite(
            folder / "data", extra_args=["--oauth", "basic", "--cert", str(cert), "--key", str(key)]
        ) as server:
            yield server, cert
    except AzuriteUnavailable as exc:
        unavailable(str(exc))


def test_default_credential_with_a_managed_identity_against_oauth_azurite(
    oauth_azurite: tuple[AzuriteServer, Path], clean_identity_env: pytest.MonkeyPatch
) -> None:
    server, cert = oauth_azurite
    identity = ManagedIdentityEndpoint(header_secret=uuid.uuid4().hex)
    clean_identity_env.setenv("IDENTITY_ENDPOINT", identity.url)
    clean_identity_env.setenv("IDENTITY_HEADER", identity.header_secret)
    clean_identity_env.setenv("REQUESTS_CA_BUNDLE", str(cert))
    raw = {
        "storage_account": server.account_name,
        "container": f"mi-{uuid.uuid4().hex[:16]}",
        "path": "svc",
        "endpoint": f"https://127.0.0.1:{server.port}/{server.account_name}",
    }
    with identity.running(), open_destination(raw) as dest:
        round_trip(dest)
    assert identity.requests, "DefaultAzureCredential never asked the managed identity for a token"
    assert identity.requests[0]["query"]["resource"] == ["https://storage.azure.com"]
    # The token is what got us in: Azurite refuses a request with a token for another audience.
    denied = BlobServiceClient(
        raw["endpoint"], credential=_WrongAudience(), connection_verify=str(cert)
    )
    with pytest.raises(ClientAuthenticationError, match="AuthenticationFailed"):
        denied.get_container_client(raw["container"]).get_container_properties()


class _WrongAudience:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        from tests.azure.identity import _b64

        now = int(time.time())
        claims = {
            "aud": "https://management.azure.com",
            "iss": "https://sts.windows.net/t/",
            "iat": now,
            "nbf": now - 60,
            "exp": now + 600,
        }
        return AccessToken(f"{_b64({'alg': 'RS256'})}.{_b64(claims)}.c2ln", now + 600)


def test_default_credential_with_environment_credentials_fails_in_one_line(
    clean_identity_env: pytest.MonkeyPatch,
) -> None:
    secret = f"client-secret-{uuid.uuid4().hex}"
    clean_identity_env.setenv("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    clean_identity_env.setenv("AZURE_CLIENT_ID", "0b5a8d9e-1111-2222-3333-444455556666")
    clean_identity_env.setenv("AZURE_CLIENT_SECRET", secret)
    clean_identity_env.setenv("AZURE_AUTHORITY_HOST", f"https://127.0.0.1:{free_port()}")
    raw = {
        "storage_account": "examplestorage",
        "container": "backups",
        "path": "svc",
        "endpoint": f"https://127.0.0.1:{free_port()}/examplestorage",
    }
    started = time.monotonic()
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.write("never.txt", Source.from_bytes(b"x"))
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert message.startswith(
        "no token for storage account examplestorage from DefaultAzureCredential"
    ), message
    assert "EnvironmentCredential" in message, f"the credential that failed is not named: {message}"
    assert "\n" not in message and secret not in message
    assert elapsed < 60, f"getting no token took {elapsed:.0f}s"


def test_sas_never_reaches_the_log_in_any_form(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    # The SDK puts the SAS in every request URL, URL-encoded: neither form may be logged.
    container = f"sas-{uuid.uuid4().hex[:16]}"
    BlobServiceClient.from_connection_string(azurite_server.connection_string).create_container(
        container
    )
    token = generate_container_sas(
        azurite_server.account_name,
        container,
        account_key=azurite_server.account_key,
        permission=ContainerSasPermissions(read=True, list=True),  # the upload is refused
        expiry=IN_A_DAY,
    )
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"data")
    raw = {
        "storage_account": azurite_server.account_name,
        "sas_token": token,
        "container": container,
        "path": "svc",
        "endpoint": azurite_server.account_url,
    }
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "azure", "name": "sas-dest", "config": raw}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("backup", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    failed = result.find("Upload backup completed with error")
    assert len(failed) == 1 and "check sas_token" in failed[0]["data"]["error"]
    signature = parse_qs(token)["sig"][0]
    output = result.stdout + result.stderr
    for form in (signature, quote(signature, safe=""), token):
        assert form[:12] not in output, "the SAS signature reached the log"
