"""What a restore from S3 asks of the store: one GetObject per file, nothing more.

A restore of many small files is bound by requests: on moto every request costs the server
about 3 ms and the client about 1.5 ms of CPU, so one extra request per file (a HeadObject
before each GET, a second GET to find the end) would cost a third of the restore, and a
listing of every object kept (every run's) before the first GET would cost more than the
files of the run itself once retention keeps a few runs. The store's own access log (moto's,
one line per request) is the count: it sees what any client layer (botocore, urllib3, our
wrappers) really sent.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any

from service_backup.source import Source
from service_backup_s3.destination import PART_CONCURRENCY
from tests.core.cli import run_cli, single_destination_config

from .server import MotoServer
from .test_s3 import open_destination

FILES = 40
#: One access-log line of moto's werkzeug server: method and path (query included).
REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3})')


def requests_since(log_file: str, offset: int, bucket: str) -> list[tuple[str, str, str]]:
    """(method, kind, status) of every request to ``bucket`` logged after ``offset``."""
    with open(log_file, "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    seen = []
    for match in REQUEST.finditer(text):
        path = match["path"]
        if not (path == f"/{bucket}" or path.startswith((f"/{bucket}/", f"/{bucket}?"))):
            continue
        kind = "object"
        if "list-type=2" in path:
            kind = "folders" if "delimiter=" in path else "list"
        seen.append((match["method"], kind, match["status"]))
    return seen


def test_restore_sends_one_get_per_file(
    moto: MotoServer, s3_config: dict[str, Any], tmp_path: Path
) -> None:
    bucket = s3_config["bucket_name"]
    source = tmp_path / "source"
    files = {f"d{i % 4}/f{i:02d}.bin": os.urandom(1024 + i) for i in range(FILES)}
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    config = single_destination_config(tmp_path / "backup.yml", source, "s3", "s3", s3_config)
    backup = run_cli("backup", str(config))
    assert backup.returncode == 0, f"the backup to restore failed: {backup.stderr[-2000:]}"

    offset = os.path.getsize(moto.log_file)
    target = tmp_path / "restored"
    restore = run_cli("restore", str(config), "--to", str(target))
    assert restore.returncode == 0, f"restore failed: {restore.stdout}{restore.stderr[-2000:]}"
    for name, data in files.items():
        assert (target / name).read_bytes() == data, f"{name} restored differs"

    seen = requests_since(moto.log_file, offset, bucket)
    counts = collections.Counter((method, kind) for method, kind, _ in seen)
    # The files and the run's manifest: one GET each, no HEAD, no second GET.
    assert counts[("GET", "object")] == FILES + 1, (
        f"{counts[('GET', 'object')]} object GETs for {FILES} files and a manifest: {counts}"
    )
    assert not counts[("HEAD", "object")], f"HEAD requests during a restore: {counts}"
    # The run is found folder by folder (``list_folders``: the deployment's years, the
    # year's months, the month's days), one delimiter listing each, whatever the runs hold;
    # the run's own keys are never listed: its manifest names them.
    assert counts[("GET", "folders")] == 3, f"expected 3 folder listings: {counts}"
    assert not counts[("GET", "list")], f"a restore listed objects: {counts}"
    assert set(counts) <= {("GET", "object"), ("GET", "folders")}, f"unexpected requests: {counts}"
    assert all(status == "200" for *_, status in seen), f"failed requests: {seen}"


def test_connection_pool_holds_every_thread_of_a_restore(s3_config: dict[str, Any]) -> None:
    """A pool smaller than the threads reading at once discards a connection per request
    ("Connection pool is full") and opens a new one for the next: every restore thread, and
    every part in flight of a big file, must have a connection of its own to give back."""
    with open_destination(s3_config) as dest:
        pool = dest.client.meta.config.max_pool_connections
        wanted = dest.file_concurrency + PART_CONCURRENCY
        assert pool >= wanted, f"pool of {pool} connections for {wanted} requests at once"


def test_every_request_names_the_plugin_in_one_fixed_user_agent(s3_config: dict[str, Any]) -> None:
    """The header goes out as given (``user_agent``), not rebuilt by botocore per request.

    botocore's rebuilt header starts with ``Boto3/`` and lists SDK features (``m/...``); ours
    names the plugin and its version, for the store's access logs, and costs nothing per
    request.
    """
    version = importlib.metadata.version("service-backup-s3")
    sent: list[tuple[str, str]] = []
    with open_destination(s3_config) as dest:

        def record(request: Any, event_name: str, **_: Any) -> None:
            agent = request.headers["User-Agent"]
            sent.append((event_name, agent.decode() if isinstance(agent, bytes) else agent))

        dest.client.meta.events.register("before-send.s3", record)
        dest.ensure_location()
        dest.write("2026/12/01/a.bin", Source.from_bytes(b"restored", "a.bin"))
        assert [o.key for o in dest.list("2026/")] == ["2026/12/01/a.bin"]
        with dest.open_read("2026/12/01/a.bin") as stream:
            assert stream.read() == b"restored", "the object read back differs"
    operations = {event.rsplit(".", 1)[-1] for event, _ in sent}
    assert {"ListObjectsV2", "PutObject", "GetObject"} <= operations, f"requests: {operations}"
    agents = {agent for _, agent in sent}
    assert len(agents) == 1, f"the User-Agent changed between requests: {agents}"
    (agent,) = agents
    assert agent.startswith(f"service-backup-s3/{version} Boto3/"), f"User-Agent {agent!r}"
    assert "Botocore/" in agent and " m/" not in agent, f"botocore rebuilt it: {agent!r}"
