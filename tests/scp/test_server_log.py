"""The throwaway sshd's log drain: sshd must never block on its stderr, even with a full disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .server import _drain

#: Far more than a pipe holds (64 KiB on Linux): a writer stops unless someone reads.
LINES = 20_000


def test_sshd_stderr_is_read_to_the_end_when_the_log_cannot_be_written() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(read_end, "r", encoding="utf-8", errors="replace")
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    drain = threading.Thread(target=_drain, args=(stream, Path("/dev/full")), daemon=True)
    drain.start()
    wrote = threading.Event()

    def sshd() -> None:
        with os.fdopen(write_end, "w", encoding="utf-8") as err:
            for i in range(LINES):
                err.write(f"Accepted publickey for root from 127.0.0.1 port {i}\n")
        wrote.set()

    writer = threading.Thread(target=sshd, daemon=True)
    writer.start()
    assert wrote.wait(30), "sshd's stderr stopped being read once the log could not be written"
    drain.join(30)
    assert not drain.is_alive(), "the drain did not end when sshd's stderr closed"
    stream.close()


def test_sshd_stderr_lines_reach_the_log(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(read_end, "r", encoding="utf-8", errors="replace")
    log = tmp_path / "sshd.log"
    with os.fdopen(write_end, "w", encoding="utf-8") as err:
        err.write("Server listening on 127.0.0.1 port 2222.\n")
    _drain(stream, log)
    stream.close()
    assert log.read_text() == "Server listening on 127.0.0.1 port 2222.\n"
