"""How the session pool places channels on connections (against the real sshd).

Streams borrow ``together``: channels of one connection, so that a CPU-bound upload pays for
one transport thread; other borrowers spread over up to two connections.
"""

from __future__ import annotations

import threading
from pathlib import Path

from service_backup.results import StoredFile
from service_backup.source import SourceFile
from service_backup_scp._session import Session
from service_backup_scp.destination import ScpDestination
from service_backup_scp.upload import _Picker

from .server import SshServer
from .test_scp import open_destination as open_raw
from .test_scp import raw_config


def open_destination(sshd: SshServer) -> ScpDestination:
    return open_raw(raw_config(sshd))


def borrow_at_once(dest: ScpDestination, count: int, together: bool) -> list[Session]:
    """``count`` threads borrow at the same moment and hold until all have a channel."""
    start, held = threading.Barrier(count), threading.Barrier(count, timeout=30)
    sessions: list[Session] = []
    errors: list[BaseException] = []

    def borrow() -> None:
        try:
            start.wait()
            with dest.pool.session(together=together) as session:
                sessions.append(session)
                held.wait()
        except BaseException as exc:
            errors.append(exc)
            held.abort()

    threads = [threading.Thread(target=borrow) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], f"borrowing failed: {errors!r}"
    return sessions


def test_streams_started_together_share_one_connection(sshd: SshServer) -> None:
    with open_destination(sshd) as dest:
        sessions = borrow_at_once(dest, ScpDestination.stream_concurrency, together=True)
        connections = {id(s.connection) for s in sessions}
        assert len(connections) == 1, (
            f"{len(sessions)} streams started at once should share one connection, they used "
            f"{len(connections)}"
        )
        assert len({id(s.client) for s in sessions}) == len(sessions), "a channel was shared"


def test_other_borrowers_spread_over_two_connections(sshd: SshServer) -> None:
    with open_destination(sshd) as dest:
        sessions = borrow_at_once(dest, 4, together=False)
        connections = {id(s.connection) for s in sessions}
        assert len(connections) == 2, f"batches should use two connections, used {len(connections)}"


def test_a_full_connection_makes_a_stream_open_the_second(sshd: SshServer) -> None:
    with open_destination(sshd) as dest:
        count = dest.pool._per_connection + 1
        sessions = borrow_at_once(dest, count, together=True)
        sizes = sorted(
            sum(1 for s in sessions if s.connection is c) for c in {s.connection for s in sessions}
        )
        assert sizes == [1, count - 1], f"{count} streams should fill one connection first: {sizes}"


def test_the_upload_hook_streams_at_most_the_limit_while_batches_go_on(tmp_path: Path) -> None:
    """Streams beyond ``stream_concurrency`` wait; batches run beside the held streams."""
    large = [SourceFile(tmp_path / f"l{i}", f"l{i}", 1 << 20) for i in range(6)]
    groups = [[SourceFile(tmp_path / f"s{i}", f"s{i}", 10)] for i in range(3)]
    picker = _Picker(large, groups, limit=2)
    release, two_streaming, groups_done = threading.Event(), threading.Event(), threading.Event()
    lock = threading.Lock()
    streaming, most, done = [0], [0], []

    def send_large(file: SourceFile) -> list[StoredFile]:
        with lock:
            streaming[0] += 1
            most[0] = max(most[0], streaming[0])
            if streaming[0] == 2:
                two_streaming.set()
        assert release.wait(30), "the test never released the streams"
        with lock:
            streaming[0] -= 1
            done.append(file.relative)
        return []

    def send_group(group: list[SourceFile]) -> list[StoredFile]:
        with lock:
            done.extend(f.relative for f in group)
            if sum(name.startswith("s") for name in done) == len(groups):
                groups_done.set()
        return []

    workers = [
        threading.Thread(target=picker.run, args=(send_large, send_group))
        for _ in range(len(large) + len(groups))
    ]
    for worker in workers:
        worker.start()
    assert two_streaming.wait(30), "two streams never started"
    assert groups_done.wait(30), "batches did not go up while the streams were held"
    assert streaming[0] == 2, f"{streaming[0]} streams ran at once with a limit of 2"
    release.set()
    for worker in workers:
        worker.join(30)
    assert most[0] == 2, f"at most {most[0]} streams at once, the limit is 2"
    assert sorted(done) == sorted(f.relative for f in large + [g[0] for g in groups])
