"""The streamed resumable upload's failure paths against gcp-storage-emulator itself.

The scripted ``FakeGCS`` in test_gcs shows the protocol exchanges; these show the same paths
against a real server's session handling: a request cut part-way resumes where the emulator
stopped, and a source that turns out short, grown or modified never finalizes an object, so
a good object already stored under the key survives.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from service_backup.errors import SourceError
from service_backup.source import Source
from service_backup_gcs.destination import SINGLE_REQUEST_LIMIT
from tests.faultproxy import FaultProxy
from tests.gcs.server import GCSServer
from tests.gcs.test_gcs import open_destination

MiB = 1024 * 1024


class CuttingProxy(FaultProxy):
    """Mode ``cut``: the first connection that carries ``after_bytes`` is closed (FIN both
    ways) right there, as a middlebox dropping a long request would; later ones pass.

    FIN rather than RST: the emulator then reads a short body and keeps it, as GCS keeps what
    it persisted; after an RST the emulator drops what it read and (unlike GCS) reports one
    byte kept, which no client can resume from.
    """

    cuts: int = 0

    def _up(self, client: socket.socket, server: socket.socket, sent: list[int]) -> None:
        if self.mode != "cut":
            return super()._up(client, server, sent)
        try:
            while data := client.recv(65536):
                if self.mode == "cut" and sent[0] + len(data) >= self.after_bytes:
                    server.sendall(data[: self.after_bytes - sent[0]])
                    self.mode, self.cuts = "pass", self.cuts + 1
                    for sock in (server, client):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                server.sendall(data)
                sent[0] += len(data)
        except OSError:
            pass
        return None


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 31 + seed) % 256 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def test_a_cut_request_resumes_where_the_emulator_stopped(
    gcs_server: GCSServer, bucket_name: str, inspector
) -> None:
    size, cut = 8 * MiB + 5, 3 * MiB + 7
    data = pattern(size)
    proxy = CuttingProxy(gcs_server.port, mode="pass", after_bytes=cut).start()
    try:
        raw = gcs_server.config(bucket_name, endpoint=f"http://127.0.0.1:{proxy.port}")
        raw["bucket_path"] = "cut"
        with open_destination(raw) as destination:
            destination.ensure_location()
            proxy.mode = "cut"
            info = destination.write("big.bin", Source.from_bytes(data))
    finally:
        proxy.stop()
    assert proxy.cuts == 1, "the proxy never cut the upload: the test proved nothing"
    assert info.size == size
    stored = inspector.bucket(bucket_name).blob("cut/big.bin").download_as_bytes()
    assert stored == data, "the resumed upload stored different bytes"


@pytest.mark.parametrize("size", [1000, SINGLE_REQUEST_LIMIT + 3 * MiB])
@pytest.mark.parametrize("fault", ["short", "grown", "modified"])
def test_a_failing_source_never_replaces_the_stored_object(
    gcs_config, inspector, bucket_name: str, tmp_path: Path, size: int, fault: str
) -> None:
    good = pattern(size, seed=1)
    path = tmp_path / "dump.rdb"
    with open_destination(gcs_config) as destination:
        destination.ensure_location()
        destination.write("day/dump.rdb", Source.from_bytes(good))
        path.write_bytes(pattern(size, seed=2))
        listed = os.stat(path)
        if fault == "short":
            os.truncate(path, size - 100)
        elif fault == "grown":
            with path.open("ab") as f:
                f.write(b"more")
        source = Source(str(path), size, path=path, mtime_ns=listed.st_mtime_ns)
        if fault == "modified":
            os.utime(path, ns=(listed.st_atime_ns, listed.st_mtime_ns + 1_000_000))
        with pytest.raises(SourceError, match=r"dump\.rdb"):
            destination.write("day/dump.rdb", source)
        source.close()
        blob = inspector.bucket(bucket_name).get_blob("backups/redis/day/dump.rdb")
        assert blob is not None and blob.size == size, f"a {fault} source removed the object"
        assert blob.download_as_bytes() == good, f"a {fault} source replaced the good object"
