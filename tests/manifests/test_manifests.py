"""Run manifests, ``list``, ``verify`` and ``restore`` against every destination's real server.

Backups are made by the real run pipeline; the commands are the real CLI entry point (in
process, output captured, and once per type as a subprocess). Damage is done through the
destination's own interface (a flipped byte written back, a crafted manifest), exactly as a
faulty disk or a hostile bucket writer could.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from service_backup.cli import main
from service_backup.config import BackupConfig, parse_config
from service_backup.destination import Destination, DestinationContext
from service_backup.errors import DestinationError
from service_backup.hookspecs import hookimpl
from service_backup.manifest import FORMAT, MANIFEST_NAME, Manifest
from service_backup.plugins import load_registry
from service_backup.processes import ProcessManager
from service_backup.results import RunResult
from service_backup.run import run_backup
from service_backup.source import Source
from service_backup.testing import AWKWARD_NAMES
from service_backup.upload import upload_one
from tests.core.cli import run_cli

from .conftest import Backend

TODAY = datetime.date.today()
DAY_PREFIX = TODAY.strftime("%Y/%m/%d")
NAME = "target"


def awkward_tree(root: Path) -> dict[str, bytes]:
    """Spaces, unicode, empty files, dotfiles, nested folders, characters that need quoting."""
    files: dict[str, bytes] = {
        "with space.txt": b"spaced\n",
        "ünïcödé-日本語.txt": "unicode ✓\n".encode(),
        "empty.dat": b"",
        ".dotfile": b"hidden\n",
        ".hidden dir/inner.txt": b"inside a dot folder\n",
        "nested/deeper/still/deep.bin": os.urandom(3 * 1024 * 1024 + 17),
        "nested/empty inside.dat": b"",
    }
    for index, name in enumerate(AWKWARD_NAMES):
        files[f"awkward/{name}"] = f"{index}:{name}\n".encode()
    for relative, data in files.items():
        path = root.joinpath(*relative.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def tree_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


class World:
    """One backend location, its config file and the ways to act on it."""

    def __init__(self, backend: Backend, tmp_path: Path, raw: dict[str, Any] | None = None):
        self.backend = backend
        self.raw = raw if raw is not None else backend.fresh()
        self.source = tmp_path / "source"
        self.source.mkdir(exist_ok=True)
        self.tmp = tmp_path
        self.registry = load_registry(hook_plugins=False)
        self.config_path = tmp_path / "backup.yml"
        self.document = {
            "destinations": [{"type": backend.type, "name": NAME, "config": self.raw}],
            "source_folder": str(self.source),
            "cron_schedule": "@daily",
            "deployment_name": "redis-7",
            "add_deployment_name_to_backup_path": True,
        }
        self.config_path.write_text(yaml.safe_dump(self.document, allow_unicode=True))
        self.prefix = f"redis-7/{DAY_PREFIX}"

    @property
    def config(self) -> BackupConfig:
        return parse_config(json.loads(json.dumps(self.document)), self.registry)

    def backup(self, *plugins: object) -> RunResult:
        registry = load_registry(hook_plugins=False)
        for plugin in plugins:
            registry.register(plugin)
        config = parse_config(json.loads(json.dumps(self.document)), registry)
        return run_backup(config, registry, ProcessManager())

    def destination(self) -> Destination:
        spec = self.config.destinations[0]
        dtype = self.registry.destination_type(spec.type)
        return dtype.factory(spec.config, DestinationContext(NAME))

    def manifest(self) -> Manifest:
        with self.destination() as dest, dest.open_read(f"{self.prefix}/{MANIFEST_NAME}") as s:
            return Manifest.parse(s.read(), "test")

    def put(self, key: str, data: bytes) -> None:
        with self.destination() as dest:
            dest.write(key, Source.from_bytes(data, key))

    def get(self, key: str) -> bytes:
        with self.destination() as dest, dest.open_read(key) as stream:
            return stream.read()

    def stored_keys(self) -> set[str]:
        with self.destination() as dest:
            dest.ensure_location()
            return {o.key for o in dest.list("")}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def world(backend: Backend, tmp_path: Path) -> World:
    return World(backend, tmp_path)


# --------------------------------------------------------------------------- manifest content
def test_manifest_describes_exactly_the_source(world: World) -> None:
    files = awkward_tree(world.source)
    result = world.backup()
    assert result.ok, result.error
    manifest = world.manifest()
    raw = json.loads(world.get(f"{world.prefix}/{MANIFEST_NAME}"))
    assert raw["format"] == FORMAT
    assert list(raw) == [
        "format", "backup_guid", "identifier", "deployment_name", "hostname", "started_at",
        "finished_at", "source_folder", "version", "file_count", "total_size", "files",
    ]  # fmt: skip
    assert raw["backup_guid"] == result.backup_guid
    assert raw["deployment_name"] == "redis-7"
    assert raw["source_folder"] == str(world.source)
    assert raw["file_count"] == len(files)
    assert raw["total_size"] == sum(len(d) for d in files.values())
    assert raw["started_at"].endswith("Z") and raw["finished_at"] >= raw["started_at"]
    assert [f["path"] for f in raw["files"]] == sorted(files), "files not sorted by path"
    expected = {p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()}
    assert {f.path: (f.size, f.sha256) for f in manifest.files} == expected, (
        "the manifest's sizes or sha256 differ from the source files"
    )


# ----------------------------------------------------------------- list, verify, restore
def test_list_verify_and_restore_round_trip(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = awkward_tree(world.source)
    result = world.backup()
    assert result.ok, result.error
    # An older folder without a manifest: what a failed run or the Go release leaves.
    world.put("redis-7/2020/01/02/dump.rdb", b"old, no manifest")
    cfg = str(world.config_path)

    code, out, _ = cli(capsys, "list", cfg, "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "destination": NAME,
            "date": TODAY.isoformat(),
            "state": "complete",
            "files": len(files),
            "size_in_bytes": sum(len(d) for d in files.values()),
            "backup_guid": result.backup_guid,
            "finished_at": world.manifest().finished_at,
        },
        {
            "destination": NAME,
            "date": "2020-01-02",
            "state": "incomplete",
            "files": 1,
            "size_in_bytes": len(b"old, no manifest"),
            "backup_guid": None,
            "finished_at": None,
        },
    ]
    code, out, _ = cli(capsys, "list", cfg)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["DESTINATION", "DATE", "STATE"]
    assert f"{TODAY.isoformat()}  complete" in lines[1] and "2020-01-02  incomplete" in lines[2]
    assert " MiB " in lines[1], "sizes are shown for people (KiB, MiB ...)"

    code, out, _ = cli(capsys, "verify", cfg, "--full", "--json")
    assert code == 0, out
    assert json.loads(out) == [
        {"destination": NAME, "date": TODAY.isoformat(), "ok": True, "problems": []}
    ]
    code, out, _ = cli(capsys, "verify", cfg, "--date", "2020-01-02")
    assert code == 1, "an incomplete run must not verify"
    assert "FAIL" in out and "incomplete" in out

    target = tmp_path / "restored"
    code, out, err = cli(capsys, "restore", cfg, "--to", str(target))
    assert code == 0, out + err
    assert tree_of(target) == files, "the restored tree differs from the source"
    assert "restore:" in err, "no progress lines on stderr"

    code, _, err = cli(capsys, "restore", cfg, "--to", str(target))
    assert code == 2 and "not empty" in err
    (target / "with space.txt").write_bytes(b"changed locally")
    code, out, err = cli(capsys, "restore", cfg, "--to", str(target), "--force")
    assert code == 0, out + err
    assert tree_of(target) == files


def test_cli_subprocess_prints_only_json_on_stdout(world: World) -> None:
    (world.source / "dump.rdb").write_bytes(b"R" * 100)
    assert world.backup().ok
    for command in (["list"], ["verify", "--full"]):
        result = run_cli(*command, str(world.config_path), "--json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)  # the whole of stdout is one JSON document
        assert isinstance(document, list) and len(document) == 1, document


def test_verify_full_catches_a_flipped_byte_and_restore_refuses_the_file(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = awkward_tree(world.source)
    assert world.backup().ok
    victim = "nested/deeper/still/deep.bin"
    key = f"{world.prefix}/{victim}"
    data = bytearray(world.get(key))
    data[len(data) // 2] ^= 0x01  # same size, one bit different
    world.put(key, bytes(data))
    cfg = str(world.config_path)

    code, out, _ = cli(capsys, "verify", cfg)
    assert code == 0, "without --full only presence and sizes are checked: " + out
    code, out, _ = cli(capsys, "verify", cfg, "--full")
    assert code == 1
    assert "FAIL" in out and victim in out and "sha256 mismatch" in out
    code, out, _ = cli(capsys, "verify", cfg, "--full", "--json")
    (verdict,) = json.loads(out)
    assert verdict["ok"] is False
    assert [p for p in verdict["problems"] if victim in p], verdict

    target = tmp_path / "restored"
    code, out, err = cli(capsys, "restore", cfg, "--to", str(target))
    assert code == 1, out + err
    assert victim in out, "the corrupted file is not named"
    restored = tree_of(target)
    assert victim not in restored, "the corrupted file was left under its name"
    assert restored == {p: d for p, d in files.items() if p != victim}
    assert not [p for p in target.rglob("*") if ".service-backup-restore-" in p.name]


def test_missing_object_fails_verify_and_restore(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world.source / "a.txt").write_bytes(b"a")
    (world.source / "b.txt").write_bytes(b"b")
    assert world.backup().ok
    with world.destination() as dest:
        dest.delete(f"{world.prefix}/b.txt")
    code, out, _ = cli(capsys, "verify", str(world.config_path), "--json")
    assert code == 1
    assert json.loads(out)[0]["problems"] == ["b.txt: missing"]
    code, out, _ = cli(capsys, "restore", str(world.config_path), "--to", str(tmp_path / "r"))
    assert code == 1 and "b.txt" in out
    assert tree_of(tmp_path / "r") == {"a.txt": b"a"}


def test_manifest_paths_outside_the_target_restore_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world.source / "ok.txt").write_bytes(b"fine")
    assert world.backup().ok
    manifest = json.loads(world.get(f"{world.prefix}/{MANIFEST_NAME}"))
    payload = b"planted outside"
    digest = hashlib.sha256(payload).hexdigest()
    world.put(f"redis-7/{DAY_PREFIX}/x", payload)  # what ``../x`` would fetch, if joined naively
    manifest["files"] += [
        {"path": "../x", "size": len(payload), "sha256": digest},
        {"path": "sub/../../y", "size": len(payload), "sha256": digest},
        {"path": "/tmp/absolute-x", "size": len(payload), "sha256": digest},
    ]
    world.put(f"{world.prefix}/{MANIFEST_NAME}", json.dumps(manifest).encode())
    holder = tmp_path / "holder"
    target = holder / "restored"
    holder.mkdir()
    code, _, err = cli(capsys, "restore", str(world.config_path), "--to", str(target))
    assert code == 1
    assert "../x" in err and "unsafe" in err
    assert list(holder.iterdir()) == [], "restore wrote something although the manifest is unsafe"
    assert not (tmp_path / "x").exists() and not Path("/tmp/absolute-x").exists()
    code, out, _ = cli(capsys, "verify", str(world.config_path), "--json")
    assert code == 1 and "'../x'" in out


# ------------------------------------------------------------------- same-day re-runs
class FailHalfway:
    """An upload hook that stores the first file, then loses the destination.

    ``tryfirst``: it must run before a plugin's own upload hook (the SCP batching one).
    """

    @hookimpl(tryfirst=True)
    def upload(self, spec: Any, destination: Destination, files: list, run: Any) -> Any:
        upload_one(destination, f"{run.remote_prefix}/{files[0].relative}", files[0])
        raise DestinationError("injected: connection lost half-way")


def test_failed_same_day_rerun_is_never_presented_as_complete(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where renaming is cheap the earlier run survives; elsewhere the folder is incomplete."""
    (world.source / "a.rdb").write_bytes(b"first run a")
    (world.source / "b.rdb").write_bytes(b"first run b")
    first = world.backup()
    assert first.ok
    (world.source / "a.rdb").write_bytes(b"second run a, different")
    failed = world.backup(FailHalfway())
    assert not failed.ok and "half-way" in (failed.error or "")
    with world.destination() as dest:
        stages = dest.can_rename
    assert stages == (world.backend.type in ("local", "scp")), "local and SFTP rename cheaply"
    cfg = str(world.config_path)
    code, out, _ = cli(capsys, "list", cfg, "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert not [k for k in world.stored_keys() if ".service-backup-staging" in k], (
        "the failed run left staged files behind"
    )
    if stages:  # local, SFTP: staged, never promoted; the earlier run is intact
        assert row["state"] == "complete" and row["backup_guid"] == first.backup_guid, row
        assert world.get(f"{world.prefix}/a.rdb") == b"first run a"
        code, out, _ = cli(capsys, "verify", cfg, "--full")
        assert code == 0, out
        code, out, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r"))
        assert code == 0, out + err
        assert tree_of(tmp_path / "r") == {"a.rdb": b"first run a", "b.rdb": b"first run b"}
    else:  # object stores: the earlier manifest was withdrawn before overwriting
        assert world.get(f"{world.prefix}/a.rdb") == b"second run a, different"
        assert row["state"] == "incomplete", "a mix of two runs is presented as complete"
        code, _, _ = cli(capsys, "verify", cfg)
        assert code == 1
        code, _, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r"))
        assert code == 2 and "no complete run" in err
        code, _, err = cli(capsys, "restore", cfg, "--to", str(tmp_path / "r"), "--date",
                           str(TODAY))  # fmt: skip
        assert code == 2 and "incomplete" in err
    # The next good run makes the day complete with the new content.
    second = world.backup()
    assert second.ok
    assert world.manifest().backup_guid == second.backup_guid
    assert world.get(f"{world.prefix}/a.rdb") == b"second run a, different"
    assert not [k for k in world.stored_keys() if ".service-backup-staging" in k]
    code, out, _ = cli(capsys, "verify", cfg, "--full", "--json")
    assert code == 0, out


def test_source_file_with_the_manifest_name_fails_before_upload(world: World) -> None:
    (world.source / "dump.rdb").write_bytes(b"data")
    (world.source / MANIFEST_NAME).write_bytes(b"{}")
    result = world.backup()
    assert not result.ok
    assert MANIFEST_NAME in (result.error or ""), result.error
    assert not [k for k in world.stored_keys() if k.startswith("redis-7/")], (
        "something was uploaded"
    )
