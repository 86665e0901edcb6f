"""``scp``: OpenSSH sshd (``tests/scp/server.py``); peers OpenSSH scp (SFTP and legacy
protocol), ``sftp -b`` and rclone's sftp backend.

sshd writes to this machine's disk, so like ``local`` the run folders are removed at the end
of a cell rather than between runs (ext4 without a journal). The server's CPU includes the
per-connection sshd processes it reaped during the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import OURS, SYNC_NOTE, Invocation, Location, Target, Tool, our_knobs, rclone_env

SCP = "scp -r"
SCP_LEGACY = "scp -O -r"
SFTP = "sftp -b"
RCLONE = "rclone copy (sftp)"


class ScpTarget(Target):
    name = "scp"
    remove_right_away = False

    @contextmanager
    def serving(self) -> Iterator[None]:
        from tests.scp.server import sshd_server

        folder = self.ctx.work / "servers" / "scp"
        with sshd_server(folder) as server:
            self.server = server
            try:
                self.server_pid = int((folder / "sshd.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                self.server_pid = None
            yield

    def tools(self) -> list[Tool]:
        rclone = None if self.ctx.rclone else "rclone not installed"
        return [
            Tool(OURS, ours=True, knobs=our_knobs("scp")),
            Tool(SCP, knobs="OpenSSH defaults: SFTP protocol, one file at a time, up to 64 "
                 "outstanding 32 KiB requests, default cipher"),
            Tool(SCP_LEGACY, knobs="OpenSSH's legacy SCP protocol (remote `scp -t` through "
                 "the login shell), one stream"),
            Tool(SFTP, knobs="batch `put -r`, defaults: -R 64 requests of -B 32768 bytes, "
                 "one file at a time"),
            Tool(RCLONE, knobs="defaults: --transfers 4 --checkers 8, --sftp-concurrency 64, "
                 "--sftp-chunk-size 32Ki; runs remote md5sum/sha1sum to check hashes",
                 unavailable=rclone),
        ]  # fmt: skip

    def new_location(self, run_id: str) -> Location:
        return Location(run_id, {"path": str(self.server.root / run_id)})

    def ours_config(self, location: Location) -> dict[str, Any]:
        return {
            "user": self.server.user,
            "server": self.server.host,
            "port": self.server.port,
            "destination": location.data["path"],
            "key": self.server.client_key,
            "fingerprint": self.server.keyscan,
        }

    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation:
        dest = location.data["path"]
        login = f"{self.server.user}@{self.server.host}"
        options = self.server.ssh_options()
        port = str(self.server.port)
        if tool.name == SCP:
            return Invocation(
                ["scp", "-r", "-q", "-P", port, *options, str(source), f"{login}:{dest}"]
            )
        if tool.name == SCP_LEGACY:
            return Invocation(["scp", "-O", "-r", "-q", "-P", port, *options, str(source),
                               f"{login}:{dest}"])  # fmt: skip
        if tool.name == SFTP:
            batch = self.ctx.work / "configs" / f"{location.ident}.sftp"
            batch.parent.mkdir(parents=True, exist_ok=True)
            batch.write_text(f'put -r "{source}" "{dest}"\n')
            return Invocation(["sftp", "-q", "-b", str(batch), "-P", port, *options, login])
        env = self._rclone_env()
        return Invocation([str(self.ctx.rclone), "copy", str(source), f"benchssh:{dest}"], env)

    def _rclone_env(self) -> dict[str, str]:
        return rclone_env(dict(os.environ), "benchssh", {
            "type": "sftp", "host": self.server.host, "port": str(self.server.port),
            "user": self.server.user, "key_file": str(self.server.client_key_path),
            "known_hosts_file": str(self.server.known_hosts_path),
        })  # fmt: skip

    def download_peers(self) -> list[Tool]:
        rclone = None if self.ctx.rclone else "rclone not installed"
        return [
            Tool(f"{SCP} + sync", knobs=f"OpenSSH defaults: SFTP protocol, one file at a time; "
                 f"{SYNC_NOTE}"),
            Tool(f"{SCP_LEGACY} + sync", knobs=f"legacy SCP protocol (remote `scp -f`), one "
                 f"stream; {SYNC_NOTE}"),
            Tool(f"{SFTP} + sync", knobs=f"batch `get -r`, defaults: -R 64 requests of -B 32768 "
                 f"bytes, one file at a time; {SYNC_NOTE}"),
            Tool(f"{RCLONE} + sync", knobs=f"defaults: --transfers 4 --checkers 8, "
                 f"--sftp-concurrency 64; {SYNC_NOTE}", unavailable=rclone),
        ]  # fmt: skip

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        run = f"{location.data['path']}/{prefix}"
        login = f"{self.server.user}@{self.server.host}"
        options = self.server.ssh_options()
        port = str(self.server.port)
        name = tool.name.removesuffix(" + sync")
        if name == SCP:
            return Invocation(["scp", "-r", "-q", "-P", port, *options, f"{login}:{run}",
                               str(into)])  # fmt: skip
        if name == SCP_LEGACY:
            return Invocation(["scp", "-O", "-r", "-q", "-P", port, *options, f"{login}:{run}",
                               str(into)])  # fmt: skip
        if name == SFTP:
            batch = self.ctx.work / "configs" / f"{location.ident}-{into.name}.sftp"
            batch.parent.mkdir(parents=True, exist_ok=True)
            batch.write_text(f'get -r "{run}" "{into}"\n')
            return Invocation(["sftp", "-q", "-b", str(batch), "-P", port, *options, login])
        env = self._rclone_env()
        return Invocation([str(self.ctx.rclone), "copy", f"benchssh:{run}", str(into)], env)

    def count(self, location: Location) -> int:
        return sum(len(files) for _, _, files in os.walk(location.data["path"]))

    def remove(self, location: Location) -> None:
        shutil.rmtree(location.data["path"], ignore_errors=True)

    def versions(self) -> dict[str, str]:
        import importlib.metadata
        import subprocess

        out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        return {
            "OpenSSH (sshd, scp, sftp)": (out.stderr or out.stdout).strip(),
            "paramiko": importlib.metadata.version("paramiko"),
        }
