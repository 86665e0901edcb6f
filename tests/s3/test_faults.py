"""S3 under faults, against moto: sources that change, leftovers, stalls, resets, shutdown.

Stalls and resets go through ``tests/faultproxy.py`` in front of the real moto server; the
stall rule is shortened to a second so that each case fails in a few seconds, as it would in
a minute with the defaults.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.config import structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import DestinationError, SourceError
from service_backup.layout import MiB
from service_backup.plugins import load_registry
from service_backup.source import Source, SourceFile
from service_backup.upload import upload_one
from service_backup_s3.destination import MULTIPART_THRESHOLD, S3Destination
from tests.faultproxy import FaultProxy, fault_proxy

from .server import MotoServer

BIG = MULTIPART_THRESHOLD + 1 * MiB
SIZES = pytest.mark.parametrize("size", [1000, BIG], ids=["single-put", "multipart"])


def open_destination(raw: dict[str, Any], stop: threading.Event | None = None) -> S3Destination:
    dtype = load_registry(hook_plugins=False).destination_type("s3")
    config = structure_destination_config(raw, dtype.config_class)
    context = DestinationContext("s3-faults", stop=stop or threading.Event())
    destination = dtype.factory(config, context)
    assert isinstance(destination, S3Destination)
    return destination


def uploads_left(admin: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", ())]


def stored(admin: Any, bucket: str, key: str) -> bytes:
    return bytes(admin.get_object(Bucket=bucket, Key=key)["Body"].read())


# --------------------------------------------------------------- a changing source (21 1a)


def change_file(path: Path, how: str) -> None:
    if how == "short":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 100)
    elif how == "grown":
        with open(path, "ab") as f:
            f.write(b"appended while the run was uploading")
    else:  # same size, new content and modification time
        with open(path, "r+b") as f:
            f.write(b"rewritten")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@SIZES
@pytest.mark.parametrize("how", ["short", "grown", "modified"])
def test_changed_source_never_replaces_the_good_object(
    s3_config: dict[str, Any], s3_admin: Any, tmp_path: Path, size: int, how: str
) -> None:
    bucket, key = s3_config["bucket_name"], "2026/11/26/dump.rdb"
    good = b"the good backup of this morning"
    path = tmp_path / "dump.rdb"
    path.write_bytes(os.urandom(size))
    st = path.stat()
    file = SourceFile(path=path, relative="dump.rdb", size=size, mtime_ns=st.st_mtime_ns)
    change_file(path, how)
    with open_destination(s3_config) as dest:
        dest.ensure_location()
        s3_admin.put_object(Bucket=bucket, Key=f"backups/redis/{key}", Body=good)
        with pytest.raises(SourceError) as info:
            upload_one(dest, key, file)
    assert "dump.rdb" in str(info.value)
    assert stored(s3_admin, bucket, f"backups/redis/{key}") == good, (
        f"a {how} source replaced the good object"
    )
    assert uploads_left(s3_admin, bucket) == [], "the multipart upload was not aborted"


# ------------------------------------------------------------------------ leftovers (21 2)


def test_old_incomplete_uploads_of_this_tool_are_swept(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    s3_admin.create_bucket(Bucket=bucket)
    ours = "backups/redis/deploy/2026/11/25/dump.rdb"
    keep = [
        "backups/redis/notes/readme.txt",  # under the base, but no run of ours writes it
        "elsewhere/2026/11/25/dump.rdb",  # a run-shaped key outside the base
        "backups/redis-other/2026/11/25/x",  # a sibling prefix
    ]
    for key in [ours, *keep]:
        s3_admin.create_multipart_upload(Bucket=bucket, Key=key)
    # moto reports every upload as initiated on 2010-11-10: older than the default bound,
    # younger than a century.
    with open_destination(s3_config) as dest:
        dest.orphan_age = datetime.timedelta(days=36500)
        dest.ensure_location()
        assert sorted(uploads_left(s3_admin, bucket)) == sorted([ours, *keep]), (
            "the sweep aborted uploads younger than its bound"
        )
    with open_destination(s3_config) as dest:
        dest.ensure_location()
    assert sorted(uploads_left(s3_admin, bucket)) == sorted(keep), (
        "the sweep must abort only old run-shaped uploads under the base"
    )


def test_sweep_without_permission_does_not_fail_the_run(
    moto: MotoServer, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    bucket = s3_config["bucket_name"]
    s3_admin.create_bucket(Bucket=bucket)
    s3_admin.create_multipart_upload(Bucket=bucket, Key="backups/redis/2026/11/25/a")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    key_id, secret = moto.create_user(f"no-mpu-{os.urandom(4).hex()}", policy)
    raw = {**s3_config, "access_key_id": key_id, "secret_access_key": secret}
    with open_destination(raw) as dest:
        dest.ensure_location()  # warns, does not raise
        assert dest.write("2026/11/26/ok.txt", Source.from_bytes(b"ok")).size == 2
    assert uploads_left(s3_admin, bucket) == ["backups/redis/2026/11/25/a"]


# ------------------------------------------------------------ stalls and shutdown (21 3)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with fault_proxy(int(moto.endpoint.rsplit(":", 1)[1]), "pass", interval=0.5) as p:
        yield p


def proxied(s3_config: dict[str, Any], proxy: FaultProxy, **extra: Any) -> dict[str, Any]:
    return {
        **s3_config,
        "endpoint_url": f"http://127.0.0.1:{proxy.port}",
        "stall_timeout_seconds": 1,
        **extra,
    }


@SIZES
@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
def test_stalled_upload_fails_within_the_stall_time(
    proxy: FaultProxy, s3_config: dict[str, Any], s3_admin: Any, size: int, mode: str
) -> None:
    with open_destination(proxied(s3_config, proxy)) as dest:
        dest.ensure_location()
        proxy.mode = mode
        started = time.monotonic()
        with pytest.raises(DestinationError) as info:
            dest.write("2026/11/26/stalled.bin", Source.from_bytes(os.urandom(size)))
        took = time.monotonic() - started
    message = str(info.value)
    assert message.startswith("s3-faults: upload of "), message
    assert "stalled" in message, message
    assert took < 10, f"a {mode} endpoint took {took:.1f} s to fail with a 1 s stall rule"
    bucket = s3_config["bucket_name"]
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_black_holed_bucket_check_fails_within_the_stall_time(
    proxy: FaultProxy, s3_config: dict[str, Any]
) -> None:
    proxy.mode = "blackhole"
    started = time.monotonic()
    with open_destination(proxied(s3_config, proxy)) as dest, pytest.raises(DestinationError) as e:
        dest.ensure_location()
    assert "stalled" in str(e.value) and "s3-faults" in str(e.value), e.value
    assert time.monotonic() - started < 10


def test_shutdown_interrupts_a_transfer_in_flight(
    proxy: FaultProxy, s3_config: dict[str, Any]
) -> None:
    stop = threading.Event()
    raw = proxied(s3_config, proxy, stall_timeout_seconds=600)
    with open_destination(raw, stop) as dest:
        dest.ensure_location()
        proxy.mode = "blackhole"
        timer = threading.Timer(0.5, stop.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(DestinationError) as info:
            dest.write("2026/11/26/interrupted.bin", Source.from_bytes(os.urandom(BIG)))
        timer.join()
    assert "shutting down" in str(info.value), info.value
    assert time.monotonic() - started < 10


def test_reset_mid_upload_leaves_no_object_and_no_upload(
    proxy: FaultProxy, s3_config: dict[str, Any], s3_admin: Any
) -> None:
    with open_destination(proxied(s3_config, proxy, stall_timeout_seconds=60)) as dest:
        dest.ensure_location()
        proxy.mode, proxy.after_bytes = "reset", 1 * MiB
        with pytest.raises(DestinationError) as info:
            dest.write("2026/11/26/reset.bin", Source.from_bytes(os.urandom(BIG)))
    message = str(info.value)
    assert message.startswith(f"cannot upload {s3_config['bucket_name']}/"), message
    assert "\n" not in message
    bucket = s3_config["bucket_name"]
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert uploads_left(s3_admin, bucket) == [], "the multipart upload was left behind"
