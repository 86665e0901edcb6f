"""``promote_by_copy`` on S3, Azure and GCS, each against its real server.

With the option on, a same-day re-run is staged under ``.service-backup-staging/<guid>/`` and
promoted by server-side copy once every file arrived. A re-run that fails while uploading
leaves the day's earlier complete run intact and listed as complete; a successful one replaces
it; neither leaves staged objects behind. Without the option the earlier manifest is withdrawn
first (``test_manifests.test_failed_same_day_rerun_is_never_presented_as_complete``).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest

from service_backup import commit
from service_backup.destination import Destination
from service_backup.hookspecs import hookimpl
from service_backup.source import Source
from tests.faultproxy import fault_proxy

from .conftest import _MAKERS, Backend
from .test_manifests import TODAY, World, cli, tree_of

OBJECT_STORES = ("s3", "azure", "gcs")
STAGING = ".service-backup-staging"
#: Above every plugin's single-request size (S3 8 MiB multipart, Azure 4 MiB blocks, GCS
#: 2 MiB resumable): the promotion of the big path is exercised too (S3: UploadPartCopy).
BIG = 9 * 1024 * 1024 + 5


@pytest.fixture(params=OBJECT_STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _MAKERS[request.param](request, tmp_path)


def world_with(store: Backend, tmp_path: Path, **extra: Any) -> World:
    return World(store, tmp_path, {**store.fresh(), **extra})


def staged(world: World) -> list[str]:
    return sorted(k for k in world.stored_keys() if STAGING in k)


class GrowDuringUpload:
    """Appends to ``name`` once the run listed it, just before the upload: a dump still being
    written. The core's Source then fails that file's upload ("grew") half-way through the
    run, after other files may already be staged."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl(tryfirst=True)
    def upload(self, spec: Any, destination: Destination, files: list, run: Any) -> Any:
        with self.path.open("ab") as stream:
            stream.write(b"more bytes written while the backup runs")
        return None  # the core's own upload hook does the work


def test_option_makes_object_stores_stage(store: Backend, tmp_path: Path) -> None:
    plain = world_with(store, tmp_path)
    with plain.destination() as dest:
        assert dest.can_rename is False, f"{store.type}: staging must be opt-in"
    opted = world_with(store, tmp_path, promote_by_copy=True)
    with opted.destination() as dest:
        assert dest.can_rename is True, f"{store.type}: promote_by_copy is not honoured"


def test_failed_rerun_leaves_the_earlier_run_intact_then_a_good_one_replaces_it(
    store: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = world_with(store, tmp_path, promote_by_copy=True)
    big = os.urandom(BIG)
    (world.source / "a.rdb").write_bytes(b"first run a")
    (world.source / "big.rdb").write_bytes(big)
    (world.source / "z.aof").write_bytes(b"first run z")
    first = world.backup()
    assert first.ok, first.error

    (world.source / "a.rdb").write_bytes(b"second run a, different")
    (world.source / "big.rdb").write_bytes(big[::-1])
    failed = world.backup(GrowDuringUpload(world.source / "z.aof"))
    assert not failed.ok and "z.aof" in (failed.error or ""), failed.error

    cfg = str(world.config_path)
    code, out, _ = cli(capsys, "list", cfg, "--json")
    assert code == 0, out
    (row,) = json.loads(out)
    assert row["state"] == "complete" and row["backup_guid"] == first.backup_guid, (
        f"{store.type}: the failed re-run did not leave the earlier complete run: {row}"
    )
    assert world.get(f"{world.prefix}/a.rdb") == b"first run a", "earlier file overwritten"
    assert world.get(f"{world.prefix}/big.rdb") == big, "earlier big file overwritten"
    assert staged(world) == [], "the failed run left staged objects behind"
    code, out, err = cli(capsys, "verify", cfg, "--full")
    assert code == 0, out + err
    code, out, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r1"))
    assert code == 0, out + err
    assert tree_of(tmp_path / "r1") == {
        "a.rdb": b"first run a",
        "big.rdb": big,
        "z.aof": b"first run z",
    }

    (world.source / "z.aof").write_bytes(b"second run z")
    second = world.backup()
    assert second.ok, second.error
    assert world.manifest().backup_guid == second.backup_guid
    assert world.get(f"{world.prefix}/big.rdb") == big[::-1], "the promoted copy differs"
    assert staged(world) == [], "the promotion left staged objects behind"
    keys = {k for k in world.stored_keys() if k.startswith(world.prefix)}
    assert keys == {f"{world.prefix}/{n}" for n in ("a.rdb", "big.rdb", "z.aof")} | {
        f"{world.prefix}/.service-backup-manifest.json"
    }, keys
    code, out, err = cli(capsys, "verify", cfg, "--full")
    assert code == 0, out + err
    code, out, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r2"), "--date",
                         str(TODAY))  # fmt: skip
    assert code == 0, out + err
    assert tree_of(tmp_path / "r2")["a.rdb"] == b"second run a, different"


@pytest.fixture(params=[*OBJECT_STORES, "local"])
def stager(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    """A destination that stages same-day re-runs: an object store opted in, or local."""
    backend = _MAKERS[request.param](request, tmp_path)
    extra = {} if request.param == "local" else {"promote_by_copy": True}
    return world_with(backend, tmp_path, **extra)


def test_stale_staged_objects_of_a_killed_run_are_swept(
    stager: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed run left under the staging folder goes when a later re-run stages.

    The stores' modification times cannot be set back, so the age bound is set to zero: the
    sweep itself (listing, times, deletes through the real server) is what is tested.
    """
    world = stager
    leftover = f"redis-7/{STAGING}/0b6a-killed-run/dump.rdb"
    outside = "redis-7/not-staging/keep.me"
    with world.destination() as dest:
        dest.ensure_location()
        dest.write(leftover, Source.from_bytes(b"left by a SIGKILLed run", "leftover"))
        dest.write(outside, Source.from_bytes(b"not ours to sweep", "outside"))
    monkeypatch.setattr(commit, "STALE_STAGING", datetime.timedelta(0))
    (world.source / "a.rdb").write_bytes(b"a")
    assert world.backup().ok
    assert leftover in staged(world), "swept by a run that does not stage (costs a listing)"
    assert world.backup().ok  # a same-day re-run: staged, and sweeps first
    assert staged(world) == [], "the killed run's staged object was not swept"
    assert world.get(outside) == b"not ours to sweep"


def test_a_young_staged_object_is_left_alone(store: Backend, tmp_path: Path) -> None:
    """Another VM's run in progress stages young objects: the sweep must not take them."""
    world = world_with(store, tmp_path, promote_by_copy=True)
    other = f"redis-7/{STAGING}/other-vm-run/dump.rdb"
    with world.destination() as dest:
        dest.ensure_location()
        dest.write(other, Source.from_bytes(b"in progress elsewhere", "other"))
    (world.source / "a.rdb").write_bytes(b"a")
    assert world.backup().ok
    assert world.backup().ok  # a same-day re-run: staged, and sweeps first
    assert staged(world) == [other]


def test_azure_promotes_with_a_container_sas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With a SAS token Azure authorizes the copy's source by its URL: the SAS goes along.
    (That it appears in no log line is the suite-wide secret check's.)"""
    keyed = _MAKERS["azure"](request, tmp_path)
    raw = keyed.fresh()
    with World(keyed, tmp_path, raw).destination() as dest:
        dest.ensure_location()  # a container SAS cannot create its container
    sas = keyed.server.container_sas_url(raw["container"]).partition("?")[2]
    sas_raw = {k: v for k, v in raw.items() if k != "storage_access_key"}
    world = World(keyed, tmp_path, {**sas_raw, "sas_token": sas, "promote_by_copy": True})
    (world.source / "a.rdb").write_bytes(b"first")
    assert world.backup().ok
    (world.source / "a.rdb").write_bytes(b"second, promoted by copy")
    second = world.backup()
    assert second.ok, second.error
    assert world.get(f"{world.prefix}/a.rdb") == b"second, promoted by copy"
    assert world.manifest().backup_guid == second.backup_guid
    assert staged(world) == []


def test_s3_rerun_cut_by_connection_resets_keeps_the_earlier_run(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-run whose uploads are reset mid-request (fault proxy in front of moto) fails and
    leaves the day's earlier complete run intact and nothing staged; once the network heals,
    the next re-run replaces it."""
    s3 = _MAKERS["s3"](request, tmp_path)
    port = int(s3.server.endpoint.rsplit(":", 1)[1])
    with fault_proxy(port) as proxy:
        raw = {**s3.fresh(), "endpoint_url": f"http://127.0.0.1:{proxy.port}",
               "promote_by_copy": True}  # fmt: skip
        world = World(s3, tmp_path, raw)
        big = os.urandom(BIG)
        (world.source / "a.rdb").write_bytes(b"first run a")
        (world.source / "big.rdb").write_bytes(big)
        first = world.backup()
        assert first.ok, first.error
        (world.source / "big.rdb").write_bytes(big[::-1])
        proxy.after_bytes = 256 * 1024
        proxy.mode = "reset"
        failed = world.backup()
        assert not failed.ok, "the re-run succeeded through a resetting connection"
        assert "cannot upload" in (failed.error or "") and STAGING in (failed.error or ""), (
            f"not failed by the reset while staging: {failed.error}"
        )
        proxy.mode = "pass"
        code, out, _ = cli(capsys, "list", str(world.config_path), "--json")
        assert code == 0, out
        (row,) = json.loads(out)
        assert row["state"] == "complete" and row["backup_guid"] == first.backup_guid, row
        assert world.get(f"{world.prefix}/big.rdb") == big, "the earlier big file was replaced"
        assert staged(world) == [], "the reset re-run left staged objects behind"
        second = world.backup()
        assert second.ok, second.error
        assert world.get(f"{world.prefix}/big.rdb") == big[::-1]
        assert world.manifest().backup_guid == second.backup_guid
