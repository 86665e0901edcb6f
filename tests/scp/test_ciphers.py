"""Which cipher and MAC a connection negotiates, against the real OpenSSH sshd.

The plugin offers AES-GCM first (AEAD: one OpenSSL call per packet, the cheapest secure
choice paramiko has), then AES-CTR with SHA-2 MACs (encrypt-then-MAC first) for servers
without GCM, and nothing weaker: no CBC, no 3DES, no SHA-1 or MD5 MACs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_backup.errors import DestinationError
from service_backup.source import Source
from service_backup_scp import _session
from service_backup_scp.destination import ScpDestination

from .conftest import serve_sshd
from .server import SshServer
from .test_scp import open_destination as open_raw
from .test_scp import raw_config

WEAK = ("cbc", "3des", "arcfour", "hmac-sha1", "hmac-md5", "none")


def open_destination(server: SshServer) -> ScpDestination:
    return open_raw(raw_config(server))


@pytest.fixture(scope="module")
def ctr_only_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd offering neither GCM nor chacha20: AES-CTR, and one encrypt-then-MAC MAC."""
    folder: Path = tmp_path_factory.mktemp("sshd-ctr")
    options = ("Ciphers=aes256-ctr,aes128-cbc", "MACs=hmac-sha2-256-etm@openssh.com,hmac-sha1")
    yield from serve_sshd(folder, options)


def negotiated(dest: ScpDestination) -> tuple[str, str, str, str]:
    with dest.pool.session() as session:
        t = session.connection.transport
        return t.local_cipher, t.remote_cipher, t.local_mac, t.remote_mac


def test_only_strong_algorithms_are_offered(sshd: SshServer) -> None:
    with open_destination(sshd) as dest, dest.pool.session() as session:
        options = session.connection.transport.get_security_options()
        ciphers, macs = tuple(options.ciphers), tuple(options.digests)
    assert ciphers[0] == "aes128-gcm@openssh.com", f"AES-GCM is not preferred: {ciphers}"
    assert macs[0].endswith("-etm@openssh.com"), f"an ETM MAC is not preferred: {macs}"
    weak = [n for n in (*ciphers, *macs) if any(w in n for w in WEAK)]
    assert weak == [], f"weak algorithms offered: {weak}"


def test_the_real_sshd_negotiates_aes_gcm(sshd: SshServer) -> None:
    with open_destination(sshd) as dest:
        local, remote, _, _ = negotiated(dest)
    assert (local, remote) == ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com"), (
        f"expected AES-128-GCM both ways with OpenSSH, negotiated {local} / {remote}"
    )


def test_a_server_without_gcm_gets_ctr_with_an_etm_mac(ctr_only_sshd: SshServer) -> None:
    data = os.urandom(1024 * 1024 + 17)
    with open_destination(ctr_only_sshd) as dest:
        local, remote, local_mac, remote_mac = negotiated(dest)
        assert (local, remote) == ("aes256-ctr", "aes256-ctr"), (
            f"the fallback cipher should be AES-256-CTR (CBC refused), got {local} / {remote}"
        )
        assert local_mac == remote_mac == "hmac-sha2-256-etm@openssh.com", (
            f"the fallback MAC should be SHA-256 encrypt-then-MAC (SHA-1 refused), got "
            f"{local_mac} / {remote_mac}"
        )
        dest.ensure_location()
        assert dest.write("ctr/file.bin", Source.from_bytes(data)).size == len(data)
        stored = Path(dest.base, "ctr/file.bin").read_bytes()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest(), (
        "a file uploaded over AES-CTR + ETM was not stored byte for byte"
    )


def test_a_server_offering_only_weak_ciphers_is_refused_in_one_line(
    ctr_only_sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server offers aes256-ctr and aes128-cbc; a client allowing only GCM finds nothing.
    monkeypatch.setattr(_session, "CIPHERS", ("aes128-gcm@openssh.com",))
    with (
        open_destination(ctr_only_sshd) as dest,
        pytest.raises(DestinationError) as failed,
        dest.pool.session(),
    ):
        pass
    message = str(failed.value)
    assert "\n" not in message and "cipher" in message.lower(), (
        f"a server with no acceptable cipher should fail in one line naming ciphers: {message!r}"
    )
