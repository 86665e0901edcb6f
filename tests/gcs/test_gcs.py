"""GCS-specific behaviour: the key JSON, the token flow, buckets, retries, checksums, the CLI.

Most tests run against gcp-storage-emulator with tokens from the verifying local endpoint.
What the emulator cannot show (it checks no credentials, answers no 403, ignores page sizes,
bucket location and storage class, and never fails a request) is shown against ``FakeGCS``: a
scripted HTTP server on loopback that speaks just those few JSON API responses. The SDK is
never patched: it talks HTTP to a real socket in every test.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound, SourceError
from service_backup.plugins import load_registry
from service_backup.source import Source
from service_backup_gcs.destination import SINGLE_REQUEST_LIMIT, GCSDestination
from tests.core.cli import run_cli, write_config
from tests.gcs.server import GCSServer, generate_key
from tests.servers import free_port

MiB = 1024 * 1024
TODAY = time.strftime("%Y/%m/%d")


# ------------------------------------------------------------------------------ helpers
def open_destination(raw: dict[str, Any], name: str = "gcs-test") -> GCSDestination:
    dtype = load_registry(hook_plugins=False).destination_type("gcs")
    config = structure_destination_config(raw, dtype.config_class)
    destination = dtype.factory(config, DestinationContext(name))
    assert isinstance(destination, GCSDestination)
    return destination


def key_lines(server: GCSServer) -> list[str]:
    """The private key's base64 lines: none may ever appear in an error or a log."""
    return [
        line
        for line in server.key.private_key_pem.splitlines()
        if line and not line.startswith("-----")
    ]


def assert_no_key_material(text: str, server: GCSServer) -> None:
    assert "PRIVATE KEY" not in text
    for line in key_lines(server):
        assert line not in text
    assert server.service_account_json not in text


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def config_error(raw: dict[str, Any]) -> str:
    registry = load_registry(hook_plugins=False)
    document = {
        "destinations": [{"type": "gcs", "config": raw}],
        "source_folder": "/tmp",
        "cron_schedule": "@daily",
    }
    with pytest.raises(ConfigError) as info:
        parse_config(document, registry)
    return str(info.value)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class FakeGCS:
    """A scripted GCS JSON API on loopback: ``respond(seen)`` returns (status, body[, headers])."""

    respond: Callable[[Seen], Reply]
    seen: list[Seen] = field(default_factory=list)
    #: TCP connections accepted (the server keeps them alive between requests).
    connections: int = 0

    def __post_init__(self) -> None:
        fake = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with lock:
                    fake.connections += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(
                    self.command,
                    urllib.parse.unquote(url.path),
                    urllib.parse.parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                fake.seen.append(seen)
                status, payload, *rest = fake.respond(seen)
                headers = dict(rest[0]) if rest else {}
                truncate = headers.pop("X-Fake-Truncate", None)  # drop the connection early
                if isinstance(payload, bytes):
                    data = payload
                else:
                    data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if truncate is not None:
                    data, self.close_connection = data[: int(truncate)], True
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests_to(self, method: str, pattern: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.fullmatch(pattern, s.path)]


@pytest.fixture
def fake_gcs() -> Iterator[Callable[[Callable[[Seen], Reply]], FakeGCS]]:
    started: list[FakeGCS] = []

    def start(respond: Callable[[Seen], Reply]) -> FakeGCS:
        started.append(FakeGCS(respond))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def gcs_error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"reason": reason}]}}


def bucket_resource(name: str) -> dict[str, Any]:
    return {"kind": "storage#bucket", "name": name, "location": "US", "storageClass": "STANDARD"}


# ---------------------------------------------------------------------- configuration
def test_config_defaults_and_normalisation(gcs_server: GCSServer) -> None:
    dtype = load_registry(hook_plugins=False).destination_type("gcs")
    minimal = {k: v for k, v in gcs_server.config("b").items() if k != "endpoint"}
    config = structure_destination_config(minimal, dtype.config_class)
    assert (config.location, config.storage_class, config.bucket_path, config.endpoint) == (
        "US", "STANDARD", "", "",
    )  # fmt: skip
    config = structure_destination_config(
        {**minimal, "bucket_path": "/a/b/", "storage_class": "nearline", "location": " "},
        dtype.config_class,
    )
    assert (config.bucket_path, config.storage_class, config.location) == ("a/b", "NEARLINE", "US")
    assert gcs_server.key.private_key_pem not in repr(config)


def test_malformed_json_is_named_without_key_material(gcs_server: GCSServer) -> None:
    broken = gcs_server.service_account_json.rstrip().removesuffix("}") + ","
    message = config_error(gcs_server.config("b", service_account_json=broken))
    assert "destinations[0].config: service_account_json is not valid JSON" in message
    assert "line " in message and "column " in message
    assert "Provide these missing fields in your manifest." in message
    assert_no_key_material(message, gcs_server)


@pytest.mark.parametrize("field_name", ["private_key", "client_email", "token_uri"])
def test_key_without_a_needed_field_is_named(gcs_server: GCSServer, field_name: str) -> None:
    info = json.loads(gcs_server.service_account_json)
    del info[field_name]
    message = config_error(gcs_server.config("b", service_account_json=json.dumps(info)))
    assert f"service_account_json has no {field_name}" in message
    assert "destinations[0].config" in message
    assert_no_key_material(message, gcs_server)


def test_an_unknown_credential_type_is_named(gcs_server: GCSServer) -> None:
    bogus = json.dumps({"type": "bogus_account", "private_key": "p-key-value-123456"})
    message = config_error(gcs_server.config("b", service_account_json=bogus))
    assert "service_account_json has type 'bogus_account', which google-auth does not" in message
    assert "authorized_user" in message and "external_account" in message
    assert "p-key-value-123456" not in message
    assert "is not valid JSON" in config_error(gcs_server.config("b", service_account_json="x"))
    assert "must be a JSON object" in config_error(
        gcs_server.config("b", service_account_json="[1]")
    )


def test_google_auth_judges_other_credential_types(gcs_server: GCSServer, tmp_path: Path) -> None:
    """authorized_user and external_account load; what google-auth misses is named."""
    subject_token = tmp_path / "token"
    subject_token.write_text("eyJ.subject.token")
    dtype = load_registry(hook_plugins=False).destination_type("gcs")
    user = {"type": "authorized_user", "client_id": "id.apps.googleusercontent.com",
            "client_secret": "c-secret-value-1", "refresh_token": "r-token-value-123"}  # fmt: skip
    federation = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/"
        "pool/providers/provider",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"file": str(subject_token)},
    }
    for info in (user, federation):
        raw = gcs_server.config("b", service_account_json=json.dumps(info))
        structure_destination_config(raw, dtype.config_class)  # no error
    federation["credential_source"] = {}
    message = config_error(gcs_server.config("b", service_account_json=json.dumps(federation)))
    assert "not usable external_account credentials: Missing credential_source" in message
    del user["client_id"]
    message = config_error(gcs_server.config("b", service_account_json=json.dumps(user)))
    assert "service_account_json is not usable authorized_user credentials" in message
    assert "client_id" in message, "google-auth's reason (the missing field) was lost"
    assert "r-token-value-123" not in message and "c-secret-value-1" not in message


def test_bad_storage_class_and_endpoint_are_named(gcs_server: GCSServer) -> None:
    assert "storage_class must be one of" in config_error(
        gcs_server.config("b", storage_class="ice")
    )
    assert "endpoint must be a URL" in config_error(
        gcs_server.config("b", endpoint="127.0.0.1:9023")
    )


def test_unparseable_private_key_fails_when_the_destination_opens_without_quoting_it(
    gcs_server: GCSServer,
) -> None:
    """Key material is parsed when a destination opens (a placeholder key validates, as the
    seed's rendered example has one); armour that is not PEM fails validation already."""
    info = json.loads(gcs_server.service_account_json)
    info["private_key"] = "not a key at all: Tm90QUtleUF0QWxs"
    message = config_error(gcs_server.config("b", service_account_json=json.dumps(info)))
    assert "its private_key is not a PEM private key" in message
    assert "Tm90QUtleUF0QWxs" not in message

    info["private_key"] = (
        "-----BEGIN PRIVATE KEY-----\nTm90QUtleUF0QWxs\n-----END PRIVATE KEY-----\n"
    )
    raw = gcs_server.config("b", service_account_json=json.dumps(info))
    registry = load_registry(hook_plugins=False)
    dtype = registry.destination_type("gcs")
    config = structure_destination_config(raw, dtype.config_class)  # validates
    with (
        pytest.raises(DestinationError) as failed,
        dtype.factory(config, DestinationContext("gcs-test")) as destination,
    ):
        destination.ensure_location()
    message = str(failed.value)
    assert "service_account_json is not usable service_account credentials: its private_key " in (
        message
    )
    assert "Tm90QUtleUF0QWxs" not in message


def test_cli_validate_names_the_field(gcs_server: GCSServer, tmp_path: Path) -> None:
    info = json.loads(gcs_server.service_account_json)
    del info["private_key"]
    config = write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [
                {
                    "type": "gcs",
                    "config": gcs_server.config("b", service_account_json=json.dumps(info)),
                }
            ],
            "source_folder": str(tmp_path),
            "cron_schedule": "@daily",
        },
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "destinations[0].config: service_account_json has no private_key" in output
    assert "Traceback" not in output
    assert info["client_email"] in config.read_text()  # the JSON went in, and not back out:
    assert_no_key_material(output, gcs_server)


# --------------------------------------------------------------------- the token flow
def test_signed_jwt_is_exchanged_at_the_token_uri(gcs_server: GCSServer, gcs_config) -> None:
    before = len(gcs_server.tokens.granted_calls())
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        destination.write("probe.txt", Source.from_bytes(b"probe"))
    granted = gcs_server.tokens.granted_calls()[before:]
    assert granted, "the plugin never fetched a token: anonymous access would pass unnoticed"
    assert {call.client_email for call in granted} == {gcs_server.key.client_email}
    assert {call.path for call in granted} == {"/token"}


def test_refusing_token_endpoint_fails_fast_and_clearly(gcs_server: GCSServer, gcs_config) -> None:
    raw = {**gcs_config, "service_account_json": gcs_server.refused_key_json()}
    started = time.monotonic()
    with open_destination(raw) as destination, pytest.raises(DestinationError) as failure:
        destination.ensure_location()
    assert time.monotonic() - started < 15
    message = str(failure.value)
    assert f"the token endpoint {gcs_server.tokens.refusing_token_uri} refused" in message
    assert gcs_server.key.client_email in message
    assert "invalid_grant" in message
    assert "\n" not in message
    assert_no_key_material(message, gcs_server)
    assert any(call.path == "/refuse" for call in gcs_server.token_calls)


def test_a_key_the_endpoint_does_not_know_is_refused(gcs_server: GCSServer, gcs_config) -> None:
    stranger = generate_key(gcs_server.key.client_email)  # same account, a key never registered
    raw = {**gcs_config, "service_account_json": stranger.json(gcs_server.token_uri)}
    with open_destination(raw) as destination, pytest.raises(DestinationError) as failure:
        destination.ensure_location()
    assert "refused the service account" in str(failure.value)
    assert stranger.private_key_pem.splitlines()[1] not in str(failure.value)
    last = gcs_server.token_calls[-1]
    assert not last.granted and "InvalidSignatureError" in last.reason


def test_unreachable_token_endpoint_fails_in_bounded_time(
    gcs_server: GCSServer, gcs_config
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/token"
    raw = {**gcs_config, "service_account_json": gcs_server.key.json(dead)}
    with open_destination(raw) as destination:
        destination.retry_deadline = 2.0
        started = time.monotonic()
        with pytest.raises(DestinationError) as failure:
            destination.ensure_location()
    assert time.monotonic() - started < 20
    assert f"cannot reach the token endpoint {dead}: connection refused" in str(failure.value)


# ------------------------------------------------------------------------------ buckets
def test_bucket_is_created_with_location_and_storage_class(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    def respond(seen: Seen) -> Reply:
        if seen.method == "GET":
            return 404, gcs_error(404, "notFound", "The specified bucket does not exist.")
        return 200, bucket_resource(bucket_name)

    fake = fake_gcs(respond)
    raw = gcs_server.config(bucket_name, endpoint=fake.url, location="EU", storage_class="nearline")
    with open_destination(raw) as destination:
        destination.ensure_location()
    (insert,) = fake.requests_to("POST", "/storage/v1/b")
    assert insert.query["project"] == [gcs_server.project_id]
    body = json.loads(insert.body)
    assert (body["name"], body["location"], body["storageClass"]) == (bucket_name, "EU", "NEARLINE")
    assert insert.headers["authorization"].startswith("Bearer ya29.test-")


def test_default_bucket_attributes_on_the_emulator(gcs_config, inspector, bucket_name) -> None:
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
    bucket = inspector.get_bucket(bucket_name)
    assert (bucket.location, bucket.storage_class) == ("US", "STANDARD")


def test_existing_bucket_is_used_as_it_is(gcs_config, inspector, bucket_name) -> None:
    inspector.create_bucket(bucket_name)
    inspector.bucket(bucket_name).blob("keep.txt").upload_from_string(b"keep")
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        destination.write("new.txt", Source.from_bytes(b"new"))
    names = sorted(b.name for b in inspector.list_blobs(bucket_name))
    assert names == ["backups/redis/new.txt", "keep.txt"]


def test_forbidden_is_told_apart_from_not_found(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    fake = fake_gcs(lambda seen: (403, gcs_error(403, "forbidden", "does not have access")))
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        with pytest.raises(DestinationError) as on_check:
            destination.ensure_location()
        with pytest.raises(DestinationError) as on_write:
            destination.write("x.txt", Source.from_bytes(b"x"))
    for failure in (on_check, on_write):
        message = str(failure.value)
        assert f"access denied to bucket {bucket_name}" in message
        assert gcs_server.key.client_email in message
        assert "not found" not in message
    assert not fake.requests_to("POST", "/storage/v1/b"), "no bucket creation after a 403"


def test_missing_bucket_is_named(gcs_config, bucket_name: str) -> None:
    with open_destination(gcs_config) as destination:  # ensure_location not called
        with pytest.raises(DestinationError) as failure:
            destination.write("x.txt", Source.from_bytes(b"x"))
        assert f"bucket {bucket_name} not found" in str(failure.value)
        assert not isinstance(failure.value, ObjectNotFound)
        assert list(destination.list("")) == []
        with pytest.raises(ObjectNotFound):
            destination.stat("x.txt")


def test_bucket_name_taken_by_another_project(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    checks = iter([404, 403])

    def respond(seen: Seen) -> Reply:
        if seen.method == "POST":
            return 409, gcs_error(409, "conflict", "The requested bucket name is not available.")
        status = next(checks)
        return status, gcs_error(status, "x", "no")

    fake = fake_gcs(respond)
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        pytest.raises(DestinationError) as failure,
    ):
        destination.ensure_location()
    assert f"bucket name {bucket_name} is taken by another project" in str(failure.value)


# ------------------------------------------------------------------------------ retries
def test_5xx_and_429_are_retried(gcs_server: GCSServer, fake_gcs, bucket_name: str) -> None:
    answers = iter([503, 429, 500])

    def respond(seen: Seen) -> Reply:
        status = next(answers, 200)
        if status != 200:
            return status, gcs_error(status, "backendError", "try again")
        return 200, bucket_resource(bucket_name)

    fake = fake_gcs(respond)
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        destination.ensure_location()
    assert len(fake.requests_to("GET", f"/storage/v1/b/{bucket_name}")) == 4


def test_persistent_5xx_gives_up_in_bounded_time(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    fake = fake_gcs(lambda seen: (503, gcs_error(503, "backendError", "Backend Error")))
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        destination.retry_deadline = 2.0
        started = time.monotonic()
        with pytest.raises(DestinationError) as failure:
            destination.ensure_location()
    assert time.monotonic() - started < 15
    message = str(failure.value)
    assert f"checking bucket {bucket_name} failed: HTTP 503 Service Unavailable" in message
    assert "gave up after retrying" in message
    assert len(fake.seen) >= 2


def test_client_errors_are_not_retried(gcs_server: GCSServer, fake_gcs, bucket_name) -> None:
    fake = fake_gcs(lambda seen: (400, gcs_error(400, "invalid", "Invalid bucket name")))
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        pytest.raises(DestinationError, match="HTTP 400 Bad Request: Invalid bucket name"),
    ):
        destination.ensure_location()
    assert len(fake.seen) == 1


# ----------------------------------------------------------------- uploads and checksums
def test_small_upload_sends_its_crc32c(gcs_server: GCSServer, fake_gcs, bucket_name) -> None:
    data = b"small object" * 100

    def respond(seen: Seen) -> Reply:
        return 200, {"name": "backups/x.bin", "bucket": bucket_name, "size": str(len(data))}

    fake = fake_gcs(respond)
    raw = gcs_server.config(bucket_name, endpoint=fake.url, bucket_path="backups")
    with open_destination(raw) as destination:
        info = destination.write("x.bin", Source.from_bytes(data))
    assert info.size == len(data)
    (upload,) = fake.requests_to("POST", f"/upload/storage/v1/b/{bucket_name}/o")
    assert upload.query["uploadType"] == ["multipart"]
    assert f'"crc32c": "{crc32c_b64(data)}"' in upload.body.decode("latin-1")
    assert '"name": "backups/x.bin"' in upload.body.decode("latin-1")


class ResumableSession:
    """The resumable-upload side of FakeGCS: keeps what it receives, can fail on cue."""

    def __init__(self, bucket: str, size: int, fail_first_put_after: int | None = None) -> None:
        self.bucket, self.size = bucket, size
        self.fail_first_put_after = fail_first_put_after
        self.kept = bytearray()
        self.crc32c: str | None = None  # what the final answer reports (None: the truth)
        self.url = ""

    def respond(self, seen: Seen) -> Reply:
        if seen.method == "POST":  # the SDK starting the session
            return (
                200,
                {},
                {"Location": f"{self.url}/upload/storage/v1/b/{self.bucket}/o?upload_id=s1"},
            )
        if seen.method == "DELETE":
            return 204, None
        content_range = seen.headers["content-range"]
        if content_range == f"bytes */{self.size}":  # "how much did you keep?"
            return 308, None, ({"Range": f"bytes=0-{len(self.kept) - 1}"} if self.kept else {})
        match = re.fullmatch(r"bytes (\d+)-\d+/\d+", content_range)
        assert match, content_range
        start = int(match.group(1))
        assert start == len(self.kept), "the client resumed from the wrong offset"
        if self.fail_first_put_after is not None:
            self.kept.extend(seen.body[: self.fail_first_put_after])
            self.fail_first_put_after = None
            return 503, gcs_error(503, "backendError", "try again")
        self.kept.extend(seen.body)
        return 200, {"name": "big.bin", "bucket": self.bucket, "size": str(len(self.kept)),
                     "crc32c": self.crc32c or crc32c_b64(bytes(self.kept))}  # fmt: skip


def test_large_upload_is_streamed_in_one_request(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    size = 24 * MiB + 17
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    session = ResumableSession(bucket_name, size)
    fake = fake_gcs(session.respond)
    session.url = fake.url
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        info = destination.write("big.bin", Source.from_bytes(data))
    assert info.size == size
    (put,) = fake.requests_to("PUT", f"/upload/storage/v1/b/{bucket_name}/o")
    assert put.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert int(put.headers["content-length"]) == size
    assert bytes(session.kept) == data
    assert put.headers["authorization"].startswith("Bearer ya29.test-")


def test_failed_stream_resumes_where_the_session_stopped(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    size = 5 * MiB + 3
    data = bytes((i * 7) % 251 for i in range(size))
    kept_before_failure = 3 * MiB + 5
    session = ResumableSession(bucket_name, size, fail_first_put_after=kept_before_failure)
    fake = fake_gcs(session.respond)
    session.url = fake.url
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        assert destination.write("big.bin", Source.from_bytes(data)).size == size
    puts = fake.requests_to("PUT", f"/upload/storage/v1/b/{bucket_name}/o")
    assert [p.headers["content-range"] for p in puts] == [
        f"bytes 0-{size - 1}/{size}",
        f"bytes */{size}",
        f"bytes {kept_before_failure}-{size - 1}/{size}",
    ]
    assert puts[2].body == data[kept_before_failure:]
    assert bytes(session.kept) == data  # and the CRC32C of the whole file matched


def test_checksum_mismatch_removes_the_object(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    size = SINGLE_REQUEST_LIMIT + 1
    session = ResumableSession(bucket_name, size)
    session.crc32c = crc32c_b64(b"not what was sent")
    fake = fake_gcs(session.respond)
    session.url = fake.url
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        pytest.raises(DestinationError) as failure,
    ):
        destination.write("big.bin", Source.from_bytes(b"\x01" * size))
    assert "checksum mismatch" in str(failure.value)
    assert f"{bucket_name}/big.bin" in str(failure.value)
    assert fake.requests_to("DELETE", f"/storage/v1/b/{bucket_name}/o/big.bin")


def test_short_source_leaves_no_object(
    gcs_config, inspector, bucket_name: str, tmp_path: Path
) -> None:
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        for size in (100, SINGLE_REQUEST_LIMIT + 100):  # one request; streamed
            key = f"short-{size}.bin"
            path = tmp_path / key
            path.write_bytes(b"s" * (size - 10))
            source = Source(str(path), size, path=path)  # listed longer than it is
            with pytest.raises(SourceError, match=rf"{key} ended early"):
                destination.write(key, source)
            source.close()
            with pytest.raises(ObjectNotFound):
                destination.stat(key)
    assert list(inspector.list_blobs(bucket_name)) == [], "a short source left an object"


def test_read_is_one_request_and_verifies_crc32c(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    data = b"stored bytes"

    def respond(seen: Seen) -> Reply:
        stored = crc32c_b64(b"other bytes!")
        return 200, data, {"X-Goog-Generation": "7", "X-Goog-Stored-Content-Length": "12",
                           "X-Goog-Hash": f"crc32c={stored},md5=x=="}  # fmt: skip

    fake = fake_gcs(respond)
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        stream = destination.open_read("k.txt")
        with pytest.raises(DestinationError, match="checksum mismatch") as failure:
            stream.read()
        stream.close()
    assert f"{bucket_name}/k.txt" in str(failure.value), "the error does not name the object"
    assert [s.path for s in fake.seen] == [f"/download/storage/v1/b/{bucket_name}/o/k.txt"], (
        "reading an object must cost one media GET, no metadata GET first"
    )


def test_a_missing_object_is_reported_by_open_read(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    fake = fake_gcs(lambda seen: (404, gcs_error(404, "notFound", "No such object")))
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        pytest.raises(ObjectNotFound, match=rf"gone\.bin not found in bucket {bucket_name}"),
    ):
        destination.open_read("gone.bin")
    assert len(fake.seen) == 1, "a 404 is an answer, not something to retry"


def _versions(
    data: dict[str, bytes], cut: int, replace_with: str | None = None
) -> Callable[[Seen], Reply]:
    """A fake media endpoint serving generation "3" first, cut after ``cut`` bytes.

    With ``replace_with``, the object is replaced (that generation becomes current) as the
    first answer goes out; a GET pinned to a generation that is gone gets a 404, as from GCS.
    """
    current = ["3"]

    def respond(seen: Seen) -> Reply:
        asked = seen.headers.get("range")
        pinned = seen.query.get("generation", [None])[0]
        if asked is None:
            body = data[current[0]]
            if replace_with is not None:
                current[0] = replace_with
            return 200, body, {"X-Fake-Truncate": str(cut), "X-Goog-Generation": "3",
                               "X-Goog-Hash": f"crc32c={crc32c_b64(body)}"}  # fmt: skip
        generation = pinned or current[0]
        if generation not in data or (pinned is not None and pinned != current[0]):
            return 404, gcs_error(404, "notFound", "No such object")
        match = re.fullmatch(r"bytes=(\d+)-", asked)
        assert match, asked
        start, body = int(match.group(1)), data[generation]
        return 206, body[start:], {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}",
                                   "X-Goog-Generation": generation}  # fmt: skip

    return respond


def test_interrupted_download_resumes_with_a_range_of_the_same_generation(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    data = bytes((i * 13) % 256 for i in range(3 * MiB))
    cut = MiB + 123
    fake = fake_gcs(_versions({"3": data}, cut))
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        destination.open_read("k.bin") as stream,
    ):
        assert stream.read() == data, "the resumed read returned other bytes"
    downloads = [(s.headers.get("range"), s.query.get("generation")) for s in fake.seen]
    assert downloads == [(None, None), (f"bytes={cut}-", ["3"])], (
        "the resume must ask for the rest of the generation the first answer named"
    )


def test_an_object_replaced_during_a_read_is_never_mixed_in(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    old = bytes((i * 13) % 256 for i in range(3 * MiB))
    new = bytes((i * 17) % 256 for i in range(3 * MiB))  # same size, other bytes
    fake = fake_gcs(_versions({"3": old, "4": new}, MiB + 123, replace_with="4"))
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        stream = destination.open_read("k.bin")
        with pytest.raises(ObjectNotFound, match="replaced or deleted while read") as failure:
            stream.read()
        stream.close()
    assert f"k.bin not found in bucket {bucket_name}" in str(failure.value)
    assert fake.seen[-1].query.get("generation") == ["3"], "the resume was not pinned"


def test_a_cut_read_without_generation_or_checksum_is_not_resumed(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    data = b"z" * (2 * MiB)
    fake = fake_gcs(lambda seen: (200, data, {"X-Fake-Truncate": str(MiB)}))
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        stream = destination.open_read("k.bin")
        with pytest.raises(DestinationError, match="cannot be read safely") as failure:
            stream.read()
        stream.close()
    assert f"{bucket_name}/k.bin" in str(failure.value)
    assert len(fake.seen) == 1, "resumed although nothing could tell a newer object apart"


def test_object_names_and_describe(gcs_server: GCSServer, inspector, bucket_name) -> None:
    raw = gcs_server.config(bucket_name, bucket_path="/svc/redis/")
    with open_destination(raw) as destination:
        assert (
            destination.describe("deploy/2026/11/26")
            == f"{bucket_name}/svc/redis/deploy/2026/11/26"
        )
        destination.ensure_location()
        destination.write("deploy/2026/11/26/dump.rdb", Source.from_bytes(b"rdb"))
        assert [o.key for o in destination.list("deploy/")] == ["deploy/2026/11/26/dump.rdb"]
    assert [b.name for b in inspector.list_blobs(bucket_name)] == [
        "svc/redis/deploy/2026/11/26/dump.rdb"
    ]
    with open_destination(gcs_server.config(bucket_name)) as root:
        assert root.describe("2026/11/26") == f"{bucket_name}/2026/11/26"
        assert [o.key for o in root.list("svc/")] == ["svc/redis/deploy/2026/11/26/dump.rdb"]


def test_listing_follows_page_tokens(gcs_server: GCSServer, fake_gcs, bucket_name: str) -> None:
    names = [f"base/p/{i:03d}" for i in range(7)]

    def respond(seen: Seen) -> Reply:
        size = int(seen.query["maxResults"][0])
        start = int(seen.query.get("pageToken", ["0"])[0])
        page: dict[str, Any] = {
            "items": [{"name": n, "size": "1"} for n in names[start : start + size]]
        }
        if start + size < len(names):
            page["nextPageToken"] = str(start + size)
        return 200, page

    fake = fake_gcs(respond)
    raw = gcs_server.config(bucket_name, endpoint=fake.url, bucket_path="base")
    with open_destination(raw) as destination:
        destination.list_page_size = 3
        assert [o.key for o in destination.list("p/")] == [n.removeprefix("base/") for n in names]
    pages = fake.requests_to("GET", f"/storage/v1/b/{bucket_name}/o")
    assert len(pages) == 3
    assert all(p.query["prefix"] == ["base/p/"] and p.query["maxResults"] == ["3"] for p in pages)


def test_storage_emulator_host_is_honoured(
    gcs_server: GCSServer, inspector, bucket_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    raw = {k: v for k, v in gcs_server.config(bucket_name).items() if k != "endpoint"}
    before = len(gcs_server.tokens.granted_calls())
    with open_destination(raw) as destination:
        destination.ensure_location()
        destination.write("env.txt", Source.from_bytes(b"env"))
    assert [b.name for b in inspector.list_blobs(bucket_name)] == ["env.txt"]
    assert len(gcs_server.tokens.granted_calls()) > before  # still the real credentials


# ------------------------------------------------------------------------- end to end
@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    (folder / "redis" / "nested").mkdir(parents=True)
    (folder / "redis" / "dump.rdb").write_bytes(b"R" * (9 * MiB))  # a resumable upload
    (folder / "redis" / "nested" / "aof.txt").write_text("appendonly\n")
    (folder / "empty.dat").write_bytes(b"")
    return folder


def cli_config(tmp_path: Path, source: Path, gcs: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "gcs", "name": "google", "config": gcs}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
            "deployment_name": "redis-7f3a",
            "add_deployment_name_to_backup_path": True,
        },
    )


def test_cli_backup_end_to_end(
    gcs_server: GCSServer, gcs_config, inspector, bucket_name: str, tmp_path: Path, source: Path
) -> None:
    before = len(gcs_server.tokens.granted_calls())
    result = run_cli("backup", str(cli_config(tmp_path, source, gcs_config)))
    assert result.returncode == 0, result.stderr
    remote = f"{bucket_name}/backups/redis/redis-7f3a/{TODAY}"
    about = result.find(f"about to upload {source} to GCS remote path {remote}")
    assert about and about[0]["data"]["destination_name"] == "google"
    (done,) = result.find("Upload backup completed successfully")
    assert done["data"]["size_in_bytes"] == 9 * MiB + len("appendonly\n")
    prefix = f"backups/redis/redis-7f3a/{TODAY}/"
    stored = {b.name: b.size for b in inspector.list_blobs(bucket_name)}
    assert stored.pop(prefix + ".service-backup-manifest.json", 0) > 0, "no run manifest"
    assert stored == {
        prefix + "redis/dump.rdb": 9 * MiB,
        prefix + "redis/nested/aof.txt": len("appendonly\n"),
        prefix + "empty.dat": 0,
    }
    blob = inspector.bucket(bucket_name).blob(prefix + "redis/nested/aof.txt")
    assert blob.download_as_bytes() == b"appendonly\n"
    assert len(gcs_server.tokens.granted_calls()) > before, "the CLI run fetched no token"
    assert_no_key_material(result.stdout + result.stderr, gcs_server)


def test_cli_backup_with_refused_token_fails_clearly(
    gcs_server: GCSServer, gcs_config, inspector, bucket_name, tmp_path: Path, source: Path
) -> None:
    raw = {**gcs_config, "service_account_json": gcs_server.refused_key_json()}
    result = run_cli("backup", str(cli_config(tmp_path, source, raw)))
    assert result.returncode == 1
    (failed,) = result.find("Upload backup completed with error")
    error = failed["data"]["error"]
    assert failed["data"]["destination_name"] == "google"
    assert f"the token endpoint {gcs_server.tokens.refusing_token_uri} refused" in error
    assert "Traceback" not in result.stdout + result.stderr
    assert_no_key_material(result.stdout + result.stderr, gcs_server)
    assert bucket_name not in [b.name for b in inspector.list_buckets()]


def test_the_proxy_environment_is_read_once_at_open(
    gcs_server: GCSServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # lower case would win over upper case
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    with open_destination(gcs_server.config(bucket_name)) as destination:
        assert destination.session.proxies.get("http") == "http://proxy.invalid:3128", (
            "HTTP_PROXY was not honoured for the storage endpoint"
        )
        assert destination.session.trust_env is False, "the environment is re-read per request"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with open_destination(gcs_server.config(bucket_name)) as destination:
        assert "http" not in destination.session.proxies, "NO_PROXY was not honoured"
