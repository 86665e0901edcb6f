"""S3-specific behaviour against moto: regions, existing buckets, IAM refusals, TLS, integrity."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound, SourceError
from service_backup.layout import MiB
from service_backup.plugins import load_registry
from service_backup.source import Source, SourceFile
from service_backup.upload import upload_one
from service_backup_s3._tls import CaBundle, system_ca_bundle
from service_backup_s3.config import S3Config
from service_backup_s3.destination import MAX_ATTEMPTS, MULTIPART_THRESHOLD, S3Destination
from tests.core.cli import run_cli, write_config

from .conftest import new_bucket_name
from .server import MotoServer

BIG = MULTIPART_THRESHOLD + 1 * MiB  # goes up in parts


def open_destination(raw: dict[str, Any]) -> S3Destination:
    """Built the way a run builds it: the entry point's type, the core's config converter."""
    dtype = load_registry(hook_plugins=False).destination_type("s3")
    config = structure_destination_config(raw, dtype.config_class)
    destination = dtype.factory(config, DestinationContext("s3-test"))
    assert isinstance(destination, S3Destination)
    return destination


def seed_policy(bucket: str, *, create: bool = True) -> dict[str, Any]:
    """The IAM policy the seed documents for service-backup (optionally without CreateBucket)."""
    actions = [
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
        "s3:ListMultipartUploadParts",
        "s3:CreateBucket",
        "s3:PutObject",
    ]
    if not create:
        actions.remove("s3:CreateBucket")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ServiceBackupPolicy",
                "Effect": "Allow",
                "Action": actions,
                "Resource": [f"arn:aws:s3:::{bucket}/*", f"arn:aws:s3:::{bucket}"],
            }
        ],
    }


def user_config(moto: MotoServer, s3_config: dict[str, Any], policy: Any) -> dict[str, Any]:
    key_id, secret = moto.create_user(f"user-{os.urandom(6).hex()}", policy)
    return {**s3_config, "access_key_id": key_id, "secret_access_key": secret}


def log_offset(moto: MotoServer) -> int:
    return Path(moto.log_file).stat().st_size


def requests_since(moto: MotoServer, offset: int) -> list[str]:
    """``METHOD /path`` of every request moto logged since ``offset``."""
    with open(moto.log_file, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return re.findall(r'"([A-Z]+ \S+) HTTP/1\.1"', text)


# ---------------------------------------------------------------------------- bucket creation


@pytest.mark.parametrize(
    ("region", "location"),
    [("", None), ("us-east-1", None), ("eu-central-1", "eu-central-1")],
    ids=["empty-region", "us-east-1", "eu-central-1"],
)
def test_new_bucket_created_in_its_region(
    s3_config: dict[str, Any], s3_admin: Any, region: str, location: str | None
) -> None:
    # moto, like AWS, rejects LocationConstraint=us-east-1 and a missing constraint when the
    # client's region is another: success here means the request was shaped correctly.
    with open_destination({**s3_config, "region": region}) as dest:
        dest.ensure_location()
        dest.write("probe.txt", Source.from_bytes(b"probe"))
    answer = s3_admin.get_bucket_location(Bucket=s3_config["bucket_name"])
    assert answer.get("LocationConstraint") == location
    keys = [o["Key"] for o in s3_admin.list_objects_v2(Bucket=s3_config["bucket_name"])["Contents"]]
    assert keys == ["backups/redis/probe.txt"]


def test_existing_bucket_is_used_as_it_is(moto: MotoServer, s3_config: dict[str, Any]) -> None:
    bucket = s3_config["bucket_name"]
    admin = boto3.client("s3", **moto.boto3_kwargs(region_name="eu-central-1"))
    admin.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    admin.put_object(Bucket=bucket, Key="someone-else/keep.txt", Body=b"keep")
    with open_destination({**s3_config, "region": "eu-central-1"}) as dest:
        dest.ensure_location()
        dest.write("2026/11/26/dump.rdb", Source.from_bytes(b"dump"))
    keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["backups/redis/2026/11/26/dump.rdb", "someone-else/keep.txt"]
    assert admin.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-central-1"


def test_existing_bucket_needs_no_create_permission(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    s3_admin.create_bucket(Bucket=bucket)
    raw = user_config(moto, s3_config, seed_policy(bucket, create=False))
    data = os.urandom(BIG)
    with open_destination(raw) as dest:
        dest.ensure_location()
        assert dest.write("small.bin", Source.from_bytes(b"x" * 100)).size == 100
        assert dest.write("big.bin", Source.from_bytes(data)).size == BIG
    body = s3_admin.get_object(Bucket=bucket, Key="backups/redis/big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_access_denied_on_create_is_reported_as_such(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    raw = user_config(moto, s3_config, seed_policy(bucket, create=False))
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert str(info.value).startswith(f"error in create bucket {bucket}: AccessDenied")
    assert raw["secret_access_key"] not in str(info.value)
    assert bucket not in [b["Name"] for b in s3_admin.list_buckets()["Buckets"]]


def test_access_denied_is_told_from_not_found(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    s3_admin.create_bucket(Bucket=bucket)
    raw = user_config(moto, s3_config, None)  # a valid user without any permission
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert message.startswith(f"access denied to bucket {bucket}")
    assert "AccessDenied" in message
    assert "create" not in message  # a 403 on HEAD must not be taken for "missing"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"secret_access_key": "not-the-right-secret"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "AKIAUNKNOWNKEY000000"}, "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-key-id"],
)
def test_refused_credentials_are_named(
    s3_config: dict[str, Any], change: dict[str, str], code: str
) -> None:
    raw = {**s3_config, **change}
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert message.startswith(f"credentials refused for bucket {raw['bucket_name']}: {code}")
    for secret in (raw["secret_access_key"], raw["access_key_id"], s3_config["secret_access_key"]):
        assert secret not in message
    assert "\n" not in message


# ------------------------------------------------------------------------------ keys, options


def test_keys_and_describe_follow_bucket_path(s3_config: dict[str, Any], s3_admin: Any) -> None:
    raw = {**s3_config, "bucket_path": "/prod/redis/"}
    with open_destination(raw) as dest:
        assert dest.describe("2026/11/26") == f"{raw['bucket_name']}/prod/redis/2026/11/26"
        dest.ensure_location()
        dest.write("deploy/2026/11/26/a/b.txt", Source.from_bytes(b"ab"))
        assert [o.key for o in dest.list("deploy/")] == ["deploy/2026/11/26/a/b.txt"]
    listed = s3_admin.list_objects_v2(Bucket=raw["bucket_name"])["Contents"]
    assert [o["Key"] for o in listed] == ["prod/redis/deploy/2026/11/26/a/b.txt"]


def test_listing_pages_use_list_page_size(moto: MotoServer, s3_config: dict[str, Any]) -> None:
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        for i in range(7):
            dest.write(f"p/{i}.txt", Source.from_bytes(b"x"))
        dest.list_page_size = 3
        offset = log_offset(moto)
        assert sorted(o.key for o in dest.list("p/")) == [f"p/{i}.txt" for i in range(7)]
    lists = [r for r in requests_since(moto, offset) if r.startswith("GET")]
    assert len(lists) == 3 and all("max-keys=3" in r for r in lists)


def test_storage_class_and_server_side_encryption(s3_config: dict[str, Any], s3_admin: Any) -> None:
    raw = {**s3_config, "storage_class": "STANDARD_IA", "server_side_encryption": "AES256"}
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("small.bin", Source.from_bytes(b"s" * 10))
        dest.write("big.bin", Source.from_bytes(os.urandom(BIG)))
    for key in ("small.bin", "big.bin"):
        head = s3_admin.head_object(Bucket=raw["bucket_name"], Key=f"backups/redis/{key}")
        assert head["StorageClass"] == "STANDARD_IA", key
        assert head["ServerSideEncryption"] == "AES256", key


def test_path_style_by_default_for_custom_endpoints(s3_config: dict[str, Any]) -> None:
    with open_destination(s3_config) as dest:
        assert dest.client.meta.config.s3["addressing_style"] == "path"
    with open_destination({**s3_config, "addressing_style": "virtual"}) as dest:
        assert dest.client.meta.config.s3["addressing_style"] == "virtual"
    aws = {k: v for k, v in s3_config.items() if k != "endpoint_url"}
    with open_destination(aws) as dest:
        assert dest.client.meta.config.s3["addressing_style"] == "auto"
        assert dest.client.meta.endpoint_url == "https://s3.amazonaws.com"


def test_invalid_options_fail_validation_naming_the_field(s3_config: dict[str, Any]) -> None:
    for field, value in (("addressing_style", "sideways"), ("server_side_encryption", "rot13")):
        with pytest.raises(ConfigError, match=rf"config\.{field}"):
            structure_destination_config({**s3_config, field: value}, S3Config)


def test_no_request_after_each_put(moto: MotoServer, s3_config: dict[str, Any]) -> None:
    """Small files cost one PutObject each: no HEAD, no GET (halves throughput on moto)."""
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        offset = log_offset(moto)
        for i in range(20):
            assert dest.write(f"f/{i}.txt", Source.from_bytes(b"%d" % i)).key
    methods = [r.split()[0] for r in requests_since(moto, offset)]
    assert methods == ["PUT"] * 20


# ------------------------------------------------------------------------------------- TLS


def tls_config(moto_tls: MotoServer, **extra: Any) -> dict[str, Any]:
    return {
        "bucket_name": new_bucket_name(),
        "bucket_path": "tls",
        "access_key_id": moto_tls.access_key_id,
        "secret_access_key": moto_tls.secret_access_key,
        "endpoint_url": moto_tls.endpoint,
        **extra,
    }


def test_tls_endpoint_with_private_ca(moto_tls: MotoServer) -> None:
    data = os.urandom(BIG)
    with open_destination(tls_config(moto_tls, ca_cert=moto_tls.ca_cert)) as dest:
        dest.ensure_location()
        assert dest.write("small.txt", Source.from_bytes(b"over tls")).size == 8
        assert dest.write("big.bin", Source.from_bytes(data)).size == BIG
        with dest.open_read("big.bin") as stream:
            assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()
        bundle = Path(dest._bundle.path)
        assert bundle.is_file()
    assert not bundle.exists(), "the combined CA bundle outlived the destination"


def test_tls_endpoint_without_its_ca_is_refused(moto_tls: MotoServer) -> None:
    started = time.monotonic()
    with open_destination(tls_config(moto_tls)) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert f"TLS certificate of {moto_tls.endpoint} not trusted" in str(info.value)
    assert "trusted_certs" in str(info.value)  # where the operator adds the CA
    assert time.monotonic() - started < 30  # a certificate error is not retried for minutes


def test_invalid_ca_cert_is_reported(moto_tls: MotoServer) -> None:
    with pytest.raises(DestinationError, match="ca_cert is not a valid PEM certificate"):
        open_destination(tls_config(moto_tls, ca_cert="-----BEGIN CERTIFICATE-----\nnope\n"))


def test_ca_bundle_keeps_the_system_trust_store(moto_tls: MotoServer) -> None:
    bundle = CaBundle(moto_tls.ca_cert)
    try:
        path = Path(bundle.path)
        text = path.read_text()
        assert text.startswith(Path(system_ca_bundle()).read_text().rstrip("\n"))
        assert text.rstrip().endswith(moto_tls.ca_cert.strip())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        bundle.close()
    assert not path.parent.exists()
    assert CaBundle("").path == system_ca_bundle()


# ------------------------------------------------------------------------------- integrity


class CorruptingRelay:
    """A TCP relay to moto that alters one marker in what the client sends.

    ``answer``: a (find, replace) pair of equal length also applied to what moto answers.
    ``cut_at``: a marker in moto's answer; the answer is relayed up to it, then the
    connection is shut down (a body cut short of its ``Content-Length``).
    """

    def __init__(
        self,
        port: int,
        find: bytes,
        replace: bytes,
        answer: tuple[bytes, bytes] | None = None,
        cut_at: bytes = b"",
    ) -> None:
        assert len(find) == len(replace)
        assert answer is None or len(answer[0]) == len(answer[1])
        self.port, self.find, self.replace, self.answer = port, find, replace, answer
        self.cut_at = cut_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.corrupted = threading.Event()
        #: Set when an answer was cut at ``cut_at``.
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        held = b""  # the answer's tail that may hold the start of ``cut_at``
        try:
            while data := src.recv(65536):
                if outbound and self.find in data:
                    data = data.replace(self.find, self.replace)
                    self.corrupted.set()
                if not outbound and self.answer and self.answer[0] in data:
                    data = data.replace(*self.answer)
                if not outbound and self.cut_at:
                    data, held = held + data, b""
                    if self.cut_at in data:
                        dst.sendall(data[: data.index(self.cut_at)])
                        self.cut.set()
                        return
                    keep = len(self.cut_at) - 1
                    data, held = data[: len(data) - keep], data[len(data) - keep :]
                dst.sendall(data)
            if held:
                dst.sendall(held)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def relay(moto: MotoServer) -> Iterator[CorruptingRelay]:
    port = int(moto.endpoint.rsplit(":", 1)[1])
    relay = CorruptingRelay(port, b"GOOD-BACKUP-DATA", b"ROTTEN-BYTES-NOW")
    yield relay
    relay.close()


def test_corrupted_transfer_fails_and_leaves_nothing(
    relay: CorruptingRelay, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    body = b"header " + b"GOOD-BACKUP-DATA" + b" trailer"
    with open_destination({**s3_config, "endpoint_url": relay.endpoint}) as dest:
        dest.ensure_location()
        with pytest.raises(DestinationError) as info:
            dest.write("corrupt.bin", Source.from_bytes(body))
    assert relay.corrupted.is_set(), "the relay never saw the payload"
    assert "integrity check failed" in str(info.value)
    with open_destination(s3_config) as dest, pytest.raises(ObjectNotFound):
        dest.stat("corrupt.bin")
    assert s3_admin.list_objects_v2(Bucket=s3_config["bucket_name"]).get("KeyCount") == 0


class ThrottlingRelay:
    """Answers the first ``throttle`` requests with 503 SlowDown, relays the rest to moto."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    )
    SLOW_DOWN = (
        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )

    def __init__(self, port: int, throttle: int) -> None:
        self.port, self.throttle = port, throttle
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                client.close()
                return
            head += data
        self.requests += 1
        if self.requests <= self.throttle:
            client.sendall(self.SLOW_DOWN)
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.port))
        upstream.sendall(head)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def moto_port(moto: MotoServer) -> int:
    return int(moto.endpoint.rsplit(":", 1)[1])


def test_throttling_is_retried_with_back_off(
    moto_port: int, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    with open_destination(s3_config) as dest:
        dest.ensure_location()
    relay = ThrottlingRelay(moto_port, throttle=2)
    try:
        with open_destination({**s3_config, "endpoint_url": relay.endpoint}) as dest:
            assert dest.write("retried.txt", Source.from_bytes(b"retried")).size == 7
    finally:
        relay.close()
    assert relay.requests == 3  # two refusals, then the PUT that went through
    got = s3_admin.get_object(Bucket=s3_config["bucket_name"], Key="backups/redis/retried.txt")
    assert got["Body"].read() == b"retried"


def test_persistent_throttling_fails_in_bounded_time(
    moto_port: int, s3_config: dict[str, Any]
) -> None:
    relay = ThrottlingRelay(moto_port, throttle=1_000_000)
    started = time.monotonic()
    try:
        with (
            open_destination({**s3_config, "endpoint_url": relay.endpoint}) as dest,
            pytest.raises(DestinationError) as info,
        ):
            dest.write("never.txt", Source.from_bytes(b"never"))
    finally:
        relay.close()
    assert time.monotonic() - started < 30
    assert relay.requests == MAX_ATTEMPTS  # bounded retries, not one attempt and not forever
    assert str(info.value).startswith(f"cannot upload {s3_config['bucket_name']}/")
    assert "SlowDown" in str(info.value)


# ------------------------------------------------------------------------------ end to end


def test_manual_backup_cli_end_to_end(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any, tmp_path: Path
) -> None:
    """The real CLI, the seed's IAM policy, a new bucket, small and multipart files."""
    bucket = s3_config["bucket_name"]
    raw = user_config(moto, s3_config, seed_policy(bucket))
    source = tmp_path / "source"
    files = {"dump.rdb": os.urandom(2048), "aof/appendonly.aof": b"SET k v\n", "big.bin": b""}
    (source / "aof").mkdir(parents=True)
    for name, data in files.items():
        (source / name).write_bytes(data)
    big = source / "big.bin"
    with open(big, "wb") as f:
        for _ in range(BIG // MiB):
            f.write(os.urandom(MiB))
    files["big.bin"] = big.read_bytes()
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "s3", "name": "primary-s3", "config": raw}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
            "deployment_name": "redis-prod",
            "add_deployment_name_to_backup_path": True,
        },
    )
    stamp = time.strftime("%Y/%m/%d")
    result = run_cli("backup", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    about = result.find(
        f"about to upload {source} to S3 remote path {bucket}/backups/redis/redis-prod/{stamp}"
    )
    assert about and about[0]["data"]["destination_name"] == "primary-s3"
    done = result.find("Upload backup completed successfully")
    assert done and done[0]["data"]["size_in_bytes"] == sum(len(d) for d in files.values())
    for secret in (raw["secret_access_key"], raw["access_key_id"]):
        assert secret not in result.stdout and secret not in result.stderr
    prefix = f"backups/redis/redis-prod/{stamp}/"
    listed = s3_admin.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    manifest = ".service-backup-manifest.json"
    assert sorted(o["Key"].removeprefix(prefix) for o in listed) == sorted([*files, manifest])
    for name, data in files.items():
        stored = s3_admin.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        assert stored == data, name


def test_cli_failure_is_one_line_without_secrets(s3_config: dict[str, Any], tmp_path: Path) -> None:
    raw = {**s3_config, "secret_access_key": "definitely-wrong-secret"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("data")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "s3", "config": raw}],
            "source_folder": str(tmp_path / "src"),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("backup", str(config))
    assert result.returncode == 1
    failed = result.find("Upload backup completed with error")
    assert failed, result.stdout
    error = failed[0]["data"]["error"]
    assert "SignatureDoesNotMatch" in error and raw["bucket_name"] in error
    for secret in (raw["secret_access_key"], raw["access_key_id"]):
        assert secret not in result.stdout and secret not in result.stderr
    assert "Traceback" not in result.stderr
    assert json.dumps(error).count("\\n") == 0


def test_check_cli_round_trip(s3_config: dict[str, Any], s3_admin: Any, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "s3", "name": "s3-check", "config": s3_config}],
            "source_folder": str(tmp_path),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("check", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    bucket = s3_config["bucket_name"]
    assert f"ok   s3-check (s3): write, list, read, delete ok at {bucket}/backups/redis/" in (
        result.stdout
    )
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # the probe is gone
    assert s3_config["secret_access_key"] not in result.stdout + result.stderr


def test_validate_cli_names_a_bad_option(s3_config: dict[str, Any], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "s3", "config": {**s3_config, "addressing_style": "dns"}}],
            "source_folder": str(tmp_path),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 2
    assert "destinations[0].config.addressing_style" in result.stdout + result.stderr
    assert s3_config["secret_access_key"] not in result.stdout + result.stderr


@pytest.mark.parametrize("size", [1000, BIG], ids=["single-put", "multipart"])
def test_source_shorter_than_listed_fails_before_completing(
    s3_config: dict[str, Any], tmp_path: Path, size: int
) -> None:
    path = tmp_path / "shrinking.rdb"
    path.write_bytes(os.urandom(size))
    file = SourceFile(path=path, relative="shrinking.rdb", size=size)
    with open(path, "r+b") as f:
        f.truncate(size - 100)  # shrank after the run listed it
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        with pytest.raises(SourceError, match=r"shrinking\.rdb ended early"):
            upload_one(dest, "shrink/shrinking.rdb", file)
        with pytest.raises(ObjectNotFound):
            dest.stat("shrink/shrinking.rdb")


def test_corrupted_part_fails_the_multipart_upload(
    relay: CorruptingRelay, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """Each part carries its Content-MD5: a part altered on the way is refused by the store."""
    data = bytearray(os.urandom(BIG))
    data[BIG // 2 : BIG // 2 + 16] = b"GOOD-BACKUP-DATA"
    with open_destination({**s3_config, "endpoint_url": relay.endpoint}) as dest:
        dest.ensure_location()
        with pytest.raises(DestinationError) as info:
            dest.write("corrupt-big.bin", Source.from_bytes(bytes(data)))
    assert relay.corrupted.is_set(), "the relay never saw the payload"
    message = str(info.value)
    assert message.startswith(
        f"cannot upload {s3_config['bucket_name']}/backups/redis/corrupt-big.bin"
    )
    assert "integrity check failed" in message or "BadDigest" in message, message
    bucket = s3_config["bucket_name"]
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
