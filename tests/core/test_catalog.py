"""The catalog reads a manifest whole, whatever each read of the destination's stream returns."""

from __future__ import annotations

import io

import pytest

from service_backup.catalog import read_bounded
from service_backup.manifest import ManifestError


class Trickle(io.RawIOBase):
    """A raw stream that hands out at most ``step`` bytes per read, as a socket may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def test_short_reads_are_read_to_the_end() -> None:
    data = bytes(range(256)) * 40
    got = read_bounded(Trickle(data, 7), 1 << 20, "x/.service-backup-manifest.json")
    assert got == data, f"read {len(got)} of {len(data)} bytes: a short read was taken as the end"


def test_an_object_beyond_the_bound_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"x/m\.json: larger than 100 bytes"):
        read_bounded(Trickle(b"a" * 101, 50), 100, "x/m.json")
    assert read_bounded(Trickle(b"a" * 100, 50), 100, "x/m.json") == b"a" * 100
