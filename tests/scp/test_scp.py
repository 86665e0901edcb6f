"""SCP-specific behaviour against the real sshd: host key pinning, key formats, failures,
temp-name-and-rename, literal paths, and the CLI end to end."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from loguru import logger
from paramiko.sftp import CMD_STAT, int64

import service_backup_scp
from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound, SourceError
from service_backup.plugins import load_registry
from service_backup.processes import ProcessManager
from service_backup.results import RunResult
from service_backup.run import run_backup
from service_backup.source import Source, SourceFile
from service_backup_scp._session import CHANNELS_PER_CONNECTION, CONNECTIONS, SessionPool
from service_backup_scp._sftp import MAX_IN_FLIGHT, _field
from service_backup_scp.config import ScpConfig
from service_backup_scp.destination import SPLIT_THRESHOLD, ScpDestination
from service_backup_scp.upload import BATCH_BYTES, BATCH_FILES, batches
from tests.core.cli import run_cli, write_config
from tests.servers import free_port

from .server import SshServer, keygen, sshd_server
from .test_conformance import unauthorized_key

PARTIAL = ".service-backup-partial-"
MIB = 1024 * 1024


# ----------------------------------------------------------------------------------- helpers
def raw_config(sshd: SshServer, **overrides: Any) -> dict[str, Any]:
    return {
        "user": sshd.user,
        "server": sshd.host,
        "port": sshd.port,
        "destination": str(sshd.root / f"t-{uuid.uuid4().hex}"),
        "fingerprint": sshd.keyscan,
        "key": sshd.client_key,
        **overrides,
    }


def open_destination(raw: dict[str, Any]) -> ScpDestination:
    config = structure_destination_config(raw, ScpConfig)
    return ScpDestination(config, DestinationContext("scp-test"))


def round_trip(raw: dict[str, Any], data: bytes = b"payload") -> None:
    """Connect, create the folder, write, read back: raises what the destination raises."""
    with open_destination(raw) as dest:
        dest.ensure_location()
        assert dest.write("probe/file.bin", Source.from_bytes(data)).size == len(data)
        with dest.open_read("probe/file.bin") as stream:
            assert stream.read() == data
    assert (Path(raw["destination"]) / "probe" / "file.bin").read_bytes() == data


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        structure_destination_config(raw, ScpConfig, "destinations[0].config")
    return str(info.value)


def sha256_of(pub: Path) -> str:
    """The fingerprint as OpenSSH's own ssh-keygen prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


def host_sha256(sshd: SshServer, kind: str) -> str:
    key = next(p for p in sshd.host_key_paths if p.name == f"ssh_host_{kind}_key")
    return sha256_of(key.with_suffix(".pub"))


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(PARTIAL)]


# ------------------------------------------------------------------------------- host keys
def test_keyscan_output_pins_the_host(sshd: SshServer) -> None:
    assert f"[127.0.0.1]:{sshd.port} " in sshd.keyscan  # the non-22 port form
    fingerprint = f"# 127.0.0.1:{sshd.port} SSH-2.0-OpenSSH\n\n{sshd.keyscan}\n# trailing\n"
    round_trip(raw_config(sshd, fingerprint=fingerprint))


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
def test_a_single_pinned_key_type_is_the_one_negotiated(sshd: SshServer, key_type: str) -> None:
    # The server holds all three host keys and would show Ed25519 first; with only one type
    # pinned the client must ask for that type, or the check could never pass.
    lines = [line for line in sshd.keyscan.splitlines() if line.split()[1] == key_type]
    assert len(lines) == 1
    round_trip(raw_config(sshd, fingerprint=lines[0]))


def test_hashed_keyscan_output_is_accepted(sshd: SshServer) -> None:
    out = subprocess.run(
        ["ssh-keyscan", "-H", "-p", str(sshd.port), "127.0.0.1"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.startswith("|1|")
    round_trip(raw_config(sshd, fingerprint=out.stdout))


def test_entry_without_port_and_key_only_lines_are_accepted(sshd: SshServer) -> None:
    plain = sshd.keyscan.replace(f"[127.0.0.1]:{sshd.port}", "127.0.0.1")
    round_trip(raw_config(sshd, fingerprint=plain))
    key_only = "\n".join(line.split(" ", 1)[1] for line in sshd.keyscan.splitlines())
    round_trip(raw_config(sshd, fingerprint=key_only))


def test_wrong_host_key_fails_before_anything_is_written(sshd: SshServer, tmp_path: Path) -> None:
    other_type, other_blob = keygen(tmp_path / "impostor", "ed25519").split()[:2]
    raw = raw_config(sshd, fingerprint=f"[127.0.0.1]:{sshd.port} {other_type} {other_blob}\n")
    accepted_before = sshd.log_path.read_text().count("Accepted publickey")
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert message.startswith(f"host key mismatch for 127.0.0.1:{sshd.port}: ")
    assert f"the server presented ssh-ed25519 {host_sha256(sshd, 'ed25519')}" in message
    assert f"the fingerprint lists ssh-ed25519 {sha256_of(tmp_path / 'impostor.pub')}" in message
    assert message.endswith("possible man-in-the-middle, refusing to connect")
    assert not Path(raw["destination"]).exists(), "something was written to an unverified host"
    # The check comes before authentication: the server never saw a login from us.
    assert sshd.log_path.read_text().count("Accepted publickey") == accepted_before


def test_pinned_key_type_the_server_lacks_is_a_mismatch(sshd: SshServer, tmp_path: Path) -> None:
    # The server has an ecdsa-sha2-nistp256 host key, no nistp384 one.
    key_type, blob = keygen(tmp_path / "p384", "ecdsa", "-b", "384").split()[:2]
    assert key_type == "ecdsa-sha2-nistp384"
    raw = raw_config(sshd, fingerprint=f"[127.0.0.1]:{sshd.port} {key_type} {blob}")
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert str(info.value) == (
        f"host key mismatch for 127.0.0.1:{sshd.port}: the server offers none of the key "
        "types the fingerprint lists (ecdsa-sha2-nistp384); refusing to connect"
    )
    assert not Path(raw["destination"]).exists()


def test_key_data_of_another_type_is_a_config_error(sshd: SshServer) -> None:
    lines = sshd.keyscan.splitlines()
    host = lines[0].split()[0]
    rsa_blob = next(line for line in lines if " ssh-rsa " in line).split()[2]
    message = config_error(raw_config(sshd, fingerprint=f"{host} ssh-ed25519 {rsa_blob}"))
    assert "line 1: the key data is not a ssh-ed25519 key" in message


def test_fingerprint_for_another_host_only_is_refused(sshd: SshServer) -> None:
    fingerprint = sshd.keyscan.replace(f"[127.0.0.1]:{sshd.port}", "backups.example.internal")
    raw = raw_config(sshd, fingerprint=fingerprint)
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert "lists no key for this host (it lists backups.example.internal)" in str(info.value)
    assert not Path(raw["destination"]).exists()


def test_revoked_key_is_never_accepted(sshd: SshServer) -> None:
    ed_line = next(line for line in sshd.keyscan.splitlines() if "ssh-ed25519" in line)
    raw = raw_config(sshd, fingerprint=f"@revoked {ed_line}")
    with open_destination(raw) as dest, pytest.raises(DestinationError, match="@revoked"):
        dest.ensure_location()
    assert not Path(raw["destination"]).exists()
    # Revoking one key while pinning another type: the pinned type is negotiated and accepted.
    rsa_line = next(line for line in sshd.keyscan.splitlines() if "ssh-rsa" in line)
    round_trip(raw_config(sshd, fingerprint=f"@revoked {ed_line}\n{rsa_line}"))


def test_empty_fingerprint_accepts_and_logs_the_host_key(sshd: SshServer) -> None:
    with captured_logs() as lines:
        round_trip(raw_config(sshd, fingerprint=""))
    real = host_sha256(sshd, "ed25519")
    notes = [line for line in lines if "not pinned" in line]
    assert notes == [
        f"SCP host key for 127.0.0.1:{sshd.port} not pinned; accepted ssh-ed25519 {real}. "
        "Set the destination's fingerprint (ssh-keyscan output) to pin it."
    ]


@pytest.mark.parametrize(
    ("fingerprint", "expected"),
    [
        ("SHA256:LYGQx/S755fqFFHN4IPcqEKdNcIkLo/OfbZp24/S8wM", "expected '<host> <key type>"),
        ("host ssh-ed25519 not*base64", "not valid base64"),
        ("host ssh-foo AAAA", "unknown key type 'ssh-foo'"),
        ("@cert-authority *.example ssh-ed25519 AAAA", "marker @cert-authority is not supported"),
        ("# only a comment\n", "no host key line found"),
    ],
)
def test_malformed_fingerprint_is_a_config_error(
    sshd: SshServer, fingerprint: str, expected: str
) -> None:
    message = config_error(raw_config(sshd, fingerprint=fingerprint))
    assert message.startswith("destinations[0].config.fingerprint: ")
    assert expected in message


# ------------------------------------------------------------------------------ client keys
def _pkcs8_ed25519(path: Path) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


KEY_KINDS = {
    # name: (ssh-keygen arguments, first line of the private key file)
    "rsa-pem": (["-t", "rsa", "-b", "2048", "-m", "PEM"], "-----BEGIN RSA PRIVATE KEY-----"),
    "rsa-pkcs8": (["-t", "rsa", "-b", "2048", "-m", "PKCS8"], "-----BEGIN PRIVATE KEY-----"),
    "rsa-openssh": (["-t", "rsa", "-b", "3072"], "-----BEGIN OPENSSH PRIVATE KEY-----"),
    "ecdsa-pem": (["-t", "ecdsa", "-b", "256", "-m", "PEM"], "-----BEGIN EC PRIVATE KEY-----"),
    "ecdsa384-openssh": (["-t", "ecdsa", "-b", "384"], "-----BEGIN OPENSSH PRIVATE KEY-----"),
    "ecdsa521-pkcs8": (["-t", "ecdsa", "-b", "521", "-m", "PKCS8"], "-----BEGIN PRIVATE KEY-----"),
    "ed25519-openssh": (["-t", "ed25519"], "-----BEGIN OPENSSH PRIVATE KEY-----"),
    "ed25519-pkcs8": (None, "-----BEGIN PRIVATE KEY-----"),
}


@pytest.mark.parametrize("kind", sorted(KEY_KINDS))
def test_each_client_key_type_and_format_logs_in(
    sshd: SshServer, tmp_path: Path, kind: str
) -> None:
    args, header = KEY_KINDS[kind]
    path = tmp_path / kind
    if args is None:
        public = _pkcs8_ed25519(path)
    else:
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "", *args, "-f", str(path)],
                       check=True, capture_output=True)  # fmt: skip
        public = path.with_suffix(".pub").read_text()
    text = path.read_text()
    assert text.splitlines()[0] == header
    raw = raw_config(sshd, key=text)
    with open_destination(raw) as dest, pytest.raises(DestinationError, match="authentication"):
        dest.ensure_location()  # not authorized yet: refused
    sshd.authorize(public)
    round_trip(raw, data=kind.encode())


def test_key_pasted_with_indentation_and_crlf_works(sshd: SshServer) -> None:
    messy = "\r\n".join("    " + line for line in sshd.client_key.splitlines()) + "\r\n\r\n"
    round_trip(raw_config(sshd, key=messy))


def test_unusable_keys_fail_clearly_and_never_quote_the_key(
    sshd: SshServer, tmp_path: Path
) -> None:
    """A key without PEM armour is a config error; one that does not parse fails on open."""
    path = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "sekrit-pass", "-f", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    locked = path.read_text()
    with pytest.raises(DestinationError) as info:
        open_destination(raw_config(sshd, key=locked))
    assert "protected by a passphrase" in str(info.value)
    for line in locked.splitlines()[1:-1]:
        assert line not in str(info.value)
    body = sshd.client_key.splitlines()
    broken = "\n".join([body[0], body[1][:-8] + "AAAAAAAA", *body[2:]])
    with pytest.raises(DestinationError) as info:
        open_destination(raw_config(sshd, key=broken))
    assert "not an RSA, ECDSA or Ed25519 private key in PEM or OpenSSH format" in str(info.value)
    assert body[1][:20] not in str(info.value)
    assert "no '-----BEGIN" in config_error(raw_config(sshd, key="just a password"))


def test_seed_placeholder_key_validates(sshd: SshServer) -> None:
    placeholder = "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n-----END OPENSSH PRIVATE KEY-----\n"
    structure_destination_config(raw_config(sshd, key=placeholder), ScpConfig)


# --------------------------------------------------------------------------------- failures
def test_refused_key_fails_clearly_without_the_key(sshd: SshServer) -> None:
    key = unauthorized_key()
    raw = raw_config(sshd, key=key)
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert message == (
        f"authentication failed for user {sshd.user} at 127.0.0.1:{sshd.port}: "
        "the server refused the key"
    )
    assert not Path(raw["destination"]).exists()


def test_refused_connection_fails_fast(sshd: SshServer) -> None:
    port = free_port()
    started = time.monotonic()
    with (
        open_destination(raw_config(sshd, port=port)) as dest,
        pytest.raises(
            DestinationError, match=f"cannot connect to 127.0.0.1:{port}: connection refused"
        ),
    ):
        dest.ensure_location()
    assert time.monotonic() - started < 10


def test_unknown_host_is_named(sshd: SshServer) -> None:
    raw = raw_config(sshd, server="no-such-host.invalid")
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert str(info.value).startswith(
        f"cannot connect to no-such-host.invalid:{sshd.port}: unknown host"
    )


def test_silent_server_times_out_in_bounded_time(sshd: SshServer) -> None:
    # Accepts TCP connections (the kernel completes them from the backlog) but never speaks.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with (
            open_destination(raw_config(sshd, port=port)) as dest,
            pytest.raises(DestinationError) as info,
        ):
            dest.ensure_location()
        assert time.monotonic() - started < 45
    assert str(info.value) == (
        f"SSH connection to 127.0.0.1:{port} failed: no SSH handshake within 15 s"
    )


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class _QuickDestination(ScpDestination):
    idle_timeout = 3.0


def test_server_that_stops_answering_fails_after_the_idle_timeout(tmp_path: Path) -> None:
    # A server of its own: its connection processes get frozen mid-upload (SIGSTOP), as a
    # hung host or a dead link would leave the client waiting for a window that never opens.
    with sshd_server(tmp_path / "sshd") as server:
        raw = raw_config(server)
        dest = _QuickDestination(
            structure_destination_config(raw, ScpConfig), DestinationContext("t")
        )
        frozen: list[int] = []

        def freeze() -> None:
            frozen.extend(_descendants(server.pid))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)

        try:
            dest.ensure_location()
            size = 32 * MIB
            started = time.monotonic()
            with pytest.raises(DestinationError) as info:
                dest.write("stalled.bin", _Inspecting(os.urandom(size), freeze))
            elapsed = time.monotonic() - started
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            dest.close()
        assert frozen, "no sshd connection process found to freeze"
        assert str(info.value) == (
            f"SFTP connection to 127.0.0.1:{server.port} failed: "
            "no answer from the server within 3 s"
        )
        assert elapsed < 30
        assert not (Path(raw["destination"]) / "stalled.bin").exists()


def test_read_only_server_is_permission_denied(sshd: SshServer) -> None:
    existing = sshd.root / f"ro-{uuid.uuid4().hex}"
    existing.mkdir()
    raw = raw_config(
        sshd, port=sshd.read_only_port, fingerprint=sshd.read_only_keyscan,
        destination=str(existing),
    )  # fmt: skip
    with open_destination(raw) as dest:
        dest.ensure_location()  # exists: fine even when nothing may be created
        with pytest.raises(DestinationError) as info:
            dest.write("2026/11/26/dump.rdb", Source.from_bytes(b"x"))
        assert str(info.value) == (f"permission denied creating folder 127.0.0.1:{existing}/2026")
    raw["destination"] = str(existing / "new")
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert str(info.value) == f"permission denied creating folder 127.0.0.1:{existing}/new"
    (existing / "new").mkdir()
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.write("dump.rdb", Source.from_bytes(b"x"))
    assert str(info.value) == f"permission denied: cannot write 127.0.0.1:{existing}/new/dump.rdb"
    assert list((existing / "new").iterdir()) == []


def test_immutable_folder_is_permission_denied(sshd: SshServer) -> None:
    folder = sshd.root / f"immutable-{uuid.uuid4().hex}"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        with open_destination(raw_config(sshd, destination=str(folder))) as dest:
            dest.ensure_location()
            with pytest.raises(DestinationError) as info:
                dest.write("dump.rdb", Source.from_bytes(b"x"))
        assert str(info.value) == f"permission denied: cannot write 127.0.0.1:{folder}/dump.rdb"
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert list(folder.iterdir()) == []


def test_destination_below_a_file_is_named(sshd: SshServer) -> None:
    blocker = sshd.root / f"file-{uuid.uuid4().hex}"
    blocker.write_text("not a folder")
    raw = raw_config(sshd, destination=str(blocker / "backups"))
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    assert str(info.value) == f"127.0.0.1:{blocker} exists and is not a folder"


# -------------------------------------------------------------------------------- behaviour
class _Inspecting(Source):
    """An in-memory source that runs ``check`` once, when the upload reads its second piece."""

    def __init__(self, data: bytes, check: Callable[[], None]) -> None:
        super().__init__("inspected.bin", len(data), data=data)
        self.check, self.reads = check, 0

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads += 1
        if self.reads == 2:
            self.check()
        return super().read_at(offset, length)


def listed(path: Path, size: int) -> Source:
    """``path`` as the run's listing saw it, ``size`` bytes (the file on disk may differ)."""
    return Source.from_file(SourceFile(path, path.name, size, path.stat().st_mtime_ns))


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        out.truncate(size)  # big but instant
    return path


def test_file_appears_under_its_name_only_when_complete(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    base = Path(raw["destination"])
    old, new = b"old" * 1000, os.urandom(3 * 1024 * 1024)

    def mid_upload() -> None:
        assert (base / "d" / "dump.rdb").read_bytes() == old, "the old copy was disturbed"
        assert len(partials(base)) == 1, "no temporary file is being written"

    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("d/dump.rdb", Source.from_bytes(old))
        source = _Inspecting(new, mid_upload)
        assert dest.write("d/dump.rdb", source).size == len(new)
        assert source.reads > 2
    assert (base / "d" / "dump.rdb").read_bytes() == new
    assert partials(base) == []


def test_failed_source_leaves_no_temporary_file(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    base = Path(raw["destination"])

    def fail() -> None:
        raise SourceError("cannot read source file big.bin: Input/output error")

    with open_destination(raw) as dest:
        dest.ensure_location()
        with pytest.raises(SourceError, match=r"big\.bin: Input/output error"):
            dest.write("x/big.bin", _Inspecting(os.urandom(MIB), fail))
        # the channel is still good for the next file
        dest.write("x/next.bin", Source.from_bytes(b"next"))
        with pytest.raises(ObjectNotFound):
            dest.stat("x/big.bin")
    assert partials(base) == []
    assert sorted(p.name for p in (base / "x").iterdir()) == ["next.bin"]


@pytest.mark.parametrize("path", ["stream", "split", "batch"])
@pytest.mark.parametrize("change", ["short", "grown", "modified"])
def test_a_changed_source_never_replaces_the_stored_file(
    sshd: SshServer, tmp_path: Path, path: str, change: str
) -> None:
    """A dump rewritten during the backup is never committed over the good copy of the key."""
    size = {"stream": 3 * MIB + 7, "split": SPLIT_THRESHOLD + 5, "batch": 1000}[path]
    file = sparse(tmp_path / "dump.rdb", size)
    source = listed(file, size)
    if change == "short":
        os.truncate(file, size - 1)
    elif change == "grown":
        with open(file, "ab") as out:
            out.write(b"appended while uploading")
    else:
        os.utime(file, ns=(0, 0))
    expected = {
        "short": "dump.rdb ended early",
        "grown": "dump.rdb changed size during the run",
        "modified": "dump.rdb was modified during the run",
    }[change]
    raw = raw_config(sshd)
    base = Path(raw["destination"])
    good = b"the good copy of this key"
    with open_destination(raw) as dest:
        dest.ensure_location()
        dest.write("d/dump.rdb", Source.from_bytes(good))
        with pytest.raises(SourceError, match=expected):
            if path == "batch":
                dest.write_batch([("d/other.txt", Source.from_bytes(b"o")), ("d/dump.rdb", source)])
            else:
                dest.write("d/dump.rdb", source)
        source.close()
        if path == "split":
            channels = sum(c.channels for c in dest.pool._connections)
            assert channels == 2, "the big file did not go up as two streams"
    assert (base / "d" / "dump.rdb").read_bytes() == good, "the good copy was replaced"
    assert partials(base) == [], "a temporary file was left behind"
    assert sorted(p.name for p in (base / "d").iterdir()) == ["dump.rdb"]


def test_big_file_goes_up_as_two_streams(sshd: SshServer, tmp_path: Path) -> None:
    size = SPLIT_THRESHOLD + 3 * MIB // 2 + 12_345  # an odd tail after the last whole chunk
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(MIB))
        out.write(os.urandom(size % MIB))
    raw = raw_config(sshd)
    source = listed(path, size)
    with open_destination(raw) as dest:
        dest.ensure_location()
        assert dest.write("big/big.bin", source).size == size
        # the second stream needed a second channel: on the same connection (streams borrow
        # ``together``, see _session)
        assert [c.channels for c in dest.pool._connections] == [2], "not two streams on one link"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    landed = Path(raw["destination"]) / "big" / "big.bin"
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == digest, "the stored copy differs"
    assert source.sha256 == digest, "the Source did not hash what both streams sent"
    assert partials(Path(raw["destination"])) == []


def test_big_file_on_a_read_only_server_leaves_nothing(sshd: SshServer, tmp_path: Path) -> None:
    path = sparse(tmp_path / "sparse.bin", SPLIT_THRESHOLD + 1)
    existing = sshd.root / f"ro-big-{uuid.uuid4().hex}"
    existing.mkdir()
    raw = raw_config(
        sshd, port=sshd.read_only_port, fingerprint=sshd.read_only_keyscan,
        destination=str(existing),
    )  # fmt: skip
    with open_destination(raw) as dest, pytest.raises(DestinationError) as info:
        dest.write("sparse.bin", listed(path, SPLIT_THRESHOLD + 1))
    assert str(info.value) == f"permission denied: cannot write 127.0.0.1:{existing}/sparse.bin"
    assert list(existing.iterdir()) == []


SHELL_NAMES = [
    "$(touch pwned-subst)",
    "`touch pwned-tick`",
    "; touch pwned-semi",
    "a|b&c>d<e",
    "quote'single\"double",
    "star*question?[bracket]",
    "new\\backslash ~tilde !bang #hash",
    "-rf",
]


def test_shell_metacharacters_land_literally(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    base = Path(raw["destination"])
    home = Path.home()
    before = set(home.iterdir())
    with open_destination(raw) as dest:
        dest.ensure_location()
        for index, name in enumerate(SHELL_NAMES):
            key = f"{name}/{name}.txt"
            dest.write(key, Source.from_bytes(str(index).encode()))
        listed = {o.key for o in dest.list("")}
    assert listed == {f"{n}/{n}.txt" for n in SHELL_NAMES}
    for index, name in enumerate(SHELL_NAMES):
        assert (base / name / f"{name}.txt").read_text() == str(index)
    assert not [p for p in home.iterdir() if p not in before and "pwned" in p.name]
    assert not list(sshd.root.rglob("pwned*"))


def test_no_remote_shell_command_is_ever_run(sshd: SshServer) -> None:
    round_trip(raw_config(sshd))
    deadline = time.monotonic() + 10
    sessions: list[str] = []
    while time.monotonic() < deadline and not sessions:
        sessions = re.findall(r"Starting session: (\S+)", sshd.log_path.read_text())
        if not sessions:
            time.sleep(0.05)  # sshd's log reaches the file through a reader thread
    assert sessions, "sshd logged no session"
    assert set(sessions) <= {"subsystem", "forced-command"}, sessions


def test_concurrent_writes_share_a_small_pool(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    with open_destination(raw) as dest:
        dest.ensure_location()
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(10):
                    data = f"{n}-{i}".encode() * 100
                    dest.write(f"w{n}/f{i}", Source.from_bytes(data))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        connections = dest.pool._connections
        assert 1 <= len(connections) <= CONNECTIONS
        assert all(c.channels <= CHANNELS_PER_CONNECTION for c in connections)
        assert len(list(dest.list(""))) == 120
    assert len(list(Path(raw["destination"]).rglob("f*"))) == 120


def test_concurrent_writes_into_the_same_new_folders(sshd: SshServer) -> None:
    # Threads racing to create the same nested folders: one's mkdir fails while another's
    # parent appears; every write must still succeed. (Lost this race before a fix.)
    for _ in range(6):
        raw = raw_config(sshd)
        with open_destination(raw) as dest:
            dest.ensure_location()
            errors: list[BaseException] = []

            def worker(n: int, dest: ScpDestination = dest, errors: list = errors) -> None:
                try:
                    for i in range(12):
                        dest.write(f"2026/11/26/d{i % 3}/w{n}-{i}", Source.from_bytes(b"x"))
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
        assert len(list(Path(raw["destination"]).rglob("w*"))) == 96


def test_pool_waits_for_a_free_channel_and_replaces_broken_ones(sshd: SshServer) -> None:
    with open_destination(raw_config(sshd)) as dest:
        dest.pool = SessionPool(dest.pool._connect, dest.where, 1, 1)
        dest.ensure_location()
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(5):
                    dest.write(f"p{n}/{i}", Source.from_bytes(b"x"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [c.channels for c in dest.pool._connections] == [1]
        with dest.pool.session() as session:
            session.broken = True  # as after a timeout: never lent again
        assert [c.channels for c in dest.pool._connections] == [0]
        dest.write("after-broken", Source.from_bytes(b"y"))
        assert [c.channels for c in dest.pool._connections] == [1]
        assert len(list(dest.list(""))) == 21


@pytest.mark.parametrize("form", ["{name}/nested/", "~/{name}/nested"])
def test_relative_destination_is_below_the_login_home(sshd: SshServer, form: str) -> None:
    name = f"service-backup-test-{uuid.uuid4().hex}"
    target = Path.home() / name
    try:
        with open_destination(raw_config(sshd, destination=form.format(name=name))) as dest:
            assert dest.describe("2026/11/26") == f"127.0.0.1:{name}/nested/2026/11/26"
            dest.ensure_location()
            dest.write("a.txt", Source.from_bytes(b"a"))
        assert (target / "nested" / "a.txt").read_bytes() == b"a"
    finally:
        subprocess.run(["rm", "-rf", "--", str(target)], check=False)


def test_describe_and_stat_and_delete(sshd: SshServer) -> None:
    raw = raw_config(sshd)
    with open_destination(raw) as dest:
        assert dest.describe("deploy/2026/11/26") == (
            f"127.0.0.1:{raw['destination']}/deploy/2026/11/26"
        )
        dest.ensure_location()
        dest.write("a/b.txt", Source.from_bytes(b"bee"))
        info = dest.stat("a/b.txt")
        assert info.size == 3 and info.modified is not None
        with pytest.raises(ObjectNotFound):
            dest.stat("a")  # a folder is not an object
        dest.delete("a/b.txt")
        with pytest.raises(ObjectNotFound):
            dest.delete("a/b.txt")
        with pytest.raises(DestinationError, match="invalid key"):
            dest.write("../escape.txt", Source.from_bytes(b"x"))
    assert not (Path(raw["destination"]) / "a" / "b.txt").exists()


# ---------------------------------------------------------------------------- batched runs
def run_to(raw: dict[str, Any], source: Path) -> RunResult:
    """A whole run through the core, so the plugin's batching upload hook is what runs."""
    registry = load_registry(hook_plugins=False)
    config = parse_config(
        {
            "destinations": [{"type": "scp", "name": "onprem", "config": raw}],
            "source_folder": str(source),
            "cron_schedule": "@daily",
        },
        registry,
    )
    return run_backup(config, registry, ProcessManager())


def test_opening_the_destination_module_does_not_import_invoke() -> None:
    """paramiko imports invoke (~35 ms of every run's start-up) unless told it is missing;
    the mark must not outlive paramiko's import."""
    code = (
        "import sys, service_backup_scp.destination, paramiko.config\n"
        "assert 'invoke' not in sys.modules, 'invoke was imported with paramiko'\n"
        "assert paramiko.config.invoke is None, 'paramiko.config holds invoke'\n"
        "import invoke\n"
        "assert invoke.__file__, 'invoke is not importable after paramiko'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def test_the_plugin_brings_its_upload_hook() -> None:
    registry = load_registry(hook_plugins=False)
    registry.destination_type("scp")  # loads the plugin through its entry point
    plugins = [impl.plugin for impl in registry.hook.upload.get_hookimpls()]
    assert service_backup_scp in plugins
    assert plugins[-1] is service_backup_scp  # called before the core's trylast default


def test_batches_group_small_files_in_order_and_bound_their_size(tmp_path: Path) -> None:
    files = [SourceFile(tmp_path / f"s{i}", f"s{i}", 20_000) for i in range(3 * BATCH_FILES)]
    files.insert(5, SourceFile(tmp_path / "big", "big", 300_000))
    files.insert(9, SourceFile(tmp_path / "edge", "edge", 261_120))
    groups, large = batches(files, limit=261_120)
    assert [f.relative for f in large] == ["big"]
    flat = [f.relative for g in groups for f in g]
    assert flat == [f.relative for f in files if f.relative != "big"]
    assert all(len(g) <= BATCH_FILES for g in groups)
    assert all(sum(f.size for f in g) <= BATCH_BYTES or len(g) == 1 for g in groups)
    assert len(groups) > 2


def test_run_batches_small_files_and_streams_large_ones(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    expected: dict[str, bytes] = {}
    for i in range(300):
        expected[f"d{i % 6}/f{i:03d}.dat"] = os.urandom(i * 13)  # 0 .. ~3.9 KB, one empty
    expected["edge/at-limit.bin"] = os.urandom(255 * 1024)
    expected["edge/over-limit.bin"] = os.urandom(255 * 1024 + 1)
    expected["edge/large.bin"] = os.urandom(3 * MIB + 5)
    for relative, data in expected.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)
    raw = raw_config(sshd)
    result = run_to(raw, source)
    assert result.ok, result.error
    assert result.uploads[0].files == len(expected)
    assert result.uploads[0].size_in_bytes == sum(len(d) for d in expected.values())
    landed = Path(raw["destination"]) / time.strftime("%Y/%m/%d")
    for relative, data in expected.items():
        assert (landed / relative).read_bytes() == data, relative
    assert partials(Path(raw["destination"])) == []


def test_batch_failure_names_the_file_and_leaves_no_partial(
    sshd: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(20):
        (source / f"f{i:02d}.txt").write_text(f"file {i}")
    raw = raw_config(sshd)
    landed = Path(raw["destination"]) / time.strftime("%Y/%m/%d")
    (landed / "f07.txt").mkdir(parents=True)  # a folder where a file must go: rename fails
    result = run_to(raw, source)
    assert not result.ok
    assert result.error == (
        f"destination onprem: cannot rename into 127.0.0.1:{landed}/f07.txt: Failure"
    )
    assert partials(Path(raw["destination"])) == []


def test_batch_on_a_read_only_server_is_permission_denied(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "dump.rdb").write_bytes(b"redis")
    raw = raw_config(sshd, port=sshd.read_only_port, fingerprint=sshd.read_only_keyscan)
    landed = Path(raw["destination"]) / time.strftime("%Y/%m/%d")
    landed.mkdir(parents=True)  # the folders exist; only the file cannot be created
    result = run_to(raw, source)
    assert result.error == (
        f"destination onprem: permission denied: cannot write 127.0.0.1:{landed}/dump.rdb"
    )
    assert list(landed.iterdir()) == []


def test_batch_after_a_reply_left_unread_on_the_channel(sshd: SshServer) -> None:
    # A failed operation can leave an answer unread on a channel that is reused; the batch
    # reader must route it away and still match every reply of its own.
    raw = raw_config(sshd)
    with open_destination(raw) as dest:
        dest.ensure_location()
        with dest.pool.session() as session:
            session.client._async_request(type(None), CMD_STAT, raw["destination"])
        infos = dest.write_batch(
            [
                (k, Source.from_bytes(d))
                for k, d in [("a.txt", b"a"), ("sub/b.txt", b"bb"), ("empty", b"")]
            ]
        )
        assert [i.size for i in infos] == [1, 2, 0]
        assert len(dest.pool._connections) == 1  # the same channel was used
    base = Path(raw["destination"])
    assert (base / "a.txt").read_bytes() == b"a"
    assert (base / "sub" / "b.txt").read_bytes() == b"bb"
    assert (base / "empty").read_bytes() == b""


def test_long_stream_after_a_reply_left_unread_on_the_channel(sshd: SshServer) -> None:
    # A stream reads its answers in bulk: past MAX_IN_FLIGHT writes it reads them on the way
    # (keeping a partial answer for later), routes an answer it does not own away, and leaves
    # the channel clean for the next user.
    raw = raw_config(sshd)
    data = os.urandom((MAX_IN_FLIGHT + 9) * 255 * 1024 + 5)
    with open_destination(raw) as dest:
        dest.ensure_location()
        with dest.pool.session() as session:
            session.client._async_request(type(None), CMD_STAT, raw["destination"])
        assert dest.write("long.bin", Source.from_bytes(data)).size == len(data)
        assert dest.write_batch([("after.txt", Source.from_bytes(b"after"))])[0].size == 5
        assert len(dest.pool._connections) == 1  # the same channel was used throughout
    base = Path(raw["destination"])
    assert (base / "long.bin").read_bytes() == data, "the long stream landed garbled"
    assert (base / "after.txt").read_bytes() == b"after"
    assert partials(base) == []


def test_request_fields_are_encoded_as_sftp_expects() -> None:
    assert _field(paramiko.SFTPAttributes()) == b"\0\0\0\0"  # flags 0, nothing else
    assert _field("ü/x") == b"\0\0\0\x04\xc3\xbc/x"
    assert _field(b"\x01\x02") == b"\0\0\0\x02\x01\x02"
    assert _field(7) == b"\0\0\0\x07"
    assert _field(int64(2**33)) == b"\0\0\0\x02\0\0\0\0"


# ------------------------------------------------------------------------------ end to end
def _cli_config(tmp_path: Path, sshd: SshServer, dest_config: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {
            "destinations": [{"type": "scp", "name": "onprem", "config": dest_config}],
            "source_folder": str(tmp_path / "source"),
            "cron_schedule": "@daily",
            "deployment_name": "redis-e2e",
            "add_deployment_name_to_backup_path": True,
        },
    )


def _source(tmp_path: Path) -> dict[str, bytes]:
    files = {"dump.rdb": os.urandom(300_000), "aof/append only.aof": b"SET k v\n" * 100}
    for relative, data in files.items():
        (tmp_path / "source" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "source" / relative).write_bytes(data)
    return files


def _assert_no_key(sshd: SshServer, text: str) -> None:
    for line in sshd.client_key.splitlines()[1:-1]:
        assert line not in text
    assert "Traceback" not in text and "paramiko" not in text


def test_cli_backup_end_to_end(sshd: SshServer, tmp_path: Path) -> None:
    files = _source(tmp_path)
    dest_config = raw_config(sshd)
    config = _cli_config(tmp_path, sshd, dest_config)
    day = time.strftime("%Y/%m/%d")
    result = run_cli("backup", str(config))
    assert result.returncode == 0, result.stderr
    about = result.find(
        f"about to upload {tmp_path / 'source'} to SCP remote path "
        f"127.0.0.1:{dest_config['destination']}/redis-e2e/{day}"
    )
    assert about and about[0]["data"]["destination_name"] == "onprem"
    done = result.find("Upload backup completed successfully")
    assert done and done[0]["data"]["size_in_bytes"] == sum(len(d) for d in files.values())
    landed = Path(dest_config["destination"]) / "redis-e2e" / day
    for relative, data in files.items():
        assert (landed / relative).read_bytes() == data
    assert partials(Path(dest_config["destination"])) == []
    _assert_no_key(sshd, result.stdout + result.stderr)


def test_cli_backup_with_wrong_host_key_fails_and_writes_nothing(
    sshd: SshServer, tmp_path: Path
) -> None:
    _source(tmp_path)
    key_type, blob = keygen(tmp_path / "impostor", "ed25519").split()[:2]
    dest_config = raw_config(sshd, fingerprint=f"[127.0.0.1]:{sshd.port} {key_type} {blob}")
    result = run_cli("backup", str(_cli_config(tmp_path, sshd, dest_config)))
    assert result.returncode == 1
    failed = result.find("Upload backup completed with error")
    assert failed and "host key mismatch" in failed[0]["data"]["error"]
    assert not Path(dest_config["destination"]).exists()
    _assert_no_key(sshd, result.stdout + result.stderr)


def test_cli_backup_without_fingerprint_logs_the_host_key(sshd: SshServer, tmp_path: Path) -> None:
    _source(tmp_path)
    dest_config = raw_config(sshd, fingerprint="")
    result = run_cli("backup", str(_cli_config(tmp_path, sshd, dest_config)))
    assert result.returncode == 0, result.stderr
    notes = [m for m in result.messages() if "not pinned; accepted ssh-ed25519 SHA256:" in m]
    assert len(notes) == 1
    _assert_no_key(sshd, result.stdout + result.stderr)


def test_batch_files_larger_than_one_write_request_are_sent_in_pieces(sshd: SshServer) -> None:
    """``write_batch`` takes any size (the hook bounds it); a file over 255 KiB is split."""
    raw = raw_config(sshd)
    contents = {"big.bin": os.urandom(600_000), "exact.bin": os.urandom(255 * 1024), "e": b""}
    with open_destination(raw) as dest:
        dest.ensure_location()
        infos = dest.write_batch([(k, Source.from_bytes(v)) for k, v in contents.items()])
    assert [i.size for i in infos] == [len(v) for v in contents.values()]
    for key, data in contents.items():
        assert (Path(raw["destination"]) / key).read_bytes() == data, f"{key} differs"
    assert partials(Path(raw["destination"])) == []
