"""``gcs``: gcp-storage-emulator with its verifying token endpoint (``tests/gcs/server.py``).

Peers: a plain google-cloud-storage script with the SDK's defaults (``bench/peers``), and
rclone's GCS backend pointed at the emulator. rclone signs its service-account JWT for the
key's ``token_uri`` audience, which the endpoint (like Google's) refuses, so rclone runs
anonymously (the emulator checks no credentials); it also fails against the emulator for
objects over 16 MiB (the emulator answers its resumable upload with a 308 rclone does not
expect), so it is left out of those sets.

The emulator rewrites its metadata after every object and grows slower with every object it
holds, and deleting thousands of objects one request at a time costs minutes, so every run
gets a fresh emulator in a fresh folder instead of a fresh bucket in a shared one.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..datasets import DataSet
from . import OURS, SYNC_NOTE, Invocation, Location, Target, Tool, our_knobs, rclone_env, run_name

BASE = "backups"
RCLONE_LIMIT = 16 * 1024 * 1024
SDK = "google-cloud-storage script"


class GcsTarget(Target):
    name = "gcs"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._running: dict[str, tuple[ExitStack, Any]] = {}

    def tools(self) -> list[Tool]:
        return [
            Tool(OURS, ours=True, knobs=our_knobs("gcs")),
            Tool(SDK, knobs="one file after another, Blob.upload_from_filename with the SDK's "
                 "defaults (single request up to 8 MiB, else resumable in 100 MiB chunks)"),
            Tool("rclone copy",
                 knobs="defaults: --transfers 4 --checkers 8; anonymous (see the note)",
                 unavailable=None if self.ctx.rclone else "rclone not installed"),
        ]  # fmt: skip

    def skip(self, dataset: DataSet, tool: Tool) -> str | None:
        if tool.name == "rclone copy" and dataset.file_size > RCLONE_LIMIT:
            return "cannot: rclone 1.60's GCS backend fails on the emulator above 16 MiB (308)"
        return None

    def restore_skip(self, dataset: DataSet, tool: Tool) -> str | None:
        return None  # the 308 is the emulator's answer to a resumable upload only

    def limit(self, dataset: DataSet) -> tuple[int, int, str] | None:
        if dataset.files >= 5000:
            return 1, 0, "1 run, no warm-up: the emulator serves one request at a time"
        return None

    def new_location(self, run_id: str) -> Location:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        from tests.gcs.server import gcs_emulator

        folder = self.ctx.work / "servers" / "gcs" / run_id
        stack = ExitStack()
        server = stack.enter_context(gcs_emulator(folder))
        client = storage.Client(
            project=server.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint},
        )
        bucket = run_name(run_id)
        client.create_bucket(bucket)
        self._running[run_id] = (stack, server)
        self.server_pid = server.pid
        return Location(run_id, {"bucket": bucket, "folder": str(folder), "client": client,
                                 "server": server})  # fmt: skip

    def ours_config(self, location: Location) -> dict[str, Any]:
        server = location.data["server"]
        return dict(server.config(location.data["bucket"], bucket_path=BASE))

    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation:
        server, bucket = location.data["server"], location.data["bucket"]
        if tool.name == SDK:
            env = dict(os.environ)
            env.pop("STORAGE_EMULATOR_HOST", None)
            env.update(
                BENCH_GCS_KEY=server.service_account_json, BENCH_GCS_ENDPOINT=server.endpoint
            )
            argv = [sys.executable, "-m", "bench.peers.gcs_upload", str(source), bucket, BASE]
            return Invocation(argv, env, cwd=self.ctx.repo)
        env = rclone_env(dict(os.environ), "benchgcs", {
            "type": "google cloud storage", "endpoint": server.endpoint, "anonymous": "true",
        })  # fmt: skip
        return Invocation(
            [str(self.ctx.rclone), "copy", str(source), f"benchgcs:{bucket}/{BASE}"], env
        )

    def download_peers(self) -> list[Tool]:
        return [
            Tool(f"{SDK} + sync", knobs="one file after another, Blob.download_to_filename "
                 f"with the SDK's defaults; {SYNC_NOTE}"),
            Tool("rclone copy + sync",
                 knobs=f"defaults: --transfers 4 --checkers 8; anonymous; {SYNC_NOTE}",
                 unavailable=None if self.ctx.rclone else "rclone not installed"),
        ]  # fmt: skip

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        server, bucket = location.data["server"], location.data["bucket"]
        if tool.name.startswith(SDK):
            env = dict(os.environ)
            env.pop("STORAGE_EMULATOR_HOST", None)
            env.update(
                BENCH_GCS_KEY=server.service_account_json, BENCH_GCS_ENDPOINT=server.endpoint
            )
            argv = [sys.executable, "-m", "bench.peers.gcs_download", bucket,
                    f"{BASE}/{prefix}", str(into)]  # fmt: skip
            return Invocation(argv, env, cwd=self.ctx.repo)
        env = rclone_env(dict(os.environ), "benchgcs", {
            "type": "google cloud storage", "endpoint": server.endpoint, "anonymous": "true",
        })  # fmt: skip
        return Invocation(
            [str(self.ctx.rclone), "copy", f"benchgcs:{bucket}/{BASE}/{prefix}", str(into)], env
        )

    def count(self, location: Location) -> int:
        return sum(1 for _ in location.data["client"].list_blobs(location.data["bucket"]))

    def remove(self, location: Location) -> None:
        stack, _ = self._running.pop(location.ident, (None, None))
        if stack is not None:
            stack.close()
        shutil.rmtree(location.data["folder"], ignore_errors=True)

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        return {
            "gcp-storage-emulator (GCS server)": importlib.metadata.version("gcp-storage-emulator"),
            "google-cloud-storage": importlib.metadata.version("google-cloud-storage"),
        }
