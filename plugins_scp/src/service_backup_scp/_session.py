"""SSH connections: bounded connect, host key check before anything else, a small pool.

Why a pool: each file (or batch of small files) costs a few request/response round trips
(open, write, fstat+close, rename). Several in flight hide that latency, but one SFTP channel
cannot be shared by threads (paramiko drops responses meant for another waiter), and one
connection's incoming packets are decrypted by one paramiko thread. So up to ``CONNECTIONS``
transports are opened (two: a service VM has few cores, and every connection costs a key
exchange and an sshd process), each carrying up to ``CHANNELS_PER_CONNECTION`` SFTP channels,
and every thread borrows a whole channel.

Streams of big files borrow ``together``: a channel on a connection already open (or being
opened) whenever one has room, a second connection only when every channel is busy. A stream
is bound by the client's CPU, not by round trips, and every connection adds a transport thread
that wakes for each packet the server sends (window adjustments, answers) and competes for the
GIL with the senders. Measured in-process on loopback (OpenSSH 9.2, 2 cores, loaded machine,
medians of 5-6 interleaved runs, noisy), 200 files of 1 MiB: 8 streams over two connections
0.84-0.96 s CPU, 8 on one connection 0.84, 4 on one 0.77; the whole change (this and
``ScpDestination.stream_concurrency``) 0.71 -> 0.67 s and 0.96 -> 0.84 s in two A/B rounds
against the previous code. Batches of small files keep two connections (one sshd process
decrypting all eight channels made 2,000 files of 16 KiB take 0.9 s instead of 0.7 s for
the same CPU).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import attrs
import paramiko
from loguru import logger
from paramiko.ssh_exception import IncompatiblePeer

from service_backup.errors import DestinationError, one_line

from ._hostkeys import NEGOTIATE, KnownKey, parse_fingerprint, sha256_fingerprint
from ._sftp import use_packet_pipe

# paramiko logs its own view of failures (with tracebacks) through the logging module; with no
# handler configured Python would print them on stderr. The destination reports every failure
# itself, in one line, through the run's log: keep paramiko's copies off the terminal.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Connect, banner, key exchange and authentication each get this long (the SDK waits forever
#: for a TCP connect and 15-30 s for the others; an unreachable host must fail in bounded time).
CONNECT_TIMEOUT = 15.0
#: A channel waiting this long for the server (a response, send window) gives up.
IDLE_TIMEOUT = 60.0
KEEPALIVE_SECONDS = 30
#: Receive window per channel. It bounds no memory here: an SFTP server sends only answers,
#: and what we ask for is bounded already (``_sftp.READ_IN_FLIGHT`` reads of 255 KiB per
#: stream, ``_readahead.BATCH_BYTES`` per batch, both well below it). What its size sets:
#: paramiko gives the window back only once a tenth of it was read
#: (``Channel._check_add_window``), so the server can count on nine tenths; 4 MiB left it
#: 3.6 MiB for the 4.0 MiB a stream has outstanding (it could wait for our adjustment in
#: mid-stream). And how often paramiko sends an adjustment, each one a packet framed,
#: encrypted and sent by the reading thread, and read by sshd: 4 MiB, 391 packets sent by
#: the client while reading 256 MiB; 16 MiB, 189 (``service-backup restore`` of that file:
#: 918 -> 383). Callgrind, whole process reading 32 MiB (two runs each): 2,753.6M/2,752.3M ->
#: 2,748.8M/2,745.1M instructions; 64 MiB measured the same as 16. The restore of 256 MiB,
#: 8 interleaved runs on a loaded machine: user CPU median 0.82 -> 0.79 s, peak RSS the same
#: (55-59 MiB); 2,000 files of 16 KiB: 0.47 s either way (sshd, no longer waiting for our
#: window, sends their answers in more, smaller packets: 1,900-2,500 against 2,300-2,650).
WINDOW_SIZE = 16 * 1024 * 1024
#: The only ciphers offered, in order. AES-GCM first: an AEAD mode that paramiko hands to
#: OpenSSL in one call per packet (7,268 packets of 32 KiB, 200 MiB: 0.03 s of CPU), where
#: CTR plus a separate HMAC costs twice the Python work. AES-CTR (with a SHA-2 MAC, below) is
#: the fallback for servers without GCM (OpenSSH before 6.2). paramiko's CBC modes and 3DES
#: are never offered. OpenSSH clients negotiate chacha20-poly1305 with OpenSSH 9.2, which
#: paramiko lacks. Client CPU for reading 1 GiB (interleaved, same sshd, 2 runs each):
#: aes128-gcm 3.55/3.62 s, aes256-gcm 3.82/3.35, aes128-ctr + hmac-sha2-256-etm 5.14/4.92,
#: aes128-ctr + hmac-sha2-512-etm 6.53/5.90; decryption itself is ~2 % of the GCM profile.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr",
           "aes192-ctr")  # fmt: skip
#: The only MACs offered (used with CTR only; GCM authenticates itself): encrypt-then-MAC
#: first, then SHA-2 over the plaintext as every OpenSSH since 5.9 offers it. Never SHA-1 or
#: MD5.
MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256",
        "hmac-sha2-512")  # fmt: skip
CONNECTIONS = 2
CHANNELS_PER_CONNECTION = 5  # OpenSSH allows 10 sessions per connection by default


def _only(available: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``allowed`` in its order, less what this paramiko lacks (a server offering none of
    them fails the key exchange: "no acceptable ciphers", one line)."""
    return tuple(name for name in allowed if name in available)


class HostKeyGuard:
    """Decides whether a server's host key is acceptable; shared by every connection.

    With a fingerprint, only keys listed for this host are accepted. Without one, the first
    key seen is accepted and logged (the seed: "the fingerprint of the host will be requested
    right before the upload") and every later connection of this destination must show the
    same key.
    """

    def __init__(self, server: str, port: int, fingerprint: str, name: str) -> None:
        self.where = f"{server}:{port}"
        self.name = name
        self.pinned: list[KnownKey] | None = None
        self.listed_hosts: list[str] = []
        if fingerprint.strip():
            keys = parse_fingerprint(fingerprint)
            self.listed_hosts = sorted({k.hosts for k in keys if k.hosts})
            self.pinned = [k for k in keys if k.applies_to(server, port)]
        self._seen: paramiko.PKey | None = None
        self._lock = threading.Lock()

    def key_types(self, available: tuple[str, ...]) -> tuple[str, ...]:
        """Host key algorithms to offer: only the pinned types, so the server shows those."""
        if self.pinned is None:
            return available
        wanted = [
            alg for k in self.pinned if not k.revoked for alg in NEGOTIATE.get(k.key_type, ())
        ]
        return tuple(a for a in available if a in wanted) or available

    def check(self, key: paramiko.PKey) -> None:
        blob, key_type = key.asbytes(), key.get_name()
        shown = f"{key_type} {sha256_fingerprint(blob)}"
        if self.pinned is None:
            self._accept_unpinned(key, shown)
            return
        if not self.pinned:
            raise DestinationError(
                f"host key check failed for {self.where}: the fingerprint lists no key for this "
                f"host (it lists {', '.join(self.listed_hosts) or 'none'}); refusing to connect"
            )
        if any(k.revoked and k.blob == blob for k in self.pinned):
            raise DestinationError(
                f"host key check failed for {self.where}: the server's key {shown} is marked "
                "@revoked in the fingerprint; refusing to connect"
            )
        if not any(not k.revoked and k.blob == blob for k in self.pinned):
            listed = ", ".join(
                f"{k.key_type} {k.fingerprint}" for k in self.pinned if not k.revoked
            )
            raise DestinationError(
                f"host key mismatch for {self.where}: the server presented {shown}, the "
                f"fingerprint lists {listed}; possible man-in-the-middle, refusing to connect"
            )

    def _accept_unpinned(self, key: paramiko.PKey, shown: str) -> None:
        with self._lock:
            if self._seen is None:
                self._seen = key
                logger.bind(destination_name=self.name).warning(
                    f"SCP host key for {self.where} not pinned; accepted {shown}. "
                    "Set the destination's fingerprint (ssh-keyscan output) to pin it."
                )
                return
            if self._seen.asbytes() != key.asbytes():
                raise DestinationError(
                    f"host key of {self.where} changed during the run (first "
                    f"{self._seen.get_name()} {sha256_fingerprint(self._seen.asbytes())}, "
                    f"now {shown}); refusing to connect"
                )

    def incompatible(self) -> DestinationError:
        types = sorted({k.key_type for k in self.pinned or () if not k.revoked})
        return DestinationError(
            f"host key mismatch for {self.where}: the server offers none of the key types the "
            f"fingerprint lists ({', '.join(types)}); refusing to connect"
        )


@attrs.frozen
class Endpoint:
    """Where to log in, as whom, and how long to wait for the server."""

    server: str
    port: int
    user: str
    key: paramiko.PKey = attrs.field(repr=False)
    connect_timeout: float = CONNECT_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"


def _socket(endpoint: Endpoint) -> socket.socket:
    where = endpoint.where
    try:
        sock = socket.create_connection(
            (endpoint.server, endpoint.port), timeout=endpoint.connect_timeout
        )
    except socket.gaierror as exc:
        raise DestinationError(
            f"cannot connect to {where}: unknown host ({exc.strerror})"
        ) from None
    except TimeoutError:
        raise DestinationError(
            f"cannot connect to {where}: no answer within {endpoint.connect_timeout:g} s"
        ) from None
    except ConnectionRefusedError:
        raise DestinationError(f"cannot connect to {where}: connection refused") from None
    except OSError as exc:
        raise DestinationError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_transport(
    endpoint: Endpoint,
    guard: HostKeyGuard,
    register: Callable[[paramiko.Transport], None] = lambda _: None,
) -> paramiko.Transport:
    """A connected, host-key-checked, authenticated transport, or a one-line DestinationError.

    The host key is checked before authentication, so a wrong server never sees a login
    attempt and nothing is ever written to it. ``register`` sees the transport as soon as it
    exists, so that an abort (a stall, a shutdown) can close it while it is still connecting.
    """
    where = endpoint.where
    transport = paramiko.Transport(_socket(endpoint), default_window_size=WINDOW_SIZE)
    try:
        register(transport)
        transport.channel_timeout = endpoint.idle_timeout  # paramiko waits an hour
        # paramiko's own limits stay behind ours (``_handshake``), so the error names ours.
        transport.banner_timeout = endpoint.connect_timeout + 5
        transport.handshake_timeout = endpoint.connect_timeout + 5
        transport.auth_timeout = endpoint.connect_timeout
        options = transport.get_security_options()
        options.ciphers = _only(options.ciphers, CIPHERS)
        options.digests = _only(options.digests, MACS)
        options.key_types = guard.key_types(options.key_types)
        _handshake(transport, endpoint, guard)
        guard.check(transport.get_remote_server_key())
        transport.auth_publickey(endpoint.user, endpoint.key)
        transport.set_keepalive(KEEPALIVE_SECONDS)
    except DestinationError:
        transport.close()
        raise
    except paramiko.AuthenticationException:
        transport.close()
        raise DestinationError(
            f"authentication failed for user {endpoint.user} at {where}: the server refused the key"
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        reason = describe_error(exc, endpoint.connect_timeout)
        raise DestinationError(f"SSH connection to {where} failed: {reason}") from None
    return transport


def _handshake(transport: paramiko.Transport, endpoint: Endpoint, guard: HostKeyGuard) -> None:
    """Banner and key exchange, bounded: ``start_client(timeout=)`` just returns on timeout.

    Polled, because a transport closed while it waits for the banner (an abort) never signals
    its completion event.
    """
    done = threading.Event()
    transport.start_client(event=done)
    deadline = time.monotonic() + endpoint.connect_timeout
    while not done.wait(0.1) and transport.is_active():
        if time.monotonic() > deadline:
            raise DestinationError(
                f"SSH connection to {endpoint.where} failed: no SSH handshake within "
                f"{endpoint.connect_timeout:g} s"
            )
    if transport.is_active():
        return
    error = transport.get_exception() or paramiko.SSHException("connection closed")
    if isinstance(error, IncompatiblePeer) and "host key" in str(error) and guard.pinned:
        raise guard.incompatible()
    raise error


def describe_error(exc: BaseException, timeout: float) -> str:
    """One line for a transport-level failure."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from the server within {timeout:g} s"
    return one_line(exc) or type(exc).__name__


def open_sftp(transport: paramiko.Transport, where: str, timeout: float) -> paramiko.SFTPClient:
    """An SFTP channel, within ``timeout``.

    paramiko waits without limit for the subsystem's start and the server's version; a server
    that stops answering there would hold the run forever, so the connection is closed when
    the time is up (it is of no use then anyway).
    """
    timer = threading.Timer(timeout, transport.close)
    timer.daemon = True
    timer.start()
    try:
        client = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW_SIZE)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        reason = (
            f"no answer from the server within {timeout:g} s"
            if not timer.is_alive()
            else describe_error(exc, timeout)
        )
        raise DestinationError(f"cannot open an SFTP session on {where}: {reason}") from None
    finally:
        timer.cancel()
    if client is None:
        raise DestinationError(f"cannot open an SFTP session on {where}")
    client.get_channel().settimeout(timeout)
    use_packet_pipe(client)
    return client


@attrs.define(eq=False)
class _Connection:
    transport: paramiko.Transport
    channels: int = 0


@attrs.define(eq=False)
class Session:
    """One SFTP channel, borrowed by one thread at a time."""

    client: paramiko.SFTPClient
    connection: _Connection
    #: Set when the channel may hold unread responses or the link failed: never reused.
    broken: bool = False

    def alive(self) -> bool:
        """The channel is open and its connection up."""
        channel = self.client.get_channel()
        return channel is not None and not channel.closed and self.connection.transport.is_active()


class SessionPool:
    """Lends SFTP channels, opening connections and channels on demand up to the limits.

    A borrower gets an idle channel, else opens one (on a new connection while fewer than
    ``connections`` exist and every existing one is busy, else on the least-used connection
    with room), else waits until a channel is given back or discarded.
    """

    def __init__(
        self,
        connect: Callable[[Callable[[paramiko.Transport], None]], paramiko.Transport],
        where: str,
        connections: int = CONNECTIONS,
        channels_per_connection: int = CHANNELS_PER_CONNECTION,
        timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._connect = connect
        self._where = where
        self._timeout = timeout
        self._max_connections = connections
        self._per_connection = channels_per_connection
        self._idle: list[Session] = []
        self._connections: list[_Connection] = []
        self._connecting = 0
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        #: Transports still connecting (see ``open_transport``'s ``register``).
        self._pending: set[paramiko.Transport] = set()
        #: Why ``abort`` closed every connection: what every later or blocked call reports.
        self.aborted = ""

    @contextlib.contextmanager
    def session(self, together: bool = False) -> Iterator[Session]:
        """A channel, waiting for one if needed; ``together`` (streams): on a connection that
        is open or opening whenever one has room (see the module's docstring)."""
        session = self._take(wait=True, together=together)
        assert session is not None
        with self._lent(session):
            yield session

    @contextlib.contextmanager
    def spare_session(self, together: bool = False) -> Iterator[Session | None]:
        """A channel if one is free or can be opened now, else None (never waits)."""
        session = self._take(wait=False, together=together)
        if session is None:
            yield None
            return
        with self._lent(session):
            yield session

    @contextlib.contextmanager
    def _lent(self, session: Session) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if not session.broken and not session.alive():
                session.broken = True
            self._give_back(session)
            raise
        self._give_back(session)

    def _take(self, wait: bool, together: bool = False) -> Session | None:
        deadline = time.monotonic() + self._timeout
        with self._changed:
            while True:
                if self.aborted:
                    raise DestinationError(self.aborted)
                if self._closed:
                    raise DestinationError(f"the connection to {self._where} is closed")
                while self._idle:
                    session = self._idle.pop()
                    if session.alive():
                        return session
                    self._forget(session)
                plan = self._plan(together)
                if plan is not None:
                    break
                if not wait:
                    return None
                if not self._changed.wait(deadline - time.monotonic()):
                    raise DestinationError(
                        f"no SFTP session to {self._where} became free within {self._timeout:g} s"
                    )
        return self._open(plan)

    def _plan(self, together: bool = False) -> _Connection | bool | None:
        """Under the lock: a connection to add a channel to, True to connect, None to wait.

        Spread (the default): a new connection while fewer than the limit exist and each has
        a busy channel. ``together``: the busiest connection with room, or the one being
        opened (wait for it), a new connection only when every one is full.
        """
        self._connections = [c for c in self._connections if c.transport.is_active()]
        live = self._connections
        with_room = [c for c in live if c.channels < self._per_connection]
        if together and (live or self._connecting):
            if with_room:
                chosen = max(with_room, key=lambda c: c.channels)
                chosen.channels += 1
                return chosen
            if self._connecting:
                return None
        spare = min(with_room, key=lambda c: c.channels, default=None)
        if len(live) + self._connecting < self._max_connections and (
            spare is None or spare.channels > 0
        ):
            self._connecting += 1
            return True
        if spare is not None:
            spare.channels += 1
            return spare
        return None

    def _open(self, plan: _Connection | bool) -> Session:
        if isinstance(plan, _Connection):
            connection = plan
        else:
            registered: list[paramiko.Transport] = []

            def register(transport: paramiko.Transport) -> None:
                registered.append(transport)
                with self._changed:
                    self._pending.add(transport)
                    aborted = self.aborted
                if aborted:
                    transport.close()

            opened: list[_Connection] = []
            try:
                opened.append(_Connection(self._connect(register), channels=1))
            except DestinationError:
                if self.aborted:
                    raise DestinationError(self.aborted) from None
                raise
            finally:
                # One step: a borrower waiting for this connection (``together``) finds it
                # listed as soon as it is no longer counted as connecting.
                with self._changed:
                    self._pending.difference_update(registered)
                    self._connecting -= 1
                    self._connections += opened
                    self._changed.notify_all()
            connection = opened[0]
        try:
            client = open_sftp(connection.transport, self._where, self._timeout)
        except BaseException:
            with self._changed:
                connection.channels -= 1
                self._changed.notify_all()
            if self.aborted:
                raise DestinationError(self.aborted) from None
            raise
        return Session(client, connection)

    def _give_back(self, session: Session) -> None:
        if session.broken or self._closed:
            with self._changed:
                self._forget(session)
            return
        with self._changed:
            self._idle.append(session)
            self._changed.notify()

    def _forget(self, session: Session) -> None:
        """Under the lock: a channel that will not be lent again frees its slot."""
        with contextlib.suppress(Exception):
            session.client.close()
        session.connection.channels -= 1
        self._changed.notify_all()

    def abort(self, reason: str) -> None:
        """Close every connection now (a stall, a shutdown): blocked calls end at once, and
        every call that fails because of it, or comes later, raises ``reason``."""
        with self._changed:
            self.aborted = self.aborted or reason
            transports = [c.transport for c in self._connections] + list(self._pending)
            self._changed.notify_all()
        for transport in transports:
            with contextlib.suppress(Exception):
                transport.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            connections, self._connections = self._connections, []
            self._changed.notify_all()
        for session in idle:
            with contextlib.suppress(Exception):
                session.client.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.transport.close()
