"""``RawRead``: ``readinto`` and ``readall`` built on a plugin's ``read`` of uncopied pieces."""

from __future__ import annotations

import io

from service_backup.raw_read import RawRead


class Pieces(RawRead):
    """Hands out the pieces it was given, at most ``size`` bytes of one per call."""

    readall_piece = 5

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self.pieces = list(pieces)
        self.asked: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        self.asked.append(size)
        if not self.pieces:
            return b""
        piece = self.pieces[0]
        self.pieces[0] = piece[size:]
        if not self.pieces[0]:
            self.pieces.pop(0)
        return piece[:size]


def test_readinto_fills_from_one_read_and_says_how_much() -> None:
    stream = Pieces([b"abc", b"defgh"])
    buffer = bytearray(4)
    assert stream.readinto(buffer) == 3, "readinto did not report the piece's length"
    assert bytes(buffer[:3]) == b"abc", f"readinto copied {bytes(buffer)!r}"
    assert stream.readinto(memoryview(buffer)[:2]) == 2
    assert bytes(buffer[:2]) == b"de", f"readinto into a view copied {bytes(buffer)!r}"


def test_readall_asks_in_its_piece_size_until_the_end() -> None:
    stream = Pieces([b"abc", b"defghijkl", b""])
    assert stream.read() == b"abcdefghijkl", "read() did not return the whole stream"
    assert set(stream.asked) == {5}, f"readall asked for {stream.asked}, not readall_piece"


def test_a_buffered_reader_reads_it_whole() -> None:
    stream = io.BufferedReader(Pieces([b"x" * 10, b"y" * 7]), buffer_size=4)
    assert stream.read() == b"x" * 10 + b"y" * 7, "a BufferedReader over RawRead lost bytes"
    assert stream.readable(), "RawRead is not readable"
