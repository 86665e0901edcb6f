"""``azure``: Azurite (``tests/azure/server.py``); peer rclone's azureblob backend.

Every run gets a new container, created beforehand by the harness. rclone reaches Azurite on
a port other than 10000 only through a container SAS URL, so its remote is given one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import OURS, SYNC_NOTE, Invocation, Location, Target, Tool, our_knobs, rclone_env, run_name

BASE = "backups"


class AzureTarget(Target):
    name = "azure"

    @contextmanager
    def serving(self) -> Iterator[None]:
        from azure.storage.blob import BlobServiceClient

        from tests.azure.server import azurite

        with azurite(self.ctx.work / "servers" / "azure") as server:
            self.server = server
            self.server_pid = server.pid
            self.service = BlobServiceClient.from_connection_string(server.connection_string)
            yield

    def tools(self) -> list[Tool]:
        return [
            Tool(OURS, ours=True, knobs=our_knobs("azure")),
            Tool(
                "rclone copy",
                knobs="defaults: --transfers 4 --checkers 8, --azureblob-chunk-size 4Mi, "
                "--azureblob-upload-concurrency 16; remote given as a container SAS URL",
                unavailable=None if self.ctx.rclone else "rclone not installed",
            ),
        ]

    def new_location(self, run_id: str) -> Location:
        container = run_name(run_id)
        self.service.create_container(container)
        return Location(run_id, {"container": container})

    def ours_config(self, location: Location) -> dict[str, Any]:
        return {
            "storage_account": self.server.account_name,
            "storage_access_key": self.server.account_key,
            "container": location.data["container"],
            "path": BASE,
            "endpoint": self.server.account_url,
        }

    def _rclone_env(self, container: str) -> dict[str, str]:
        """rclone reaches Azurite on its port only through a container SAS URL."""
        sas = {"type": "azureblob", "sas_url": self.server.container_sas_url(container)}
        return rclone_env(dict(os.environ), "benchaz", sas)

    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation:
        container = location.data["container"]
        env = self._rclone_env(container)
        return Invocation(
            [str(self.ctx.rclone), "copy", str(source), f"benchaz:{container}/{BASE}"], env
        )

    def download_peers(self) -> list[Tool]:
        return [
            Tool("rclone copy + sync",
                 knobs=f"defaults: --transfers 4 --checkers 8, --multi-thread-streams 4 above "
                 f"--multi-thread-cutoff 250Mi; container SAS URL; {SYNC_NOTE}",
                 unavailable=None if self.ctx.rclone else "rclone not installed"),
        ]  # fmt: skip

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        container = location.data["container"]
        env = self._rclone_env(container)
        return Invocation(
            [str(self.ctx.rclone), "copy", f"benchaz:{container}/{BASE}/{prefix}", str(into)],
            env,
        )

    def count(self, location: Location) -> int:
        container = self.service.get_container_client(location.data["container"])
        return sum(1 for _ in container.list_blobs())

    def remove(self, location: Location) -> None:
        self.service.delete_container(location.data["container"])

    def versions(self) -> dict[str, str]:
        import importlib.metadata
        import json

        found = {"azure-storage-blob": importlib.metadata.version("azure-storage-blob")}
        package = self.ctx.repo / "node_modules" / "azurite" / "package.json"
        try:
            found["Azurite (Azure server)"] = json.loads(package.read_text())["version"]
        except (OSError, ValueError, KeyError):
            found["Azurite (Azure server)"] = "?"
        return found
