"""The bench's "sha256 off" build (``bench.unhashed``) and the hashing-cost rows it feeds.

The build reaches into two private names of ``service_backup``. If either moves, switching
it off silently does nothing and the bench would report hashing as free: these tests run
real backups through the build and fail when a sha256 is still computed (or a byte is lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench import datasets, report
from bench.runner import Row
from bench.targets import UNHASHED, UNHASHED_TOOL, Tool, with_baseline
from bench.unhashed import ZEROS
from service_backup.manifest import MANIFEST_NAME
from tests.bench import summary_of
from tests.core.cli import single_destination_config

ROOT = Path(__file__).resolve().parents[2]
#: Every way a file reaches a local destination: empty, one small read and write, a kernel
#: copy hashed inline, a kernel copy hashed on a thread beside it.
FILES = {"empty": 0, "small.bin": 3, "d/copied.bin": 300_000, "d/e/big.bin": 6_000_000}


def _backup(tmp_path: Path, argv: list[str]) -> tuple[dict[str, str], Path, Path]:
    """Back ``FILES`` up to a local destination with ``argv`` + CONFIG: (manifest sha256 by
    path, source folder, the run's folder)."""
    source, dest = tmp_path / "src", tmp_path / "dst"
    for name, size in FILES.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    config = single_destination_config(
        tmp_path / "backup.yml", source, "local", "l", {"path": str(dest)}
    )
    proc = subprocess.run(
        [*argv, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"the backup failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    (manifest_path,) = dest.rglob(MANIFEST_NAME)
    manifest = json.loads(manifest_path.read_text())
    return {f["path"]: f["sha256"] for f in manifest["files"]}, source, manifest_path.parent


def test_the_sha256_off_build_stores_every_byte_and_hashes_none(tmp_path: Path) -> None:
    hashes, source, run = _backup(tmp_path, [sys.executable, "-m", "bench.unhashed"])
    assert set(hashes) == set(FILES), hashes
    for name in FILES:
        assert (run / name).read_bytes() == (source / name).read_bytes(), f"{name} differs"
    still = {name: h for name, h in hashes.items() if h != ZEROS}
    assert not still, (
        f"the sha256-off build still hashed {sorted(still)}: a private name it switches "
        "(service_backup.source.hashlib, service_backup.kernel_copy._RangeHasher) has moved"
    )


def test_the_ordinary_backup_of_the_same_files_does_hash(tmp_path: Path) -> None:
    """The zeros above come from the switch, not from the backup."""
    hashes, source, _ = _backup(tmp_path, [str(Path(sys.executable).parent / "manual-backup")])
    for name in FILES:
        expected = hashlib.sha256((source / name).read_bytes()).hexdigest()
        assert hashes[name] == expected, f"{name}: {hashes[name]} is not its sha256"


def test_a_stream_read_source_hashes_nothing_once_switched_off() -> None:
    """Destinations other than local read the ``Source`` as a stream (``_Digest``)."""
    script = (
        "import sys\n"
        "from bench.unhashed import ZEROS, switch_off\n"
        "switch_off()\n"
        "from service_backup.source import Source\n"
        "for size in (3, 5 * 1024 * 1024):\n"  # hashed inline, and on the background thread
        "    source = Source.from_bytes(b'x' * size)\n"
        "    with source.open() as stream:\n"
        "        data = stream.read()\n"
        "    assert len(data) == size, len(data)\n"
        "    print(source.sha256 == ZEROS)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True"], (
        f"a streamed Source still hashed with sha256 off: {proc.stdout!r}"
    )


def _rows(ours: tuple[float, ...], off: tuple[float, ...], peer: float = 0.5) -> list[Row]:
    return [
        Row("local", datasets.BIG, Tool("manual-backup", ours=True), summary_of(ours)),
        Row("local", datasets.BIG, UNHASHED_TOOL, summary_of(off)),
        Row("local", datasets.BIG, Tool("cp -r + sync"), summary_of((peer,))),
    ]


def test_the_baseline_runs_only_on_the_sets_that_measure_hashing() -> None:
    tools = [Tool("manual-backup", ours=True), Tool("cp -r + sync")]
    assert [t.name for t in with_baseline(tools, datasets.BIG)] == [
        "manual-backup",
        UNHASHED,
        "cp -r + sync",
    ]
    assert with_baseline(tools, datasets.MANY) == tools, "the baseline ran on many-16k"


def test_hashing_share_is_ours_minus_the_baseline_over_ours() -> None:
    rows = _rows(ours=(1.0, 1.1, 1.2), off=(0.8, 0.88, 0.9))
    found = report.hashing_share(rows, "local", "big-1g")
    assert found is not None and abs(found[0] - 0.2) < 1e-9, found
    assert report.ratio_text(rows, rows[1]) == "hashing: 20% of ours' wall"
    # the baseline is no peer: ours is compared with cp, not with itself sha256-less
    assert report.ratio_text(rows, rows[0]).startswith("2.20\u00d7 (cp -r + sync)")
    met, detail = report._hashing_under("local", "big-1g")(rows)
    assert met is False and "hashing 20% of the wall" in detail, detail
    assert "overlap" not in detail, f"ranges 1.0-1.2 and 0.8-0.9 are apart: {detail}"
    met, detail = report._hashing_under("local", "big-1g")(_rows((1.0, 1.05, 1.1), (0.97, 1.0)))
    assert met is True and "ranges overlap" in detail, detail
    assert "fastest runs 1.00 s and 0.97 s: 3%" in detail, (
        f"no figure from the fastest runs: {detail}"
    )
    assert report._hashing_under("s3", "big-1g")(rows) == (None, "not measured")
    slower_off = _rows(ours=(1.0,), off=(1.1,))
    assert report.ratio_text(slower_off, slower_off[1]) == (
        "hashing: 0% of ours' wall (sha256 off was 10% slower)"
    ), report.ratio_text(slower_off, slower_off[1])


def test_the_baseline_survives_the_json_round_trip(tmp_path: Path) -> None:
    rows = _rows(ours=(1.0,), off=(0.9,))
    path = tmp_path / "latest.json"
    path.write_text(report.raw_json(rows, [], None, {}))
    loaded = report.load_raw(path).rows
    assert [r.tool.baseline for r in loaded] == [False, True, False], loaded
    assert report.hashing_share(loaded, "local", "big-1g") is not None
