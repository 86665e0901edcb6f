"""The report's regression column and the per-destination data sets, without running tools."""

from __future__ import annotations

from pathlib import Path

from bench import datasets, report
from bench.measure import Summary
from bench.runner import Row
from bench.targets import Tool, our_knobs
from tests.bench import summary_of


def _row(wall: float, tool: str = "manual-backup", ours: bool = True) -> Row:
    summary = Summary(runs=3, failed=0, wall=wall, walls=(wall,), cpu=1.0, peak_rss_kib=1024)
    return Row("local", datasets.MANY_4K, Tool(tool, ours=ours), summary)


def test_regression_flags_changes_beyond_ten_percent() -> None:
    previous = {("local", "many-4k", "manual-backup", "upload"): 2.0}
    assert "**slower**" in report.regression_text(_row(2.4), previous), "20 % slower not flagged"
    assert "faster" in report.regression_text(_row(1.6), previous), "20 % faster not flagged"
    within = report.regression_text(_row(2.1), previous)
    assert "slower" not in within and "faster" not in within, f"+5 % was flagged: {within}"
    assert within.startswith("+5%"), within
    assert report.regression_text(_row(2.0), None) == "new"


def test_previous_results_are_read_back_from_the_markdown_table(tmp_path: Path) -> None:
    rows = [_row(2.0), _row(0.8, "cp -r + sync", ours=False)]
    out = tmp_path / "latest.md"
    out.write_text(report.table(rows))
    previous = report.load_previous(out)
    assert previous == {
        ("local", "many-4k", "manual-backup", "upload"): 2.0,
        ("local", "many-4k", "cp -r + sync", "upload"): 0.8,
    }, previous


def test_rows_merged_from_an_earlier_run_are_compared_too(tmp_path: Path) -> None:
    """The JSON beside a report holds only the rows its own run measured; rows the report
    merged from earlier runs are only in its table, and must still be compared with."""
    import json

    out = tmp_path / "latest.md"
    out.write_text(report.table([_row(2.0), _row(0.8, "cp -r + sync", ours=False)]))
    measured = {"destination": "local", "dataset": "many-4k", "tool": "manual-backup"}
    out.with_suffix(".json").write_text(
        json.dumps({"uploads": [{**measured, "phase": "upload", "summary": {"wall": 1.987}}]})
    )
    previous = report.load_previous(out)
    assert previous == {
        ("local", "many-4k", "manual-backup", "upload"): 1.987,
        ("local", "many-4k", "cp -r + sync", "upload"): 0.8,
    }, f"the merged row or the JSON's unrounded figure is missing: {previous}"


def test_each_cell_shows_the_spread_of_its_runs(tmp_path: Path) -> None:
    summary = Summary(
        runs=3, failed=0, wall=1.5, walls=(1.5, 1.31, 7.02), cpu=1.0, peak_rss_kib=1024
    )
    row = Row("local", datasets.MANY_4K, Tool("manual-backup", ours=True), summary)
    text = report.table([row])
    cells = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert len(cells) == len(header), f"row and header disagree: {header} / {cells}"
    assert cells[header.index("median wall s")] == "1.50", cells
    assert cells[header.index("wall range s")] == "1.31\u20137.02", (
        f"the fastest and slowest run are not shown: {cells}"
    )
    out = tmp_path / "latest.md"
    out.write_text(text)
    assert report.load_previous(out) == {("local", "many-4k", "manual-backup", "upload"): 1.5}, (
        "the median is no longer read back from a table with the range column"
    )


def test_tables_from_before_the_range_column_are_still_read(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    out.write_text(
        "| destination | data set | tool | runs | median wall s | MB/s | CPU s | server CPU s "
        "| peak RSS MiB | ours \u00f7 peer (wall) | vs previous | note |\n"
        "|---|---|---|--:|--:|--:|--:|--:|--:|---|---|---|\n"
        "| local | 20,000 \u00d7 4 KiB | **manual-backup** | 3 | 4.19 | 19.5 | 2.96 | \u2013 | 54 "
        "| 3.72\u00d7 | +24% |  |\n"
    )
    assert report.load_previous(out) == {("local", "many-4k", "manual-backup", "upload"): 4.19}


def _ranged(tool: str, walls: tuple[float, ...], ours: bool) -> Row:
    return Row("local", datasets.MANY, Tool(tool, ours=ours), summary_of(walls))


def test_a_targets_verdict_says_when_the_runs_ranges_overlap() -> None:
    check = report._faster_than("local", "many-16k", ["cp -r + sync"], 1 / 1.5)
    noisy = [_ranged("manual-backup", (0.70, 1.82, 2.04), True),
             _ranged("cp -r + sync", (0.37, 0.47, 0.92), False)]  # fmt: skip
    met, detail = check(noisy)
    assert met is False and "ranges overlap" in detail, (
        f"a miss whose runs overlap the peer's is not marked as such: {detail}"
    )
    apart = [_ranged("manual-backup", (1.70, 1.82, 2.04), True),
             _ranged("cp -r + sync", (0.37, 0.47, 0.92), False)]  # fmt: skip
    met, detail = check(apart)
    assert met is False and "overlap" not in detail, f"ranges apart marked as overlapping: {detail}"


def test_every_peer_row_keeps_its_ratio() -> None:
    rows = [_row(2.0), _row(0.8, "cp -r + sync", ours=False)]
    assert report.ratio_text(rows, rows[1]) == "2.50\u00d7", report.ratio_text(rows, rows[1])
    assert report.ratio_text(rows, rows[0]).startswith("2.50\u00d7 (cp -r + sync)")


def test_many_4k_runs_on_local_and_scp_only() -> None:
    assert datasets.MANY_4K.runs_on("local") and datasets.MANY_4K.runs_on("scp")
    assert not datasets.MANY_4K.runs_on("gcs"), "20,000 objects to the one-request GCS emulator"
    assert datasets.MANY.runs_on("gcs")


def test_knobs_name_the_lazily_registered_class_concurrency() -> None:
    text = our_knobs("local")
    assert "file_concurrency 4" in text, f"lazy_factory hides the class: {text}"
