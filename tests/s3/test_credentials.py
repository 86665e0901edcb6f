"""Where the S3 credentials come from (issue 18), against moto with IAM enforced.

Without keys in the config boto3's default chain is used: environment, shared credentials
file, and the EC2 instance metadata service (a local IMDSv2 server here, reached through
``AWS_EC2_METADATA_SERVICE_ENDPOINT``). ``role_arn`` assumes a role through moto's STS, whose
policy then governs what the upload may do.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_s3.config import S3Config
from service_backup_s3.destination import MULTIPART_THRESHOLD, S3Destination

from .server import MotoServer

ACCOUNT = "123456789012"  # moto's default account


def open_destination(raw: dict[str, Any]) -> S3Destination:
    dtype = load_registry(hook_plugins=False).destination_type("s3")
    config = structure_destination_config(raw, dtype.config_class)
    destination = dtype.factory(config, DestinationContext("s3-creds"))
    assert isinstance(destination, S3Destination)
    return destination


def bucket_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def without_keys(s3_config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s3_config.items() if k not in ("access_key_id", "secret_access_key")}


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing in this process's environment or home may supply credentials by accident."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_CA_BUNDLE",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def round_trip(raw: dict[str, Any], s3_admin: Any) -> None:
    with open_destination(raw) as dest:
        dest.ensure_location()
        assert dest.write("2026/11/26/a.txt", Source.from_bytes(b"chain")).size == 5
    body = s3_admin.get_object(Bucket=raw["bucket_name"], Key="backups/redis/2026/11/26/a.txt")
    assert body["Body"].read() == b"chain"


# ------------------------------------------------------------------------------ the chain


@pytest.mark.usefixtures("no_ambient_credentials")
def test_environment_credentials(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, secret = moto.create_user(f"env-{os.urandom(4).hex()}", bucket_policy("*"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    round_trip(without_keys(s3_config), s3_admin)


@pytest.mark.usefixtures("no_ambient_credentials")
def test_shared_credentials_file(
    moto: MotoServer,
    s3_config: dict[str, Any],
    s3_admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    key_id, secret = moto.create_user(f"file-{os.urandom(4).hex()}", bucket_policy("*"))
    path = tmp_path / "credentials"
    path.write_text(f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    round_trip(without_keys(s3_config), s3_admin)


class Imds(BaseHTTPRequestHandler):
    """IMDSv2: a token first (PUT), then the role name and its credentials with that token."""

    token = "imds-session-token-for-test"
    role = "service-backup-vm"
    credentials: dict[str, str] = {}
    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self.seen.append(f"PUT {self.path}")
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._answer(200, self.token)
        else:
            self._answer(400, "")

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self._answer(401, "")
        elif self.path == "/latest/meta-data/iam/security-credentials/":
            self._answer(200, self.role)
        elif self.path == f"/latest/meta-data/iam/security-credentials/{self.role}":
            self._answer(200, json.dumps(self.credentials))
        else:
            self._answer(404, "")


@pytest.fixture
def imds(moto: MotoServer) -> Iterator[str]:
    key_id, secret = moto.create_user(f"vm-{os.urandom(4).hex()}", bucket_policy("*"))
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=6)
    Imds.credentials = {
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": key_id,
        "SecretAccessKey": secret,
        "Token": "",
        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    Imds.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("no_ambient_credentials")
def test_instance_metadata_credentials(
    imds: str, s3_config: dict[str, Any], s3_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
    round_trip(without_keys(s3_config), s3_admin)
    assert Imds.seen[0] == "PUT /latest/api/token", Imds.seen
    assert f"GET /latest/meta-data/iam/security-credentials/{Imds.role}" in Imds.seen, Imds.seen


@pytest.mark.usefixtures("no_ambient_credentials")
def test_no_credentials_anywhere_is_one_clear_line(s3_config: dict[str, Any]) -> None:
    with open_destination(without_keys(s3_config)) as dest, pytest.raises(DestinationError) as e:
        dest.ensure_location()
    message = str(e.value)
    assert message.startswith(f"cannot check bucket {s3_config['bucket_name']}"), message
    assert "credentials" in message.lower() and "\n" not in message


# ------------------------------------------------------------------------------ role_arn


@pytest.fixture
def sts_at_moto(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto.endpoint)


def make_role(
    moto: MotoServer, user: str, policy: dict[str, Any] | None, external_id: str = ""
) -> str:
    """A role ``user`` may assume (moto matches the user's ARN, not the account root)."""
    iam = boto3.client("iam", **moto.boto3_kwargs())
    name = f"sb-role-{os.urandom(4).hex()}"
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{user}"},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if policy is not None:
        iam.put_role_policy(RoleName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    return str(arn)


def assume_only_user(moto: MotoServer) -> tuple[str, str, str]:
    """A user who may assume roles and do nothing else: (name, key id, secret)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    name = f"assumer-{os.urandom(4).hex()}"
    return (name, *moto.create_user(name, policy))


@pytest.mark.usefixtures("sts_at_moto")
def test_role_policy_governs_the_upload(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    user, key_id, secret = assume_only_user(moto)
    base = {**s3_config, "access_key_id": key_id, "secret_access_key": secret}
    with open_destination(base) as dest, pytest.raises(DestinationError, match="AccessDenied"):
        dest.ensure_location()  # the base user alone may not touch S3
    role_arn = make_role(moto, user, bucket_policy(bucket), external_id="ext-1234")
    with (
        open_destination({**base, "role_arn": role_arn, "external_id": "wrong-id"}) as dest,
        pytest.raises(DestinationError, match=f"cannot assume role {role_arn}: AccessDenied"),
    ):
        dest.ensure_location()  # the trust policy's external id is checked
    raw = {**base, "role_arn": role_arn, "external_id": "ext-1234"}
    with open_destination(raw) as dest:
        dest.ensure_location()
        big = os.urandom(MULTIPART_THRESHOLD + 1024)
        assert dest.write("2026/11/26/big.bin", Source.from_bytes(big)).size == len(big)
    got = s3_admin.get_object(Bucket=bucket, Key="backups/redis/2026/11/26/big.bin")
    assert got["Body"].read() == big


@pytest.mark.usefixtures("sts_at_moto")
def test_role_without_s3_permission_is_refused(moto: MotoServer, s3_config: dict[str, Any]) -> None:
    user, key_id, secret = assume_only_user(moto)
    raw = {
        **s3_config,
        "access_key_id": key_id,
        "secret_access_key": secret,
        "role_arn": make_role(moto, user, None),
    }
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert message.startswith(f"access denied to bucket {raw['bucket_name']}"), message
    assert "assume" not in message, "the role was assumed; S3 must be what refuses"
    assert secret not in str(info.value)


# -------------------------------------------------------------------- validation, checksums


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"access_key_id": "AKIAEXAMPLE"}, "config.secret_access_key: required with access_key_id"),
        ({"secret_access_key": "s3cr3t-value"}, "config.access_key_id: required with secret"),
        ({"external_id": "x"}, "config.external_id: only used with role_arn"),
        ({"request_checksum_calculation": "always"}, "config.request_checksum_calculation: "),
        ({"response_checksum_validation": "never"}, "config.response_checksum_validation: "),
    ],
)
def test_credential_and_checksum_keys_are_validated(extra: dict[str, str], message: str) -> None:
    raw = {"bucket_name": "backups", "bucket_path": "p", **extra}
    with pytest.raises(ConfigError) as info:
        structure_destination_config(raw, S3Config)
    assert str(info.value).startswith(message), info.value
    assert "s3cr3t-value" not in str(info.value)


def sent_headers(dest: S3Destination) -> list[dict[str, str]]:
    """Headers of every request the destination's own client sends (observed, not altered)."""
    seen: list[dict[str, str]] = []
    dest.client.meta.events.register(
        "before-send.s3", lambda request, **_: seen.append(dict(request.headers))
    )
    return seen


@pytest.mark.parametrize(
    ("setting", "trailers"), [(None, False), ("when_supported", True)], ids=["default", "supported"]
)
def test_checksum_default_for_compatible_stores(
    s3_config: dict[str, Any], setting: str | None, trailers: bool
) -> None:
    raw = {**s3_config, **({"request_checksum_calculation": setting} if setting else {})}
    with open_destination(raw) as dest:
        dest.ensure_location()
        seen = sent_headers(dest)
        dest.write("small.bin", Source.from_bytes(b"s" * 100))
        dest.write("big.bin", Source.from_bytes(os.urandom(MULTIPART_THRESHOLD + 1)))
    bodies = [h for h in seen if "Content-MD5" in h]
    assert len(bodies) == 3, "the PUT and both parts must carry Content-MD5"
    with_crc = [h for h in seen if any(k.lower().startswith("x-amz-checksum-") for k in h)]
    assert bool(with_crc) == trailers, f"checksum headers sent with {setting or 'the default'}"
