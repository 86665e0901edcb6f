"""How the session pool places channels on connections (against the real sshd).

Streams borrow ``together``: channels of one connection, so that a CPU-bound upload pays for
one transport thread; other borrowers spread over up to two connections.
"""

from __future__ import annotations

import threading
import uuid

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup_scp._session import Session
from service_backup_scp.config import ScpConfig
from service_backup_scp.destination import ScpDestination

from .server import SshServer


def open_destination(sshd: SshServer) -> ScpDestination:
    raw = {
        "user": sshd.user,
        "server": sshd.host,
        "port": sshd.port,
        "destination": str(sshd.root / f"p-{uuid.uuid4().hex}"),
        "fingerprint": sshd.keyscan,
        "key": sshd.client_key,
    }
    return ScpDestination(structure_destination_config(raw, ScpConfig), DestinationContext("p"))


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
