"""``s3``: moto's standalone server (``tests/s3/server.py``); peers aws-cli and rclone.

Every run gets a new bucket, created beforehand by the harness so that no tool pays for it,
and everything goes under ``backups/`` in it. Ours runs with ``upload_checksum: crc32c``, its
default on AWS, which moto stands in for. rclone 1.60 refuses to start for S3 while
``AWS_CA_BUNDLE`` is set (some environments set it globally), so it is removed for rclone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..tools import version_of
from . import OURS, SYNC_NOTE, Invocation, Location, Target, Tool, our_knobs, rclone_env, run_name

BASE = "backups"


class S3Target(Target):
    name = "s3"

    @contextmanager
    def serving(self) -> Iterator[None]:
        import boto3
        from botocore.config import Config

        from tests.s3.server import moto_server

        with moto_server(self.ctx.work / "servers" / "s3") as server:
            self.server = server
            self.server_pid = server.pid
            self.client = boto3.client(
                "s3", **server.boto3_kwargs(config=Config(retries={"max_attempts": 3}))
            )
            yield

    def tools(self) -> list[Tool]:
        return [
            Tool(OURS, ours=True,
                 knobs=our_knobs("s3") + "; upload_checksum crc32c (its default on AWS)"),
            Tool("aws s3 cp --recursive",
                 knobs="defaults: max_concurrent_requests 10, multipart_threshold 8 MiB, "
                 "multipart_chunksize 8 MiB",
                 unavailable=None if self.ctx.aws else "awscli could not be installed"),
            Tool("rclone copy",
                 knobs="defaults: --transfers 4 --checkers 8, --s3-upload-cutoff 200Mi, "
                 "--s3-chunk-size 5Mi, --s3-upload-concurrency 4",
                 unavailable=None if self.ctx.rclone else "rclone not installed"),
        ]  # fmt: skip

    def new_location(self, run_id: str) -> Location:
        bucket = run_name(run_id)
        self.client.create_bucket(Bucket=bucket)
        return Location(run_id, {"bucket": bucket})

    def ours_config(self, location: Location) -> dict[str, Any]:
        return {
            "bucket_name": location.data["bucket"],
            "bucket_path": BASE,
            "access_key_id": self.server.access_key_id,
            "secret_access_key": self.server.secret_access_key,
            "endpoint_url": self.server.endpoint,
            "region": "",
            # moto stands in for AWS S3 here, so the parts carry what they carry on AWS (an
            # endpoint_url alone would choose Content-MD5, for S3-compatible stores), as
            # aws-cli's parts carry its default CRC.
            "upload_checksum": "crc32c",
        }

    def _clean_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        missing = str(self.ctx.work / "no-such-aws-config")
        env.update(AWS_CONFIG_FILE=missing, AWS_SHARED_CREDENTIALS_FILE=missing)
        return env

    def _aws_env(self) -> dict[str, str]:
        env = self._clean_env()
        env.update(
            AWS_ACCESS_KEY_ID=self.server.access_key_id,
            AWS_SECRET_ACCESS_KEY=self.server.secret_access_key,
            AWS_DEFAULT_REGION=self.server.region,
        )
        return env

    def _rclone_env(self) -> dict[str, str]:
        return rclone_env(self._clean_env(), "benchs3", {
            "type": "s3", "provider": "Other", "endpoint": self.server.endpoint,
            "access_key_id": self.server.access_key_id,
            "secret_access_key": self.server.secret_access_key,
            "region": self.server.region, "force_path_style": "true",
        })  # fmt: skip

    def peer(self, tool: Tool, source: Path, location: Location) -> Invocation:
        bucket = location.data["bucket"]
        if tool.name.startswith("aws"):
            argv = [str(self.ctx.aws), "s3", "cp", "--recursive", "--only-show-errors",
                    "--endpoint-url", self.server.endpoint, str(source),
                    f"s3://{bucket}/{BASE}/"]  # fmt: skip
            return Invocation(argv, self._aws_env())
        return Invocation(
            [str(self.ctx.rclone), "copy", str(source), f"benchs3:{bucket}/{BASE}"],
            self._rclone_env(),
        )

    def download_peers(self) -> list[Tool]:
        return [
            Tool("aws s3 cp --recursive + sync",
                 knobs=f"defaults: max_concurrent_requests 10, multipart_chunksize 8 MiB "
                 f"(ranged GETs above the 8 MiB threshold; moto reads the whole object for "
                 f"every ranged GET, 128 times for 1 GiB: its 1 GiB figure is moto's cost); "
                 f"{SYNC_NOTE}",
                 unavailable=None if self.ctx.aws else "awscli could not be installed"),
            Tool("rclone copy + sync",
                 knobs=f"defaults: --transfers 4 --checkers 8, --multi-thread-streams 4 above "
                 f"--multi-thread-cutoff 250Mi; {SYNC_NOTE}",
                 unavailable=None if self.ctx.rclone else "rclone not installed"),
        ]  # fmt: skip

    def download(self, tool: Tool, location: Location, prefix: str, into: Path) -> Invocation:
        bucket = location.data["bucket"]
        if tool.name.startswith("aws"):
            argv = [str(self.ctx.aws), "s3", "cp", "--recursive", "--only-show-errors",
                    "--endpoint-url", self.server.endpoint, f"s3://{bucket}/{BASE}/{prefix}/",
                    str(into)]  # fmt: skip
            return Invocation(argv, self._aws_env())
        return Invocation(
            [str(self.ctx.rclone), "copy", f"benchs3:{bucket}/{BASE}/{prefix}", str(into)],
            self._rclone_env(),
        )

    def count(self, location: Location) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=location.data["bucket"]
        )
        return sum(page.get("KeyCount", 0) for page in pages)

    def remove(self, location: Location) -> None:
        bucket = location.data["bucket"]
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        uploads = self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                               UploadId=upload["UploadId"])  # fmt: skip
        self.client.delete_bucket(Bucket=bucket)

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        found = {"moto (S3 server)": importlib.metadata.version("moto"),
                 "boto3": importlib.metadata.version("boto3")}  # fmt: skip
        if self.ctx.aws:
            found["aws-cli"] = version_of([str(self.ctx.aws), "--version"])
        return found
