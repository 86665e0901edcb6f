"""Every SDK destination verifies TLS against the OS trust store, where BOSH ``trusted_certs`` go.

The real CLI runs ``service-backup backup`` against each store behind a TLS relay whose
certificate a private CA signed. ``SSL_CERT_FILE`` points the process at a test OS-style
bundle (the file OpenSSL, and so the machine, trusts); certifi is left as it is, and no
plugin option names the CA. With the CA in that bundle the backup succeeds; without it, it
fails at once with one line saying the endpoint's certificate is not trusted and where to add
the CA. Before the fix, Azure and GCS verified against certifi and failed in both cases.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import boto3
import pytest
from azure.storage.blob import ContainerClient
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.azure.server import AzuriteServer
from tests.core.cli import CliResult, run_cli, write_config
from tests.gcs.server import GCSServer
from tests.s3.server import MotoServer
from tests.tls.relay import TlsRelay

FILES = {
    "dump.rdb": b"redis dump over tls\n" * 100,
    "aof/appendonly.aof": b"SET k v\n",
    # Past every single-request limit: S3 multipart, Azure blocks, a GCS resumable session.
    "big.rdb": os.urandom(9 * 1024 * 1024),
}
#: Variables that would name a CA bundle behind the OS store's back.
OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "SSL_CERT_DIR")


@attrs.frozen
class Store:
    """One destination type behind a relay: its config, and how to list what it stored."""

    type: str
    config: dict[str, Any]
    #: The relay the first request goes through (the one whose certificate is refused first).
    relay: TlsRelay
    #: The endpoint the error message must name.
    endpoint: str
    stored: Callable[[], list[str]]
    #: Every relay the destination talks through.
    relays: tuple[TlsRelay, ...] = ()


def s3_store(moto: MotoServer, relay_to: Any) -> Store:
    relay: TlsRelay = relay_to(int(moto.endpoint.rsplit(":", 1)[1]))
    bucket = f"tls-{uuid.uuid4().hex[:12]}"
    config = {
        "bucket_name": bucket,
        "bucket_path": "backups",
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        "endpoint_url": relay.url(),
    }

    def stored() -> list[str]:
        client = boto3.client("s3", **moto.boto3_kwargs())
        try:
            return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        except client.exceptions.NoSuchBucket:
            return []
        finally:
            client.close()

    return Store("s3", config, relay, relay.url(), stored)


def azure_store(server: AzuriteServer, relay_to: Any) -> Store:
    relay: TlsRelay = relay_to(server.port)
    container = f"tls-{uuid.uuid4().hex[:12]}"
    endpoint = relay.url(f"/{server.account_name}")
    config = {
        "storage_account": server.account_name,
        "storage_access_key": server.account_key,
        "container": container,
        "path": "backups",
        "endpoint": endpoint,
    }

    def stored() -> list[str]:
        client = ContainerClient.from_connection_string(server.connection_string, container)
        with client:
            return [b.name for b in client.list_blobs()] if client.exists() else []

    return Store("azure", config, relay, endpoint, stored)


def gcs_store(server: GCSServer, relay_to: Any) -> Store:
    """The emulator and the token endpoint both over TLS: google-auth's token request too."""
    relay: TlsRelay = relay_to(server.port, https_locations=True)
    token_relay: TlsRelay = relay_to(int(server.tokens.base_url.rsplit(":", 1)[1]))
    bucket = f"tls-{uuid.uuid4().hex[:12]}"
    config = {
        "service_account_json": server.key.json(token_relay.url("/token"), server.project_id),
        "project_id": server.project_id,
        "bucket_name": bucket,
        "endpoint": relay.url(),
    }

    def stored() -> list[str]:
        client = storage.Client(
            project=server.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint},
        )
        try:
            return [b.name for b in client.list_blobs(bucket)]
        except NotFound:
            return []

    # The first request is the token's: its endpoint is the one refused first.
    return Store(
        "gcs", config, token_relay, token_relay.url("/token"), stored, (token_relay, relay)
    )


@pytest.fixture(params=["s3", "azure", "gcs"])
def store(request: pytest.FixtureRequest, relay_to: Any) -> Store:
    if request.param == "s3":
        return s3_store(request.getfixturevalue("moto_plain"), relay_to)
    if request.param == "azure":
        return azure_store(request.getfixturevalue("azurite_plain"), relay_to)
    return gcs_store(request.getfixturevalue("gcs_plain"), relay_to)


def run_backup(store: Store, tmp_path: Path, bundle: Path, monkeypatch: Any) -> CliResult:
    source = tmp_path / "source"
    (source / "aof").mkdir(parents=True)
    for name, data in FILES.items():
        (source / name).write_bytes(data)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": store.type, "name": "tls-dest", "config": store.config}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
    )
    for name in (*OVERRIDES, "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    return run_cli("backup", str(config), env={"SSL_CERT_FILE": str(bundle)})


def test_backup_verifies_against_the_os_trust_store(
    store: Store, tmp_path: Path, os_bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_backup(store, tmp_path, os_bundles["with_ca"], monkeypatch)
    assert result.returncode == 0, (
        f"{store.type} backup over TLS with the CA in the OS bundle failed:\n"
        + result.stdout[-3000:]
        + result.stderr[-3000:]
    )
    done = result.find("Upload backup completed successfully")
    assert done, result.stdout[-3000:]
    assert done[0]["data"]["size_in_bytes"] == sum(map(len, FILES.values())), done[0]
    for relay in store.relays or (store.relay,):
        assert relay.accepted > 0, f"{store.type}: no request went through {relay.url()}"
        assert relay.refused == 0, f"{store.type}: a TLS handshake with {relay.url()} was refused"
    stored = store.stored()
    for name in FILES:
        assert any(key.endswith(name) for key in stored), f"{name} not stored in {stored}"


def test_backup_without_the_ca_fails_with_one_line_naming_the_endpoint(
    store: Store, tmp_path: Path, os_bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    result = run_backup(store, tmp_path, os_bundles["without_ca"], monkeypatch)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert store.relay.refused > 0, f"{store.type}: the client never refused the certificate"
    failed = result.find("Upload backup completed with error")
    assert failed, result.stdout[-3000:]
    assert failed[0]["data"]["destination_name"] == "tls-dest", failed[0]
    error = failed[0]["data"]["error"]
    assert "not trusted" in error and store.endpoint in error, error
    assert "trusted_certs" in error, f"the error does not say where the CA goes: {error}"
    assert json.dumps(error).count("\\n") == 0, error
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # A refused certificate is refused again on every attempt: no retry loop.
    assert elapsed < 30, f"{store.type} took {elapsed:.0f} s to report a refused certificate"
    assert store.stored() == [], f"{store.type}: stored without a trusted certificate"
