"""Credentials without service_account_json: Application Default Credentials.

Against the emulator with real token flows: a key file named by GOOGLE_APPLICATION_CREDENTIALS
(the JWT-verifying token endpoint sees the assertion), and a local metadata server
(GCE_METADATA_HOST / GCE_METADATA_IP) handing out the token, as on a GCP VM or a GKE pod with
workload identity. google-auth reads the metadata location when it is imported, so those
runs are CLI processes started with that environment, as the daemon would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.source import Source
from tests.core.cli import run_cli
from tests.gcs.server import GCSServer, MetadataServer
from tests.gcs.test_gcs import assert_no_key_material, cli_config, open_destination
from tests.servers import free_port


@pytest.fixture
def adc_config(gcs_config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in gcs_config.items() if k != "service_account_json"}


@pytest.fixture
def no_ambient_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """No key file, no gcloud login: only what a test provides is found."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    empty = tmp_path / "gcloud"
    empty.mkdir()
    yield {"CLOUDSDK_CONFIG": str(empty), "HOME": str(tmp_path)}


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer()
    yield server
    server.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "dump.rdb").write_bytes(b"R" * 5000)
    return folder


def test_google_application_credentials_key_file(
    gcs_server: GCSServer,
    adc_config: dict[str, Any],
    inspector,
    bucket_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(gcs_server.service_account_json)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    before = len(gcs_server.tokens.granted_calls())
    with open_destination(adc_config) as destination:
        destination.ensure_location()
        destination.write("adc.txt", Source.from_bytes(b"adc"))
    granted = gcs_server.tokens.granted_calls()[before:]
    assert granted, "no token was fetched with the key file's JWT assertion"
    assert {call.client_email for call in granted} == {gcs_server.key.client_email}
    blob = inspector.bucket(bucket_name).blob("backups/redis/adc.txt")
    assert blob.download_as_bytes() == b"adc"


def test_metadata_server_credentials_in_a_backup_run(
    gcs_server: GCSServer,
    adc_config: dict[str, Any],
    inspector,
    bucket_name: str,
    tmp_path: Path,
    source: Path,
    metadata: MetadataServer,
    no_ambient_credentials: dict[str, str],
) -> None:
    before = len(gcs_server.tokens.calls)
    config = cli_config(tmp_path, source, adc_config)
    result = run_cli("backup", str(config), env={**no_ambient_credentials, **metadata.environment})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert metadata.tokens, "the run never asked the metadata server for a token"
    token_calls = [p for p, flavored in metadata.calls if p == MetadataServer.TOKEN_PATH]
    assert token_calls and all(
        flavored for p, flavored in metadata.calls if p == MetadataServer.TOKEN_PATH
    ), "token requests must carry Metadata-Flavor: Google"
    assert len(gcs_server.tokens.calls) == before, "a service-account token was used instead"
    stored = [b.name for b in inspector.list_blobs(bucket_name)]
    assert len(stored) == 1 and stored[0].endswith("/dump.rdb"), stored


def test_no_credentials_anywhere_is_one_clear_line(
    adc_config: dict[str, Any],
    tmp_path: Path,
    source: Path,
    no_ambient_credentials: dict[str, str],
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = {
        **no_ambient_credentials,
        "GCE_METADATA_HOST": dead,
        "GCE_METADATA_IP": dead,
        "GCE_METADATA_DETECT_RETRIES": "1",
    }
    result = run_cli("backup", str(cli_config(tmp_path, source, adc_config)), env=env)
    assert result.returncode == 1
    (failed,) = result.find("Upload backup completed with error")
    error = failed["data"]["error"]
    assert "service_account_json is empty and no Application Default Credentials" in error
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_accepts_a_config_without_service_account_json(
    gcs_server: GCSServer, adc_config: dict[str, Any], tmp_path: Path, source: Path
) -> None:
    result = run_cli("validate", str(cli_config(tmp_path, source, adc_config)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_key_material(result.stdout + result.stderr, gcs_server)
