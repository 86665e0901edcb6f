"""What reading many small objects costs: requests per object, connections, timer threads.

A restore of thousands of small objects is bound by the client's work per object, so these
tests pin the things that once multiplied it: one media GET per object and nothing more
(no metadata GET, listing in full pages), a connection pool big enough for every reader
(a pool smaller than the readers reconnects for nearly every object), and no stall-guard
timer thread started and joined for each short read.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service_backup.errors import DestinationError
from service_backup.source import Source
from service_backup_gcs.destination import AUTH_REUSE_SECONDS, READ_WATCHER
from tests.core.cli import run_cli, write_config
from tests.faultproxy import FaultProxy, fault_proxy, shutdown_outcome
from tests.gcs.server import GCSServer
from tests.gcs.test_gcs import Reply, Seen, open_destination
from tests.gcs.test_gcs import fake_gcs as fake_gcs  # a fixture
from tests.gcs.test_stall import open_destination as open_stoppable
from tests.readers import read_concurrently

FILES = 12


@pytest.fixture
def proxy(gcs_server: GCSServer) -> Iterator[FaultProxy]:
    with fault_proxy(gcs_server.port) as running:
        yield running


def test_a_restore_costs_one_request_per_object(
    gcs_server: GCSServer, bucket_name: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    # The emulator answers HTTP/1.0 and closes every connection after one answer, so the
    # proxy's connection count is the number of requests the restore made.
    answer = requests.get(f"{gcs_server.endpoint}/storage/v1/b", timeout=10, stream=True)
    with answer:
        assert answer.raw.version == 10, "the emulator now keeps connections: count differently"
    source = tmp_path / "source"
    for i in range(FILES):
        folder = source / f"d{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    document = {
        "destinations": [{"type": "gcs", "name": "g", "config": gcs_server.config(bucket_name)}],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    }
    backup = run_cli("backup", str(write_config(tmp_path / "backup.yml", document)))
    assert backup.returncode == 0, backup.stderr
    endpoint = f"http://127.0.0.1:{proxy.port}"
    document["destinations"][0]["config"]["endpoint"] = endpoint  # type: ignore[index]
    config = write_config(tmp_path / "restore.yml", document)
    target = tmp_path / "restored"
    restore = run_cli("restore", str(config), "--to", str(target))
    assert restore.returncode == 0, restore.stderr
    for path in source.rglob("*.bin"):
        restored = target / path.relative_to(source)
        assert restored.read_bytes() == path.read_bytes(), f"{restored} differs"
    # The run found folder by folder (the deployment's years, the year's months, the
    # month's days: three delimiter listings, whatever the runs kept hold), one GET of the
    # manifest, one GET per file.
    assert proxy.connections <= FILES + 4, (
        f"restoring {FILES} files made {proxy.connections} requests: more than one per object "
        "plus three folder listings and the manifest"
    )


def test_readers_share_pooled_connections(gcs_server: GCSServer, fake_gcs, bucket_name) -> None:
    """Every reader thread of a restore gets a pooled keep-alive connection back."""

    def respond(seen: Seen) -> Reply:
        return 200, b"x" * 100, {"X-Goog-Generation": "1"}

    fake = fake_gcs(respond)
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        readers = destination.file_concurrency

        def read_one(key: str) -> None:
            with destination.open_read(key) as stream:
                assert stream.read() == b"x" * 100

        read_concurrently([f"k{i}.bin" for i in range(readers * 10)], readers, read_one)
    assert len(fake.seen) == readers * 10, "one GET per object"
    assert fake.connections <= readers + 1, (
        f"{readers} readers opened {fake.connections} connections for {len(fake.seen)} "
        "objects: the pool is too small and reconnects"
    )


def test_short_reads_start_no_timer_thread_each(
    gcs_server: GCSServer, gcs_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original(thread)

    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        for i in range(10):
            destination.write(f"s{i}.bin", Source.from_bytes(b"s" * 100))
        monkeypatch.setattr(threading.Thread, "start", start)
        for i in range(10):
            with destination.open_read(f"s{i}.bin") as stream:
                assert stream.read() == b"s" * 100
        monkeypatch.undo()
    stall_timers = [name for name in started if name.startswith("stall-")]
    assert stall_timers == [], f"short reads started a stall timer thread each: {stall_timers}"
    # The shared watcher ends when no read is left, so a gap between reads may restart it.
    assert set(started) <= {READ_WATCHER}, f"reading 10 objects started threads {started}"
    assert len(started) < 5, f"reading 10 objects started {len(started)} threads"


def test_shutdown_aborts_a_read_in_flight(
    gcs_server: GCSServer, bucket_name: str, proxy: FaultProxy
) -> None:
    stop = threading.Event()
    raw = gcs_server.config(
        bucket_name, endpoint=f"http://127.0.0.1:{proxy.port}", stall_timeout_seconds=600
    )  # only shutdown can end it in time
    with open_stoppable(raw, stop) as destination:
        destination.ensure_location()
        destination.write("late.bin", Source.from_bytes(b"l" * 1000))
        proxy.mode = "blackhole"

        def read() -> None:
            with destination.open_read("late.bin") as stream:
                stream.read()

        failure, elapsed = shutdown_outcome(proxy, stop, read, "read")
    message = str(failure)
    assert isinstance(failure, DestinationError), message
    assert "shutting down" in message, message
    assert elapsed < 3.0, f"shutdown took {elapsed:.1f}s to abort the read"


def test_media_gets_carry_the_session_headers_and_a_fresh_token(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    """The media GET skips ``session.get``: it must still authorize and refresh like it."""
    fake = fake_gcs(lambda seen: (200, b"abc", {"X-Goog-Generation": "1"}))
    granted = len(gcs_server.tokens.granted_calls())
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        # Every GET asks google-auth (the reuse of its headers is tested below).
        destination.auth_reuse_seconds = 0.0
        with destination.open_read("a.bin") as stream:
            assert stream.read() == b"abc"
        credentials = destination.session.credentials
        credentials.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - (
            datetime.timedelta(hours=1)
        )  # google-auth keeps naive UTC expiries
        with destination.open_read("b.bin") as stream:
            assert stream.read() == b"abc"
    first, second = (seen.headers for seen in fake.seen)
    assert first.get("authorization", "").startswith("Bearer ya29.test-"), first
    assert second.get("authorization", "").startswith("Bearer ya29.test-"), second
    assert first["authorization"] != second["authorization"], "an expired token was sent again"
    assert len(gcs_server.tokens.granted_calls()) == granted + 2, "the token was not refreshed"
    for name, value in destination.session.headers.items():
        assert first.get(name.lower()) == value, f"the session's {name} header was not sent"
    assert "x-goog-api-client" in first, "google-auth's metrics header is missing"


def test_media_gets_reuse_the_credentials_headers_for_a_moment_only(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    """google-auth's ``before_request`` runs once for the GETs of one moment, not per GET;
    once ``auth_reuse_seconds`` have passed it runs again (and refreshes a token due)."""
    fake = fake_gcs(lambda seen: (200, b"abc", {"X-Goog-Generation": "1"}))
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        credentials = destination.session.credentials
        asked: list[str] = []
        before_request = credentials.before_request

        def counted(request: Any, method: str, url: str, headers: Any) -> None:
            asked.append(url)
            before_request(request, method, url, headers)

        credentials.before_request = counted  # the real one runs; only counted
        destination.auth_reuse_seconds = 3600.0  # the whole test is one moment
        for index in range(5):
            with destination.open_read(f"{index}.bin") as stream:
                assert stream.read() == b"abc"
        assert len(asked) == 1, f"before_request ran {len(asked)} times for 5 GETs of a moment"
        tokens = {seen.headers.get("authorization") for seen in fake.seen}
        assert len(tokens) == 1 and next(iter(tokens), "").startswith("Bearer ya29.test-"), (
            f"the GETs of one moment carried {tokens}"
        )
        destination.auth_reuse_seconds = 0.0  # the moment is over
        credentials.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        with destination.open_read("late.bin") as stream:
            assert stream.read() == b"abc"
        assert len(asked) == 2, "once the moment passed, google-auth was not asked again"
        late = fake.seen[-1].headers.get("authorization")
        assert late not in tokens, "a token due for refresh was sent again"
        headers = [seen.headers for seen in fake.seen]
        assert all("x-goog-api-client" in h for h in headers), "a reused GET lost a header"


def test_headers_are_reused_well_inside_the_life_google_auth_leaves_a_token() -> None:
    """``AUTH_REUSE_SECONDS`` is safe only because google-auth refreshes a token minutes
    before it expires. ``REFRESH_THRESHOLD`` is private to google-auth (``_helpers``):
    read here only, so that a change of it fails this test instead of going unnoticed."""
    from google.auth import _helpers

    threshold = _helpers.REFRESH_THRESHOLD.total_seconds()
    assert threshold >= AUTH_REUSE_SECONDS * 10, (
        f"google-auth now refreshes tokens {threshold:.0f}s before expiry: reusing its "
        f"headers for {AUTH_REUSE_SECONDS}s could send a token about to expire"
    )


def test_a_read_closed_early_leaves_nothing_for_the_next_get(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    """Media GETs skip ``requests.Response``: the bytes of an answer left half read must
    never be taken for the next object's answer (``_download._close`` closes that
    connection; urllib3 also drops a pooled connection that has bytes waiting)."""
    bodies = {name: bytes([index]) * (256 * 1024) for index, name in enumerate(("a", "b", "c"))}

    def respond(seen: Seen) -> Reply:
        name = seen.path.rsplit("/", 1)[-1].removesuffix(".bin")
        return 200, bodies[name], {"X-Goog-Generation": "1"}

    fake = fake_gcs(respond)
    with open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination:
        with destination.open_read("a.bin") as stream:
            assert stream.read(10) == bodies["a"][:10]
        for name in ("b", "c"):
            with destination.open_read(f"{name}.bin") as stream:
                assert stream.read() == bodies[name], f"{name}.bin came back with other bytes"
    assert len(fake.seen) == 3, "one GET per object"
    assert fake.connections == 2, (
        f"{fake.connections} connections for 3 objects: the half-read answer's connection "
        "must be closed, the fully read one's reused"
    )


def test_a_refused_media_get_names_the_reason(
    gcs_server: GCSServer, fake_gcs, bucket_name: str
) -> None:
    body = {"error": {"code": 403, "message": "no access", "errors": [{"reason": "forbidden"}]}}
    fake = fake_gcs(lambda seen: (403, body))
    with (
        open_destination(gcs_server.config(bucket_name, endpoint=fake.url)) as destination,
        pytest.raises(DestinationError) as failure,
    ):
        destination.open_read("k.bin")
    message = str(failure.value)
    assert f"access denied to bucket {bucket_name}" in message, message
    assert "Traceback" not in message and "ya29." not in message, message
