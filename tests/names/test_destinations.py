"""Names that are not UTF-8, backed up to every real destination and restored byte for byte.

Before the escaping, such a name failed the whole run on S3, SCP and Azure
(``UnicodeEncodeError … surrogates``), the SCP and Azure errors without naming the file. Now
each is stored under its %XX-escaped form (``service_backup.names``), marked in the manifest,
and ``restore`` writes the original bytes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service_backup.errors import SourceError
from service_backup.manifest import MANIFEST_NAME
from service_backup.source import scan_source
from service_backup.upload import upload_one
from tests.manifests.conftest import Backend
from tests.manifests.test_manifests import World, cli

#: Source bytes -> what is stored (None: stored as it is).
TREE: dict[bytes, str | None] = {
    b"caf\xe9.txt": "caf%E9.txt",
    b"50%\xff mixed.bin": "50%25%FF mixed.bin",
    b"d\xfcr/inner %41.dat": "d%FCr/inner %2541.dat",
    "ünï/per%25cent%.txt".encode(): None,
    b"plain.txt": None,
}


def make_tree(root: Path) -> dict[bytes, bytes]:
    base = os.fsencode(root)
    contents: dict[bytes, bytes] = {}
    for index, raw in enumerate(TREE):
        path = base + b"/" + raw
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = raw + b"\n" + bytes([index]) * (index * 37)
        with open(path, "wb") as f:
            f.write(data)
        contents[raw] = data
    return contents


def tree_bytes(root: Path) -> dict[bytes, bytes]:
    """Every file under ``root`` by its exact relative name in bytes."""
    base = os.fsencode(root)
    found: dict[bytes, bytes] = {}
    for folder, _, names in os.walk(base):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, base)] = f.read()
    return found


def stored_form(raw: bytes) -> str:
    return TREE[raw] or raw.decode()


@pytest.fixture
def world(backend: Backend, tmp_path: Path) -> World:
    return World(backend, tmp_path)


def test_backup_list_verify_restore_reproduce_the_exact_bytes(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contents = make_tree(world.source)
    result = world.backup()
    assert result.ok, f"{world.backend.type}: the run failed: {result.error}"

    keys = world.stored_keys()
    for raw in TREE:
        key = f"{world.prefix}/{stored_form(raw)}"
        assert key in keys, f"{world.backend.type}: {raw!r} not stored as {key}: {sorted(keys)}"
    entries = json.loads(world.get(f"{world.prefix}/{MANIFEST_NAME}"))["files"]
    marked = {e["path"]: e.get("escaped", False) for e in entries}
    assert marked == {stored_form(raw): TREE[raw] is not None for raw in TREE}, marked

    cfg = str(world.config_path)
    code, out, err = cli(capsys, "list", cfg, "--json")
    assert code == 0 and json.loads(out)[0]["state"] == "complete", out + err
    code, out, err = cli(capsys, "verify", cfg, "--full", "--json")
    (verdict,) = json.loads(out)
    assert code == 0 and verdict["ok"], f"verify --full: {out}{err}"

    target = tmp_path / "restored"
    code, out, err = cli(capsys, "restore", cfg, "--to", str(target))
    assert code == 0, out + err
    assert tree_bytes(target) == contents, (
        f"{world.backend.type}: restore did not reproduce the names and contents: "
        f"{sorted(tree_bytes(target))} != {sorted(contents)}"
    )


def test_a_failing_non_utf8_file_is_named_printably(world: World) -> None:
    """A file that shrinks after listing fails the upload; the error names it, escaped."""
    contents = make_tree(world.source)
    (victim,) = [f for f in scan_source(world.source) if f.relative == "caf%E9.txt"]
    with open(victim.path, "wb") as f:
        f.write(contents[b"caf\xe9.txt"][:3])
    with world.destination() as destination, pytest.raises(SourceError) as caught:
        destination.ensure_location()
        upload_one(destination, f"{world.prefix}/{victim.relative}", victim)
    message = str(caught.value)
    message.encode("utf-8")  # printable: no lone surrogates
    assert "caf%E9.txt" in message, f"{world.backend.type}: the error does not name it: {message}"


def test_manual_backup_logs_only_printable_text(tmp_path: Path) -> None:
    """The whole run as a process: exit 0, every log line valid UTF-8, names escaped."""
    world = World(Backend("local", lambda: {"path": str(tmp_path / "dest")}), tmp_path)
    make_tree(world.source)
    os.mkfifo(os.fsencode(world.source) + b"/fifo\xe9")  # logged as skipped, by name
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from service_backup.cli import manual_backup; "
         "sys.exit(manual_backup())", str(world.config_path)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")  # strict: no surrogates
    assert proc.returncode == 0, out + err
    assert "fifo%E9" in out + err, f"the skipped FIFO is not named (escaped): {out}{err}"
    assert "\\udc" not in out + err, f"a surrogate escape leaked into the logs: {out}{err}"
