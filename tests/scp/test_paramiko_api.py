"""The private parts of paramiko that ``_sftp.py`` relies on are still there, unchanged.

The plugin frames SFTP requests through ``SFTPClient``'s private request table (see the
docstring of ``service_backup_scp._sftp``) and pins paramiko to the minor version tested. When
paramiko is upgraded, these tests fail first and name what moved, before any upload does.
"""

from __future__ import annotations

import importlib.metadata
import re
import uuid
from collections.abc import MutableMapping
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup_scp import _sftp
from service_backup_scp.config import ScpConfig
from service_backup_scp.destination import ScpDestination

from .server import SshServer
from .test_scp import raw_config


def test_private_names_and_signatures_are_unchanged() -> None:
    problems = _sftp.private_api_problems()
    assert problems == [], (
        f"paramiko {importlib.metadata.version('paramiko')} changed the private API that "
        f"service_backup_scp._sftp uses: {'; '.join(problems)}. Adapt _sftp.py before "
        "widening the paramiko pin in plugins_scp/pyproject.toml."
    )


def test_a_connected_client_has_the_private_attributes(sshd: SshServer) -> None:
    raw = {
        "user": sshd.user,
        "server": sshd.host,
        "port": sshd.port,
        "destination": str(sshd.root / f"api-{uuid.uuid4().hex}"),
        "fingerprint": sshd.keyscan,
        "key": sshd.client_key,
    }
    config = structure_destination_config(raw, ScpConfig)
    with ScpDestination(config, DestinationContext("api")) as dest, dest.pool.session() as s:
        problems = _sftp.private_api_problems(s.client)
        assert problems == [], f"paramiko's SFTPClient changed: {'; '.join(problems)}"
        # A WeakValueDictionary in paramiko 5.1: _sftp keeps every registered owner alive.
        assert isinstance(s.client._expecting, MutableMapping), "SFTPClient._expecting changed"


def test_installed_paramiko_is_within_the_pin() -> None:
    """The pin is a single minor version: the one these tests ran against."""
    requires = importlib.metadata.requires("service-backup-scp") or []
    pin = next(Requirement(r) for r in requires if Requirement(r).name == "paramiko")
    installed = Version(importlib.metadata.version("paramiko"))
    assert installed in pin.specifier, f"paramiko {installed} is outside the pin {pin.specifier}"
    bounds = sorted(Version(s.version) for s in pin.specifier)
    assert len(bounds) == 2 and bounds[1].release[:2] == (
        bounds[0].major,
        bounds[0].minor + 1,
    ), f"paramiko must be pinned to one tested minor version, not {pin.specifier}"


def test_only_sftp_module_frames_requests_or_touches_private_names() -> None:
    """The private names (and SFTP's CMD_* numbers) stay in _sftp.py, where the checks above
    cover them; the read-ahead and the destination only call its functions."""
    package = Path(_sftp.__file__).parent
    methods = [name for _, name, _ in _sftp.PRIVATE_API] + ["_read_response", "_async_request"]
    patterns = [r"\bCMD_[A-Z]+", *(rf"\.{name}\b" for name in methods)]
    patterns += [rf"client\.{name}\b" for name in _sftp.PRIVATE_CLIENT_ATTRIBUTES]
    found = [
        f"{path.name}: {match.group(0)}"
        for path in sorted(package.glob("*.py"))
        if path.name != "_sftp.py"
        for pattern in patterns
        for match in [re.search(pattern, path.read_text(encoding="utf-8"))]
        if match is not None
    ]
    assert found == [], f"private paramiko API used outside _sftp.py: {', '.join(found)}"


def test_a_piece_of_packet_room_bytes_is_what_one_channel_send_takes(sshd: SshServer) -> None:
    """``_sftp._send_write`` cuts a write into pieces of ``packet_room`` bytes so that each is
    one SSH packet; paramiko must still take exactly that much per ``Channel.send``.

    Sent as a real SFTP write (an SFTP channel reads every byte as a request), whose stored
    size is checked after.
    """
    folder = sshd.root / f"api-{uuid.uuid4().hex}"
    folder.mkdir()
    raw = raw_config(sshd, destination=str(folder))
    config = structure_destination_config(raw, ScpConfig)
    with ScpDestination(config, DestinationContext("api")) as dest, dest.pool.session() as s:
        stream = _sftp.open_for_write(s.client, str(folder / "piece"), 0o600)
        room = _sftp.packet_room(stream.channel)
        assert room == stream.channel.out_max_packet_size - _sftp.PARAMIKO_PACKET_HEADROOM
        data = bytes(room + 1000)
        num = _sftp._number(s.client)
        stream.writes.add(num)
        frame = _sftp._write_head(num, stream.encoded, 0, len(data)) + data
        sent = stream.channel.send(frame)
        assert sent == room, (
            f"paramiko {importlib.metadata.version('paramiko')} sent {sent} bytes in one "
            f"Channel.send, not {room} (the server's maximum packet size less "
            f"{_sftp.PARAMIKO_PACKET_HEADROOM}): adapt _sftp.PARAMIKO_PACKET_HEADROOM"
        )
        _sftp._send_all(stream.channel, memoryview(frame)[sent:])
        assert stream.finish(None) == len(data), "the write of the test did not arrive whole"
