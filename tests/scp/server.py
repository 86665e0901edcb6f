"""A throwaway OpenSSH ``sshd`` on a loopback port, for the SCP tests and the benchmark.

``sshd_server(folder)`` writes host keys (Ed25519, ECDSA, RSA), a client key, an
``authorized_keys`` file and an ``sshd_config`` into ``folder``, starts ``/usr/sbin/sshd -D -e``
as a subprocess on a free port, waits for its "Server listening" line, scans its host keys
with the real ``ssh-keyscan`` and yields an ``SshServer`` handle. Self-contained (no pytest)
so that ``bench/`` can use it too.

The server listens on a second port where the SFTP subsystem is read-only
(``internal-sftp -R``): a real server refusing writes with "permission denied", which a
root-run test cannot get from file modes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 20.0


@dataclass
class SshServer:
    """How to reach the running sshd."""

    host: str
    port: int
    #: A second port of the same server whose SFTP subsystem refuses every write.
    read_only_port: int
    user: str
    #: The authorized client key (Ed25519, OpenSSH format) as text, and its file.
    client_key: str
    client_key_path: Path
    #: ``ssh-keyscan -p <port> 127.0.0.1`` output: ``[127.0.0.1]:<port> <type> <base64>`` lines.
    keyscan: str
    #: ``ssh-keyscan`` output for ``read_only_port``.
    read_only_keyscan: str
    #: A ``known_hosts`` file holding ``keyscan``, for OpenSSH clients (scp, sftp, rclone).
    known_hosts_path: Path
    #: A folder the tests and benchmarks may write into.
    root: Path
    authorized_keys_path: Path
    log_path: Path
    host_key_paths: list[Path] = field(default_factory=list)
    #: The listening sshd's process id (connections are served by its child processes).
    pid: int = 0

    def authorize(self, public_key_line: str) -> None:
        """Add a client public key; sshd reads the file at every login."""
        with open(self.authorized_keys_path, "a", encoding="utf-8") as out:
            out.write(public_key_line.strip() + "\n")

    def ssh_options(self) -> list[str]:
        """``-o``/``-i`` options for OpenSSH clients (scp, sftp, ssh) to log in here."""
        return [
            "-i",
            str(self.client_key_path),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, key_type: str, *extra: str) -> str:
    """Create a key pair with ssh-keygen; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "", *extra, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(path.suffix + ".pub").read_text(encoding="utf-8").strip()


def keyscan(port: int, host: str = "127.0.0.1") -> str:
    """The real ``ssh-keyscan`` output for ``host:port`` (key lines only)."""
    out = subprocess.run(
        ["ssh-keyscan", "-T", "10", "-p", str(port), host],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in out.stdout.splitlines() if line and not line.startswith("#")]
    if not lines:
        raise RuntimeError(f"ssh-keyscan found no host key on {host}:{port}: {out.stderr.strip()}")
    return "\n".join(lines) + "\n"


def _config(folder: Path, port: int, read_only_port: int, host_keys: list[Path]) -> str:
    lines = [
        f"ListenAddress 127.0.0.1:{port}",
        f"ListenAddress 127.0.0.1:{read_only_port}",
        *[f"HostKey {key}" for key in host_keys],
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "LogLevel VERBOSE",  # "Starting session: subsystem|command ..." lines
        # Tests and benchmarks open several connections and SFTP channels at once.
        "MaxStartups 100:30:200",
        "MaxSessions 64",
        # Keeps a login shell (scp's remote side) from running the user's heavy rc files.
        "SetEnv SHLVL=1",
        "Subsystem sftp internal-sftp",
        f"Match LocalPort {read_only_port}",
        "    ForceCommand internal-sftp -R",
    ]
    return "\n".join(lines) + "\n"


def _drain(stream, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Copy sshd's stderr into ``log_path`` until sshd exits; never stop reading it.

    sshd writes a line per connection to that pipe and blocks once the pipe is full: a drain
    that died (a full disk failing the log's write) would hang every later login. So once a
    line cannot be written the log is closed, and the rest is read and dropped.
    """
    log = None
    with contextlib.suppress(OSError):
        log = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        for line in stream:
            if log is None:
                continue
            try:
                log.write(line)
                log.flush()
            except OSError:
                with contextlib.suppress(OSError):
                    log.close()
                log = None
    finally:
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()


@contextlib.contextmanager
def sshd_server(folder: Path, options: Sequence[str] = ()) -> Iterator[SshServer]:
    """Start sshd in ``folder`` (created if needed); stop it and its session processes after.

    ``options`` are extra ``sshd_config`` lines given as ``-o`` (e.g. ``Ciphers=aes256-ctr``
    for a server that offers fewer algorithms)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} not found (Debian package openssh-server)")
    # sshd's privilege-separation directory; present when openssh-server runs as a service.
    with contextlib.suppress(OSError):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    host_keys = []
    for key_type in ("ed25519", "ecdsa", "rsa"):
        path = folder / f"ssh_host_{key_type}_key"
        if not path.exists():
            keygen(path, key_type)
        host_keys.append(path)
    client_key_path = folder / "client_ed25519"
    if not client_key_path.exists():
        keygen(client_key_path, "ed25519")
    authorized = folder / "authorized_keys"
    authorized.write_text(
        client_key_path.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8"
    )
    root = folder / "data"
    root.mkdir(exist_ok=True)
    log_path = folder / "sshd.log"

    port, read_only_port = _free_port(), _free_port()
    while read_only_port == port:
        read_only_port = _free_port()
    config_path = folder / "sshd_config"
    config_path.write_text(_config(folder, port, read_only_port, host_keys), encoding="utf-8")

    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config_path), *(f"-o{o}" for o in options)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _await_listening(process, log_path, expected=2)
        drain = threading.Thread(target=_drain, args=(process.stderr, log_path), daemon=True)
        drain.start()
        scan = keyscan(port)
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(scan, encoding="utf-8")
        yield SshServer(
            host="127.0.0.1",
            port=port,
            read_only_port=read_only_port,
            user=getpass.getuser(),
            client_key=client_key_path.read_text(encoding="utf-8"),
            client_key_path=client_key_path,
            keyscan=scan,
            read_only_keyscan=keyscan(read_only_port),
            known_hosts_path=known_hosts,
            root=root,
            authorized_keys_path=authorized,
            log_path=log_path,
            host_key_paths=host_keys,
            pid=process.pid,
        )
    finally:
        _stop(process)


def _await_listening(process: subprocess.Popen, log_path: Path, expected: int) -> None:
    """Read sshd's stderr until it says it listens on every port (its readiness event)."""
    assert process.stderr is not None
    timer = threading.Timer(START_TIMEOUT, lambda: _signal_group(process, signal.SIGKILL))
    timer.start()
    seen: list[str] = []
    listening = 0
    try:
        for line in process.stderr:
            seen.append(line)
            if line.startswith("Server listening on 127.0.0.1"):
                listening += 1
                if listening == expected:
                    break
    finally:
        timer.cancel()
    with open(log_path, "a", encoding="utf-8") as log:
        log.writelines(seen)
    if listening < expected:
        process.wait()
        text = " | ".join(line.strip() for line in seen[-5:]) or "no output"
        raise RuntimeError(f"sshd did not start (exit status {process.returncode}): {text}")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to sshd's process group (the listener and its per-connection children)."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.scp.server DIR
    import sys

    with sshd_server(Path(sys.argv[1])) as server:
        print(server, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
