"""``PacketPipe``, the receive buffer of the plugin's SFTP channels (``_pipe``): what
``Channel`` needs of paramiko's ``BufferedPipe``, and pieces handed over uncopied."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from paramiko.buffered_pipe import PipeTimeout

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup_scp._pipe import PacketPipe, Pieces
from service_backup_scp.config import ScpConfig
from service_backup_scp.destination import ScpDestination

from .server import SshServer
from .test_scp import raw_config


def test_pieces_come_out_as_fed_uncopied_and_bytes_otherwise() -> None:
    pipe = PacketPipe()
    first, second = b"a" * 100, b"b" * 50
    pipe.feed(first)
    pipe.feed(second)
    assert len(pipe) == 150 and pipe.read_ready()
    pipe.pieces = True
    out = pipe.read(1000)
    assert isinstance(out, Pieces) and len(out) == 150, "the reader did not get every piece"
    assert out.parts[0] is first and out.parts[1] is second, "a piece was copied"
    assert len(pipe) == 0 and not pipe.read_ready()
    pipe.pieces = False
    pipe.feed(first)
    pipe.feed(second)
    assert pipe.read(1000) == first + second, "a plain read did not give the bytes in order"


def test_a_read_of_less_than_a_piece_cuts_it_and_keeps_the_rest() -> None:
    pipe = PacketPipe()
    pipe.feed(b"0123456789")
    pipe.pieces = True
    head = pipe.read(4)
    assert isinstance(head, Pieces) and [bytes(p) for p in head.parts] == [b"0123"]
    pipe.pieces = False
    assert pipe.read(3) == b"456" and pipe.read(100) == b"789", "the rest was lost or reordered"


def test_nothing_in_time_is_a_timeout_and_a_closed_empty_pipe_reads_empty() -> None:
    pipe = PacketPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.0)
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.05)
    assert time.monotonic() - started >= 0.05, "the timeout was not waited out"
    pipe.feed(b"left")
    pipe.close()
    assert pipe.read(10) == b"left", "data fed before the close was lost"
    assert pipe.read(10) == b"", "a closed, empty pipe must read as the end"


def test_a_blocked_reader_wakes_on_data_and_on_close() -> None:
    pipe = PacketPipe()
    got: list[bytes | Pieces] = []
    waiting = threading.Event()

    def reader() -> None:
        waiting.set()
        got.append(pipe.read(10, timeout=30))
        got.append(pipe.read(10, timeout=30))

    thread = threading.Thread(target=reader)
    thread.start()
    waiting.wait(5)
    pipe.feed(b"x")
    pipe.close()
    thread.join(10)
    assert not thread.is_alive(), "a reader blocked on the pipe was not woken"
    assert got == [b"x", b""], got


def test_a_piece_reader_waits_for_what_it_needs_until_the_time_is_up() -> None:
    """``need``: one wake-up per answer, not per packet; at the deadline, what is there."""
    pipe = PacketPipe()
    pipe.feed(b"y" * 50)
    pipe.pieces, pipe.need = True, 100
    started = time.monotonic()
    out = pipe.read(1000, timeout=0.2)
    assert time.monotonic() - started >= 0.2, "the reader did not wait for the bytes it needs"
    assert isinstance(out, Pieces) and len(out) == 50, "what was there was not handed out"

    got: list[bytes | Pieces] = []
    thread = threading.Thread(target=lambda: got.append(pipe.read(1000, timeout=30)))
    thread.start()
    pipe.feed(b"z" * 60)
    pipe.feed(b"z" * 60)
    thread.join(10)
    assert got and len(got[0]) == 120, "the reader was not handed both packets together"


def test_event_and_empty_follow_the_buffer() -> None:
    pipe = PacketPipe()
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"abc")
    assert event.is_set(), "the event was not set when data came"
    assert pipe.empty() == b"abc" and len(pipe) == 0
    assert not event.is_set(), "the event stayed set on an empty pipe"
    pipe.close()
    assert event.is_set(), "the event was not set on close"


def test_the_plugins_sftp_channels_read_through_a_packet_pipe(sshd: SshServer) -> None:
    """paramiko's own requests (stat, listdir) read the same channel through it as bytes."""
    folder = sshd.root / f"pipe-{uuid.uuid4().hex}"
    (folder / "sub").mkdir(parents=True)
    raw = raw_config(sshd, destination=str(folder))
    config = structure_destination_config(raw, ScpConfig)
    with ScpDestination(config, DestinationContext("pipe")) as dest, dest.pool.session() as s:
        assert isinstance(s.client.get_channel().in_buffer, PacketPipe)
        assert s.client.listdir(str(folder)) == ["sub"]
        assert s.client.stat(str(folder / "sub")).st_mode is not None
