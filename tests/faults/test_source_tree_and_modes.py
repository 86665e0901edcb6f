"""Hostile source trees and stored permissions (issue items 10, 11, 15), through the CLI."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from service_backup.manifest import MANIFEST_NAME

from .helpers import local_config, run_cli, write_config


def stored_files(dest: Path) -> dict[str, Path]:
    """Relative path below the dated folder -> stored file (the run manifest left out)."""
    [dated] = list(dest.glob("*/*/*"))
    return {
        p.relative_to(dated).as_posix(): p
        for p in dated.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }


def test_links_leaving_the_source_and_special_files_are_skipped_and_named(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    source = Path(data["source_folder"])
    outside = tmp_path / "shadow"
    outside.write_text("root:$6$secret-hash")
    (source / "inside.txt").write_text("inside")
    (source / "escape").symlink_to(outside)
    (source / "escape-relative").symlink_to("../shadow")
    (source / "alias.txt").symlink_to("inside.txt")  # inside: followed
    (source / "dangling").symlink_to("missing-inside.txt")
    os.mkfifo(source / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "sock"))
    try:
        result = run_cli("backup", str(write_config(tmp_path / "b.yml", data)))
    finally:
        server.close()
    assert result.returncode == 0, result.stdout + result.stderr
    stored = stored_files(tmp_path / "dest")
    assert sorted(stored) == ["alias.txt", "data.txt", "inside.txt"]
    assert stored["alias.txt"].read_text() == "inside"
    assert "secret-hash" not in "".join(p.read_text() for p in stored.values())

    skipped = {
        Path(line["data"]["path"]).name: line
        for line in result.lines
        if line["message"].startswith("ServiceBackup.Skipped")
    }
    assert set(skipped) == {"escape", "escape-relative", "dangling", "pipe", "sock"}
    escape = skipped["escape"]
    assert escape["message"].endswith("Skipped a symbolic link that points outside source_folder")
    assert escape["data"]["target"] == str(outside)
    assert skipped["escape-relative"]["data"]["target"] == "../shadow"
    assert skipped["dangling"]["message"].endswith("Skipped a dangling symbolic link")
    assert skipped["pipe"]["data"]["reason"] == "FIFO"
    assert skipped["sock"]["data"]["reason"] == "socket"
    assert all(line["data"]["backup_guid"] for line in skipped.values())


def test_empty_source_folder_logs_a_warning(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    (Path(data["source_folder"]) / "data.txt").unlink()
    result = run_cli("backup", str(write_config(tmp_path / "e.yml", data)))
    assert result.returncode == 0
    [warning] = [m for m in result.messages() if "source_folder is empty" in m]
    assert "did the prepare command produce nothing?" in warning


def test_stored_copies_are_private_by_default(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    source = Path(data["source_folder"])
    (source / "sub").mkdir()
    (source / "sub" / "dump.rdb").write_text("dump")
    os.chmod(source / "sub" / "dump.rdb", 0o600)
    old_umask = os.umask(0o022)
    try:
        result = run_cli("backup", str(write_config(tmp_path / "p.yml", data)))
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stdout
    dest = tmp_path / "dest"
    for path in [dest, *dest.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path} is {oct(mode)}, expected {oct(expected)}"


def test_configured_modes_are_applied_exactly(tmp_path: Path) -> None:
    data = local_config(tmp_path)
    data["destinations"][0]["config"].update(file_mode="0640", folder_mode="0750")
    existing = tmp_path / "dest"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)  # noqa: S103 - an operator-made folder, to be left alone
    result = run_cli("backup", str(write_config(tmp_path / "m.yml", data)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755, "an existing base folder is left alone"
    for path in existing.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), f"{path}: {oct(mode)}"
