"""The commands' rules that do not depend on the destination type (local and moto S3 here).

Memory while restoring a large file, the choice of destination and run, arguments, an upload
hook that leaves a file out, the seed's IAM policy (no GetObject, no DeleteObject) on a
same-day re-run, and a destination that cannot be listed beside one that can.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from service_backup.hookspecs import hookimpl
from service_backup.manifest import MANIFEST_NAME
from service_backup.results import StoredFile
from service_backup.source import Source
from service_backup.testing import MiB, rss_peak
from service_backup.testing.suite import _write_random_file
from service_backup.upload import upload_one, upload_result
from service_backup_plugins.local.destination import LocalDestination
from tests.s3.conftest import new_bucket_name
from tests.s3.test_s3 import seed_policy, user_config

from .conftest import Backend
from .test_manifests import NAME, TODAY, FailHalfway, World, cli, tree_of

RESTORE_SIZE = 320 * MiB
MAX_RESTORE_GROWTH = 48 * MiB


@pytest.fixture
def local(tmp_path: Path) -> World:
    return World(Backend("local", lambda: {"path": str(tmp_path / "dest")}), tmp_path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_restore_of_a_large_file_keeps_memory_bounded(
    local: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert MAX_RESTORE_GROWTH < RESTORE_SIZE / 4, "a restore that slurps must not pass"
    big = local.source / "dump.rdb"
    _write_random_file(big, RESTORE_SIZE)
    expected = sha256_file(big)
    assert local.backup().ok
    big.unlink()  # not needed any more: keep the disk footprint down
    target = tmp_path / "restored"
    with rss_peak() as peak:
        code, out, err = cli(capsys, "restore", str(local.config_path), "--to", str(target))
    assert code == 0, out + err
    assert sha256_file(target / "dump.rdb") == expected
    assert peak.growth <= MAX_RESTORE_GROWTH, (
        f"RSS grew by {peak.growth / MiB:.1f} MiB restoring a {RESTORE_SIZE // MiB} MiB file "
        f"(allowed {MAX_RESTORE_GROWTH // MiB} MiB)"
    )


class LosesAFile:
    """An upload hook that takes over and reports every file but the last."""

    @hookimpl(tryfirst=True)
    def upload(self, spec: Any, destination: Any, files: list, run: Any) -> Any:
        stored: list[StoredFile] = [
            upload_one(destination, f"{run.remote_prefix}/{f.relative}", f) for f in files
        ]
        return upload_result(spec, stored[:-1], 0.0)


def test_hook_without_a_stored_entry_fails_the_destination_without_manifest(
    local: World,
) -> None:
    (local.source / "a.txt").write_bytes(b"a")
    (local.source / "z.txt").write_bytes(b"z")
    result = local.backup(LosesAFile())
    assert not result.ok
    assert "z.txt" in (result.error or "") and NAME in (result.error or "")
    assert f"{local.prefix}/{MANIFEST_NAME}" not in local.stored_keys()


def test_restore_picks_the_first_destination_with_a_complete_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(Backend("local", lambda: {"path": str(tmp_path / "second")}), tmp_path)
    (world.source / "f.txt").write_bytes(b"from the second")
    assert world.backup().ok
    first = {"type": "local", "name": "empty-first", "config": {"path": str(tmp_path / "e")}}
    world.document["destinations"].insert(0, first)
    world.config_path.write_text(json.dumps(world.document))
    cfg = str(world.config_path)
    code, out, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r1"))
    assert code == 0, out + err
    assert NAME in out and tree_of(tmp_path / "r1") == {"f.txt": b"from the second"}
    code, _, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r2"), "--destination",
                       "empty-first")  # fmt: skip
    assert code == 2 and "no complete run" in err
    code, out, _ = cli(capsys, "verify", cfg, "--json")
    assert code == 1, "a destination without any complete run is a problem"
    assert {v["destination"]: v["problems"] for v in json.loads(out)} == {
        "empty-first": ["no complete run"],
        NAME: [],
    }


def test_bad_arguments_exit_2(
    local: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(local.config_path)
    code, _, err = cli(capsys, "list", cfg, "--destination", "nope")
    assert code == 2 and "'nope'" in err and NAME in err
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        cli(capsys, "verify", cfg, "--date", "2026-13-45")
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli(capsys, "restore", cfg)  # --to is required
    assert exited.value.code == 2
    (tmp_path / "a-file").write_text("x")
    assert cli(capsys, "restore", cfg, "--to", str(tmp_path / "a-file"))[0] == 2
    broken = tmp_path / "broken.yml"
    broken.write_text("destinations: notalist\n")
    assert cli(capsys, "list", str(broken))[0] == 2


def test_verify_all_checks_every_complete_run(
    local: World, capsys: pytest.CaptureFixture[str]
) -> None:
    (local.source / "f.txt").write_bytes(b"today")
    assert local.backup().ok
    # Copy today's run to an older date through the destination: two complete runs.
    older = "redis-7/2021/03/04"
    local.put(f"{older}/f.txt", b"today")
    local.put(f"{older}/{MANIFEST_NAME}", local.get(f"{local.prefix}/{MANIFEST_NAME}"))
    local.put(f"{older}/f.txt", b"TODAY")  # same size, other bytes
    code, out, _ = cli(capsys, "verify", str(local.config_path), "--all", "--full", "--json")
    assert code == 1
    verdicts = {v["date"]: v for v in json.loads(out)}
    assert verdicts[TODAY.isoformat()]["ok"] is True
    assert verdicts["2021-03-04"]["ok"] is False
    assert "f.txt: sha256 mismatch" in verdicts["2021-03-04"]["problems"][0]
    code, out, _ = cli(capsys, "verify", str(local.config_path), "--full")
    assert code == 0, "the default checks only the newest complete run: " + out


def test_restore_never_follows_a_symlink_inside_the_target(
    local: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (local.source / "sub").mkdir()
    (local.source / "sub" / "passwd").write_bytes(b"restored content")
    (local.source / "top.txt").write_bytes(b"top")
    assert local.backup().ok
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "restored"
    target.mkdir()
    (target / "sub").symlink_to(outside)
    code, out, _ = cli(capsys, "restore", str(local.config_path), "--to", str(target), "--force")
    assert code == 1 and "sub/passwd" in out and "symlink" in out
    assert list(outside.iterdir()) == [], "restore wrote through a symlink out of the target"
    assert (target / "top.txt").read_bytes() == b"top"


# ----------------------------------------------------------------------------- S3 specifics
def test_seed_iam_policy_rerun_replaces_the_manifest_it_may_not_delete(
    moto: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's policy has no GetObject/DeleteObject: the earlier manifest is overwritten."""
    backend = Backend("s3", lambda: {}, moto)
    admin_raw = {
        "bucket_name": new_bucket_name(),
        "bucket_path": "backups",
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        "endpoint_url": moto.endpoint,
    }
    seed_raw = user_config(moto, admin_raw, seed_policy(admin_raw["bucket_name"]))
    world = World(backend, tmp_path, raw=seed_raw)
    (world.source / "a.rdb").write_bytes(b"first a")
    (world.source / "b.rdb").write_bytes(b"first b")
    assert world.backup().ok, "a run with the seed's policy must succeed"
    (world.source / "a.rdb").write_bytes(b"second a!")
    failed = world.backup(FailHalfway())
    assert not failed.ok
    (tmp_path / "admin").mkdir()
    admin = World(backend, tmp_path / "admin", raw=admin_raw)
    code, out, err = cli(capsys, "list", str(admin.config_path), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["state"] == "incomplete", "a mix of two runs is presented as complete"
    assert "has not completed" in cli(capsys, "list", str(admin.config_path))[2]
    assert world.backup().ok, "the next run with the seed's policy makes the day complete"
    code, out, _ = cli(capsys, "verify", str(admin.config_path), "--full", "--json")
    assert code == 0, out


def test_list_reports_every_listable_destination_and_exits_1_for_the_other(
    moto: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(Backend("local", lambda: {"path": str(tmp_path / "dest")}), tmp_path)
    (world.source / "f.txt").write_bytes(b"x")
    assert world.backup().ok
    refused = {
        "bucket_name": "sb-refused-bucket",
        "bucket_path": "backups",
        "access_key_id": moto.access_key_id,
        "secret_access_key": "wrong-secret-for-the-listing-test",
        "endpoint_url": moto.endpoint,
    }
    world.document["destinations"].append({"type": "s3", "name": "refused", "config": refused})
    world.config_path.write_text(json.dumps(world.document))
    code, out, err = cli(capsys, "list", str(world.config_path), "--json")
    assert code == 1, err
    assert [r["destination"] for r in json.loads(out)] == [NAME]
    assert "refused" in err and "wrong-secret-for-the-listing-test" not in err + out


def test_a_manifest_that_does_not_parse_makes_the_folder_incomplete(
    local: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (local.source / "f.txt").write_bytes(b"data")
    assert local.backup().ok
    local.put(f"{local.prefix}/{MANIFEST_NAME}", b'{"format": "service-backup/manifest/v1", "fi')
    cfg = str(local.config_path)
    code, out, err = cli(capsys, "list", cfg, "--json")
    assert code == 0
    assert [(r["state"], r["files"], r["backup_guid"]) for r in json.loads(out)] == [
        ("incomplete", 1, None)
    ]
    code, out, err = cli(capsys, "list", cfg)
    assert "incomplete" in out and "cannot be read" in err, err
    code, out, _ = cli(capsys, "verify", cfg, "--date", TODAY.isoformat(), "--json")
    assert code == 1 and "cannot be read" in json.loads(out)[0]["problems"][0]
    code, _, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r"), "--date",
                       TODAY.isoformat())  # fmt: skip
    assert code == 2 and "incomplete" in err
    assert not (tmp_path / "r").exists()


def test_local_restore_copies_small_files_in_the_calling_thread_and_large_ones_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files up to the destination's ``serial_file_size`` are restored one after another in
    the thread that called ``restore`` (no GIL hand-offs per small file); larger ones by
    worker threads meanwhile. Both kinds are checked: a damaged small and a damaged large
    file are reported and neither is left under its name."""
    from service_backup.commands.restore import Restorer
    from service_backup.destination import DestinationContext
    from service_backup.source import Source
    from service_backup_plugins.local.config import LocalConfig

    dest = LocalDestination(LocalConfig(path=str(tmp_path / "dest")), DestinationContext("t"))
    serial = dest.serial_file_size
    assert serial > 0, "the local destination no longer asks for small files in one thread"
    sizes = {f"s/{n:02d}": 1000 + n for n in range(12)}
    sizes |= {f"l/{n}": serial + 1 + n for n in range(3)} | {"s/edge": serial}
    data = {path: os.urandom(size) for path, size in sizes.items()}
    for path, content in data.items():
        dest.write(f"2026/01/02/{path}", Source.from_bytes(content, path))
    for bad in ("s/03", "l/1"):  # same size, other bytes: only the sha256 can tell
        (tmp_path / "dest/2026/01/02" / bad).write_bytes(os.urandom(sizes[bad]))
    entries = tuple(
        StoredFile(path, len(content), hashlib.sha256(content).hexdigest())
        for path, content in sorted(data.items())
    )
    opened_by: dict[str, str] = {}
    real_open = LocalDestination.open_read

    def recording_open(self: LocalDestination, key: str) -> Any:
        opened_by[key.removeprefix("2026/01/02/")] = threading.current_thread().name
        return real_open(self, key)

    monkeypatch.setattr(LocalDestination, "open_read", recording_open)
    target = tmp_path / "restored"
    target.mkdir()
    problems = Restorer(dest, "2026/01/02", target, None).restore(entries)

    caller = threading.current_thread().name
    small = {p: t for p, t in opened_by.items() if sizes[p] <= serial}
    large = {p: t for p, t in opened_by.items() if sizes[p] > serial}
    assert set(opened_by) == set(sizes), f"not every file was read: {sorted(opened_by)}"
    assert set(small.values()) == {caller}, f"small files read by other threads: {small}"
    assert caller not in large.values(), f"a large file was read in the calling thread: {large}"
    assert [p.split(":")[0] for p in problems] == ["l/1", "s/03"], problems
    assert all("sha256 mismatch" in p for p in problems), problems
    restored = {
        str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()
    }
    assert restored == {p: c for p, c in data.items() if p not in ("s/03", "l/1")}, (
        "the restored tree is not the intact files, byte for byte"
    )


def test_a_failed_flush_of_the_target_fails_the_restore(
    local: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``syncfs`` at the end is the restore's durability: when it reports a write-back
    error the restore says FAIL (exit 1) naming the target, never ``ok``."""
    from service_backup import file_sync

    from .test_restore_copy import recording_syncfs

    if not file_sync.has_syncfs():
        pytest.skip("libc without syncfs: the fallback's sync reports nothing")
    (local.source / "a.txt").write_bytes(b"some bytes")
    assert local.backup().ok
    calls = recording_syncfs(monkeypatch, fail={1: errno.EIO})
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "restore", str(local.config_path), "--to", str(target))
    assert code == 1, f"a failed flush exited {code}: {out + err}"
    assert [what for _, what, _ in calls] == [str(target)], f"expected one flush: {calls}"
    assert f"FAIL {target}: not flushed to disk (Input/output error)" in out, out
    assert "ok restored" not in out, f"reported ok although the flush failed: {out}"


def test_restore_skips_a_newer_incomplete_run_and_names_a_missing_object(
    local: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is chosen from the names (``list_keys``): still the newest *complete* one."""
    (local.source / "a.txt").write_bytes(b"a")
    (local.source / "b.txt").write_bytes(b"b")
    assert local.backup().ok
    earlier = TODAY - datetime.timedelta(days=3)
    with local.destination() as dest:
        for key in [o.key for o in dest.list(f"{local.prefix}/")]:
            with dest.open_read(key) as stream:
                data = stream.read()
            moved = key.replace(local.prefix, f"redis-7/{earlier:%Y/%m/%d}")
            dest.write(moved, Source.from_bytes(data, moved))
        dest.delete(f"{local.prefix}/{MANIFEST_NAME}")  # today's run: incomplete
        dest.delete(f"redis-7/{earlier:%Y/%m/%d}/b.txt")
    cfg = str(local.config_path)
    code, out, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r"))
    assert code == 1, f"a missing object must fail the restore: {out} {err}"
    assert f"of {earlier} from" in err, f"the older complete run must be restored: {err}"
    assert "FAIL b.txt: missing at the destination" in out, out
    assert tree_of(tmp_path / "r") == {"a.txt": b"a"}
    code, _, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r2"), "--date",
                       TODAY.isoformat())  # fmt: skip
    assert code == 2 and f"the run of {TODAY} is incomplete (no manifest)" in err, err
    assert not (tmp_path / "r2").exists(), "nothing may be written for an incomplete run"
