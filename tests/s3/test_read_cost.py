"""What a restore pays per object, and that paying less checks as much.

botocore parses every ``LastModified`` (one per GetObject, one per listed object) with
dateutil's general parser; the destination's clients parse S3's two forms directly
(``_parse_timestamp``). These tests hold it to botocore's own results, on the forms S3 sends
and against moto's real answers.

An object's body is read down to botocore once per chunk, never asked for more than is left,
and not again at its end when ``Content-Length`` bytes came (``_Body``): a body cut short still
fails the read, and a body whose stored checksum botocore validates still has its end read, so
the check runs.
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.utils import parse_timestamp

from service_backup.errors import DestinationError
from service_backup.layout import MiB
from service_backup.source import Source
from service_backup_s3.destination import _parse_timestamp

from .server import MotoServer
from .test_s3 import CorruptingRelay, open_destination

#: How the core's restore reads a stream (``commands.restore.READ_CHUNK``).
RESTORE_CHUNK = 1 * MiB
MARKER = b"GOOD-BACKUP-DATA"

FORMS = [
    "Tue, 01 Dec 2026 13:49:37 GMT",  # response headers (RFC 7231)
    "Wed, 29 Feb 2028 00:00:00 GMT",
    "2026-12-01T13:49:37.000Z",  # XML bodies (ISO 8601), as S3 and moto send them
    "2026-12-01T13:49:37.123456Z",
    "2026-12-01T13:49:37+02:00",
    "2026-12-01T13:49:37",  # no zone: botocore's parser decides
    "1764596977",  # epoch seconds: botocore's parser
    1764596977,
]


@pytest.mark.parametrize("value", FORMS)
def test_timestamps_parse_as_botocore_parses_them(value: Any) -> None:
    ours, theirs = _parse_timestamp(value), parse_timestamp(value)
    assert ours == theirs, f"{value!r}: parsed as {ours!r}, botocore says {theirs!r}"
    assert (ours.tzinfo is None) == (theirs.tzinfo is None), f"{value!r}: zone differs"


def test_destination_reads_moto_timestamps_as_botocore_does(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """stat (a header) and list (XML) give the times boto3's stock client reads."""
    data = os.urandom(16 * 1024)
    with open_destination(s3_config) as dest:
        factory = dest.client._endpoint._response_parser_factory  # what parses each response
        parser = factory.create_parser("rest-xml")._timestamp_parser
        assert parser is _parse_timestamp, f"the client parses timestamps with {parser!r}"
        dest.ensure_location()
        dest.write("2026/12/01/a.bin", Source.from_bytes(data, "a.bin"))
        full = "backups/redis/2026/12/01/a.bin"
        head = s3_admin.head_object(Bucket=s3_config["bucket_name"], Key=full)
        listed = s3_admin.list_objects_v2(Bucket=s3_config["bucket_name"])["Contents"]
        info = dest.stat("2026/12/01/a.bin")
        assert info.modified == head["LastModified"], (
            f"stat says {info.modified!r}, boto3 reads the header as {head['LastModified']!r}"
        )
        assert isinstance(info.modified, datetime.datetime) and info.modified.tzinfo
        ours = {o.key: o.modified for o in dest.list("2026/")}
        assert ours == {"2026/12/01/a.bin": listed[0]["LastModified"]}, (
            f"listing times {ours!r} differ from boto3's {listed!r}"
        )
        with dest.open_read("2026/12/01/a.bin") as stream:
            assert stream.read() == data, "a small object read back differs from what was put"


# ------------------------------------------------------------------------------ body reads


@pytest.fixture
def body_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size asked of every read of a plain botocore body (the real read runs)."""
    asked: list[int] = []
    real = StreamingBody.read

    @functools.wraps(real)
    def counted(self: StreamingBody, amt: int | None = None) -> bytes:
        if type(self) is StreamingBody:
            asked.append(-1 if amt is None else amt)
        return real(self, amt)

    monkeypatch.setattr(StreamingBody, "read", counted)
    return asked


def read_as_restore_does(stream: Any) -> bytes:
    chunks = []
    while chunk := stream.read(RESTORE_CHUNK):
        chunks.append(chunk)
    assert stream.read(RESTORE_CHUNK) == b"", "the stream gave bytes after its end"
    return b"".join(chunks)


@pytest.mark.parametrize(
    "size", [16 * 1024, RESTORE_CHUNK - 1, RESTORE_CHUNK, 3 * MiB + 17], ids=lambda n: f"{n}B"
)
def test_a_body_is_read_once_per_chunk_and_not_at_its_end(
    s3_config: dict[str, Any], body_reads: list[int], size: int
) -> None:
    data = os.urandom(size)
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        dest.write("2026/12/01/obj.bin", Source.from_bytes(data, "obj.bin"))
        body_reads.clear()
        with dest.open_read("2026/12/01/obj.bin") as stream:
            got = read_as_restore_does(stream)
    assert got == data, f"{size} bytes read back differ from what was written"
    want = [min(RESTORE_CHUNK, size - start) for start in range(0, size, RESTORE_CHUNK)]
    assert body_reads == want, (
        f"the body of {size} bytes was asked for {body_reads}; reads of {want} take it "
        "(never more than is left, so urllib3 reads once), the end needs none"
    )


def test_an_empty_body_reads_its_end(s3_config: dict[str, Any], body_reads: list[int]) -> None:
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        dest.write("2026/12/01/empty", Source.from_bytes(b"", "empty"))
        body_reads.clear()
        with dest.open_read("2026/12/01/empty") as stream:
            assert read_as_restore_does(stream) == b"", "an empty object read back bytes"
    assert len(body_reads) == 1, f"the empty body was read {len(body_reads)} times, not once"


@pytest.fixture
def cutting_relay(moto: MotoServer) -> Iterator[CorruptingRelay]:
    port = int(moto.endpoint.rsplit(":", 1)[1])
    relay = CorruptingRelay(port, b"\0never-sent\0", b"\0never-seen\0", cut_at=MARKER)
    yield relay
    relay.close()


@pytest.mark.parametrize("where", [100, 16 * 1024 - 20, 2 * MiB], ids=str)
def test_a_body_cut_short_fails_the_read(
    moto: MotoServer,
    s3_config: dict[str, Any],
    cutting_relay: CorruptingRelay,
    where: int,
) -> None:
    """The server's connection ends before ``Content-Length``: the read fails, naming it."""
    data = bytearray(os.urandom(max(16 * 1024, where + 1024)))
    data[where : where + len(MARKER)] = MARKER
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        dest.write("2026/12/01/cut.bin", Source.from_bytes(bytes(data), "cut.bin"))
    relayed = {**s3_config, "endpoint_url": cutting_relay.endpoint}
    with (
        open_destination(relayed) as dest,
        dest.open_read("2026/12/01/cut.bin") as stream,
        pytest.raises(DestinationError) as info,
    ):
        read_as_restore_does(stream)
    assert cutting_relay.cut.is_set(), "the relay never cut the answer"
    assert f"cannot read {s3_config['bucket_name']}/backups/redis/2026/12/01/cut.bin" in str(
        info.value
    ), str(info.value)


def test_a_validated_checksum_still_reads_the_end_and_catches_damage(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """``response_checksum_validation: when_supported``: botocore checks the stored CRC32.

    Its check runs on the read that finds the body's end, so that read must still happen: a
    body altered on the way (same length) fails the read.
    """
    port = int(moto.endpoint.rsplit(":", 1)[1])
    relay = CorruptingRelay(
        port, b"\0never-sent\0", b"\0never-seen\0", (MARKER, b"ROTTEN-BYTES-NOW")
    )
    data = os.urandom(5000) + MARKER + os.urandom(5000)
    config = {**s3_config, "response_checksum_validation": "when_supported"}
    try:
        with open_destination(config) as dest:
            dest.ensure_location()
        key = "backups/redis/2026/12/01/crc.bin"
        stored = s3_admin.put_object(
            Bucket=s3_config["bucket_name"], Key=key, Body=data, ChecksumAlgorithm="CRC32"
        )
        assert stored.get("ChecksumCRC32"), f"moto stored no CRC32: {stored}"
        with open_destination(config) as dest, dest.open_read("2026/12/01/crc.bin") as stream:
            assert read_as_restore_does(stream) == data, "the undamaged body differs"
        relayed = {**config, "endpoint_url": relay.endpoint}
        with (
            open_destination(relayed) as dest,
            dest.open_read("2026/12/01/crc.bin") as stream,
            pytest.raises(DestinationError) as info,
        ):
            read_as_restore_does(stream)  # botocore's CRC32 check must fail the altered body
    finally:
        relay.close()
    assert "checksum" in str(info.value).lower(), str(info.value)


class KeepAliveFront:
    """HTTP/1.1 keep-alive in front of moto, which closes every connection after one answer.

    Each request that arrives on a client connection goes to moto on a connection of its
    own; the answer comes back on the client's connection without moto's
    ``Connection: close``. ``connections`` counts the client's connections: a client that
    reads each answer to its end gets its connection back and needs only one.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _head(stream: Any) -> tuple[bytes, int]:
        """A request's or answer's head (start line and headers) and its Content-Length."""
        lines = [stream.readline()]
        while lines[-1] not in (b"\r\n", b""):
            lines.append(stream.readline())
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return b"".join(lines), length

    def _serve(self, client: socket.socket) -> None:
        with client, client.makefile("rb") as requests:
            while True:
                head, length = self._head(requests)
                if not head.strip():
                    return
                body = requests.read(length)
                with socket.create_connection(("127.0.0.1", self.port)) as upstream:
                    upstream.sendall(head + body)
                    with upstream.makefile("rb") as answers:
                        answer, length = self._head(answers)
                        answer = answer.replace(b"Connection: close\r\n", b"")
                        reply = answer + (b"" if head.startswith(b"HEAD") else answers.read(length))
                try:
                    client.sendall(reply)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()


def test_objects_read_to_their_end_give_their_connection_back(
    moto: MotoServer, s3_config: dict[str, Any]
) -> None:
    """The end is not read, yet each connection goes back to the pool for the next GET.

    Over TLS on AWS a connection that is not given back costs a handshake per object.
    """
    objects = {f"2026/12/01/{n}.bin": os.urandom(n) for n in (16 * 1024, RESTORE_CHUNK + 5, 0)}
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        for key, data in objects.items():
            dest.write(key, Source.from_bytes(data, key))
    front = KeepAliveFront(int(moto.endpoint.rsplit(":", 1)[1]))
    try:
        with open_destination({**s3_config, "endpoint_url": front.endpoint}) as dest:
            for _ in range(2):
                for key, data in objects.items():
                    with dest.open_read(key) as stream:
                        assert read_as_restore_does(stream) == data, f"{key} read back differs"
    finally:
        front.close()
    assert front.connections == 1, (
        f"{2 * len(objects)} GETs one after the other took {front.connections} connections: "
        "a body read to its end did not give its connection back"
    )
