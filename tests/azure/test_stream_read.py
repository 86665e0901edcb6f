"""A streamed blob (above ``READ_WHOLE_MAX``) read back through ``open_read`` against Azurite.

``open_read`` hands out the transport's pieces (``READ_PIECE`` each) as they came, prefetched
``PREFETCH_PIECES`` ahead by a helper thread. These tests read blobs bigger than that window,
with sizes exactly at, one below and one above a multiple of the piece, every way a reader can
ask (whole pieces, odd sizes, ``readinto``, ``readall``), restore them through the CLI, and
check that the reader's memory stays bounded by the window, not by the blob.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_backup.layout import MiB
from service_backup.source import Source, SourceFile
from service_backup.testing import rss_peak
from service_backup_azure._download import PREFETCH_PIECES, READ_PIECE
from service_backup_azure.destination import READ_WHOLE_MAX, AzureDestination
from tests.azure.test_azure import open_destination
from tests.core.cli import run_cli, single_destination_config

#: Pieces in a test blob: more than the prefetch window beyond the read-whole limit.
PIECES = READ_WHOLE_MAX // READ_PIECE + PREFETCH_PIECES + 2
SIZES = {"one below": PIECES * READ_PIECE - 1, "at": PIECES * READ_PIECE}
SIZES["one above"] = PIECES * READ_PIECE + 1


@pytest.fixture
def destination(raw: dict[str, str]) -> Iterator[AzureDestination]:
    with open_destination(raw) as dest:
        dest.ensure_location()
        yield dest


@pytest.fixture(scope="module")
def contents() -> dict[str, bytes]:
    return {name: os.urandom(size) for name, size in SIZES.items()}


@pytest.mark.parametrize("name", SIZES)
def test_whole_piece_reads_hand_out_every_byte_in_pieces(
    destination: AzureDestination, contents: dict[str, bytes], name: str
) -> None:
    data = contents[name]
    destination.write("piece.bin", Source.from_bytes(data))
    with destination.open_read("piece.bin") as stream:
        pieces = []
        while piece := stream.read(READ_PIECE):
            pieces.append(piece)
    assert b"".join(pieces) == data, f"blob {name} a piece multiple read back other bytes"
    sizes = [len(p) for p in pieces]
    assert all(size == READ_PIECE for size in sizes[:-1]), (
        f"a reader asking for whole pieces got {sorted(set(sizes))}: pieces were split"
    )


@pytest.mark.parametrize("name", SIZES)
def test_odd_reads_readinto_and_readall_return_the_same_bytes(
    destination: AzureDestination, contents: dict[str, bytes], name: str
) -> None:
    data = contents[name]
    destination.write("odd.bin", Source.from_bytes(data))
    with destination.open_read("odd.bin") as stream:
        got = bytearray()
        ask = 1
        while piece := stream.read(ask):
            assert len(piece) <= ask, f"read({ask}) returned {len(piece)} bytes"
            got += piece
            ask = ask * 7 % (READ_PIECE + 13) + 1  # below, at and above a piece, uneven
    assert bytes(got) == data, f"odd-sized reads of blob {name} returned other bytes"
    with destination.open_read("odd.bin") as stream:
        got = bytearray()
        buffer = bytearray(READ_PIECE // 3 + 5)
        while count := stream.readinto(buffer):
            got += buffer[:count]
    assert bytes(got) == data, f"readinto of blob {name} returned other bytes"
    with destination.open_read("odd.bin") as stream:
        assert stream.read(10) == data[:10]
        assert stream.read() == data[10:], f"read() after a partial piece of {name} differs"
        assert stream.read(1) == b"", "a read after the end returned bytes"


def test_restore_brings_back_blobs_around_piece_multiples(
    tmp_path: Path, raw: dict[str, str], contents: dict[str, bytes]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name, data in contents.items():
        (source / f"{name}.bin").write_bytes(data)
    config = single_destination_config(tmp_path / "backup.yml", source, "azure", "dr-azure", raw)
    backup = run_cli("backup", str(config))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    target = tmp_path / "restored"
    restore = run_cli("restore", str(config), "--to", str(target))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    for name, data in contents.items():
        restored = (target / f"{name}.bin").read_bytes()
        assert restored == data, f"the blob {name} a piece multiple was restored with other bytes"


def test_reading_a_big_blob_keeps_memory_bounded(
    destination: AzureDestination, tmp_path: Path
) -> None:
    """The reader holds what restore holds (a few pieces being written and hashed); the
    process must not grow with the blob (as the suite's upload check measures it)."""
    size = 96 * MiB
    allowed = 24 * MiB  # the prefetch window, the pieces held by the reader, allocator slack
    assert allowed < size / 2, "a reader that slurps the blob must not pass"
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        block = os.urandom(MiB)
        for index in range(size // MiB):
            chunk = index.to_bytes(4, "big") + block[4:]
            out.write(chunk)
            digest.update(chunk)
    destination.write(
        "big.bin", Source.from_file(SourceFile(path=path, relative="big.bin", size=size))
    )
    held: list[bytes] = []
    got = hashlib.sha256()
    with rss_peak() as peak, destination.open_read("big.bin") as stream:
        while piece := stream.read(READ_PIECE):
            got.update(piece)
            held = [*held[-3:], piece]  # restore keeps up to 4 chunks being hashed
    assert got.hexdigest() == digest.hexdigest(), "the big blob read back other bytes"
    assert peak.growth <= allowed, (
        f"RSS grew by {peak.growth / MiB:.1f} MiB while reading a {size // MiB} MiB blob "
        f"(allowed {allowed // MiB} MiB)"
    )
