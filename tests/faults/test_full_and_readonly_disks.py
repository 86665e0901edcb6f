"""Disks that refuse writes, on real size-limited tmpfs mounts made by the test (needs root).

A full destination and a read-only lock folder each end the run with its JSON error line
naming the reason, an alert, and nothing half-written left under a final name.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_backup.destination import DestinationContext
from service_backup.errors import DestinationError
from service_backup.source import Source, SourceFile
from service_backup_plugins.local.config import LocalConfig
from service_backup_plugins.local.destination import LocalDestination
from tests.alerts import cf_server
from tests.alerts.cf_server import CfServer
from tests.alerts.conftest import alerts_section

from .helpers import local_config, run_cli, write_config


def _mount(parent: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = Path(tempfile.mkdtemp(prefix="tmpfs-", dir=parent))  # a private parent, not /tmp
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "faults", str(point)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        point.rmdir()
        pytest.fail(f"cannot mount a tmpfs ({options}): {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path, "size=1m,mode=0700")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path, "ro,size=1m,mode=0700")


@pytest.fixture
def cf() -> Iterator[CfServer]:
    with cf_server.cf_server() as server:
        yield server


def test_full_destination_disk(tmp_path: Path, small_disk: Path, cf: CfServer) -> None:
    data = local_config(tmp_path, alerts=alerts_section(cf, timeout_seconds=10))
    data["destinations"][0]["config"]["path"] = str(small_disk / "backups")
    (Path(data["source_folder"]) / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    result = run_cli("backup", str(write_config(tmp_path / "full.yml", data)))
    assert result.returncode == 1
    [line] = result.find("Upload backup completed with error")
    assert "No space left on device" in line["data"]["error"], line
    assert len(cf.notifications()) == 1, "the failed run sent one alert"
    left = [p.name for p in small_disk.rglob("*") if p.is_file()]
    assert "big.bin" not in left, "no torn copy under the final name"
    assert not [n for n in left if n.startswith(".service-backup-partial-")], left


def test_read_only_lock_folder(tmp_path: Path, read_only_disk: Path, cf: CfServer) -> None:
    data = local_config(tmp_path, exit_if_in_progress=True, alerts=alerts_section(cf))
    env = {"SERVICE_BACKUP_LOCK_DIR": str(read_only_disk)}
    result = run_cli("backup", str(write_config(tmp_path / "ro.yml", data)), env=env)
    assert result.returncode == 1
    [line] = result.find("Perform backup completed with error")
    assert line["data"]["error"].startswith(f"lock file {read_only_disk}/service-backup-")
    assert line["data"]["error"].endswith("cannot be opened: Read-only file system")
    assert "Traceback" not in result.stderr
    assert len(cf.notifications()) == 1
    assert not (tmp_path / "dest").exists(), "no upload without the lock"


@pytest.fixture
def shared_small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path, "size=4m,mode=0700")


def test_disk_filling_up_during_a_kernel_copy(
    shared_small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source and destination on one small tmpfs: ``copy_file_range`` itself hits ENOSPC."""
    disk = shared_small_disk
    source_path = disk / "dump.rdb"
    source_path.write_bytes(os.urandom(3 * 1024 * 1024))
    st = source_path.stat()
    file = SourceFile(source_path, "dump.rdb", st.st_size, st.st_mtime_ns)
    calls: list[int] = []
    real = os.copy_file_range

    def counting(*args: int) -> int:
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", counting)
    destination = LocalDestination(
        LocalConfig(path=str(disk / "backups")), DestinationContext("local")
    )
    source = Source.from_file(file)
    with pytest.raises(DestinationError, match="No space left on device") as failure:
        destination.write("run/dump.rdb", source)
    source.close()
    assert calls, "the copy did not go through copy_file_range"
    assert "dump.rdb" in str(failure.value), f"the file is not named: {failure.value}"
    left = [p.name for p in (disk / "backups").rglob("*") if p.is_file()]
    assert left == [], f"a failed kernel copy left {left}"
