"""The restore cells' own checks: the restored-tree comparison and the report's phase split."""

from __future__ import annotations

from pathlib import Path

from bench import datasets, report
from bench.measure import Summary
from bench.runner import MANIFEST_NAME, RESTORE, UPLOAD, Row, compare_trees
from bench.targets import Tool


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {"a.bin": b"alpha", "d/b.bin": b"bravo", "d/e/c.bin": b""}


def test_compare_trees_accepts_the_same_tree_and_ignores_the_manifest(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", FILES)
    restored = _tree(tmp_path / "out", {**FILES, MANIFEST_NAME: b"{}"})
    assert compare_trees(source, restored, full=True) is None


def test_compare_trees_names_what_differs(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", FILES)
    missing = _tree(tmp_path / "missing", {k: v for k, v in FILES.items() if k != "d/b.bin"})
    assert "d/b.bin" in (compare_trees(source, missing, full=False) or ""), "missing file"
    extra = _tree(tmp_path / "extra", {**FILES, "x.bin": b"x"})
    assert "x.bin" in (compare_trees(source, extra, full=False) or ""), "extra file"
    short = _tree(tmp_path / "short", {**FILES, "a.bin": b"alph"})
    assert "wrong size" in (compare_trees(source, short, full=False) or "")
    flipped = _tree(tmp_path / "flipped", {**FILES, "d/b.bin": b"bravO"})
    assert compare_trees(source, flipped, full=False) is None, "sizes only on later runs"
    assert "d/b.bin" in (compare_trees(source, flipped, full=True) or ""), "a flipped byte passed"
    assert "no folder" in (compare_trees(source, tmp_path / "nothing", full=True) or "")


def _row(tool: str, wall: float, phase: str, ours: bool = False) -> Row:
    summary = Summary(runs=2, failed=0, wall=wall, walls=(wall,), cpu=1.0, peak_rss_kib=1024)
    return Row("s3", datasets.BIG, Tool(tool, ours=ours), summary, "", phase)


def test_restore_rows_get_their_own_table_ratio_and_regression_key(tmp_path: Path) -> None:
    rows = [
        _row("manual-backup", 8.0, UPLOAD, ours=True),
        _row("rclone copy", 4.0, UPLOAD),
        _row("service-backup restore", 6.0, RESTORE, ours=True),
        _row("rclone copy + sync", 3.0, RESTORE),
    ]
    restore_ours = rows[2]
    # the restore is compared with the download peers only, not with the uploads
    assert report.ratio_text(rows, restore_ours).startswith("2.00\u00d7 (rclone copy + sync)")
    assert report.ratio_text(rows, rows[0]).startswith("2.00\u00d7 (rclone copy)")
    out = tmp_path / "latest.md"
    restores = [r for r in rows if r.phase == RESTORE]
    out.write_text(
        "## Uploads\n\n" + report.table(rows[:2]) + "\n\n## Restores\n\n" + report.table(restores)
    )
    previous = report.load_previous(out)
    assert previous is not None
    assert previous[("s3", "big-1g", "service-backup restore", RESTORE)] == 6.0, previous
    assert previous[("s3", "big-1g", "manual-backup", UPLOAD)] == 8.0, previous
    slower = _row("service-backup restore", 7.2, RESTORE, ours=True)
    assert "**slower**" in report.regression_text(slower, previous)
    met, detail = report.TargetCheck(
        13, "s3", "t", report._faster_than("s3", "big-1g", None, phase=RESTORE)
    ).check(rows)
    assert met is False and "rclone copy + sync" in detail, detail
