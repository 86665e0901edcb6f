"""``python -m bench --quick`` still runs end to end, so the harness cannot rot unnoticed.

One small data set to the local destination and to sshd, one run per tool, a short idle
window: the point is that every stage (data generation, servers, ours and the peers under GNU
time, the restore cells, start-up, idle daemon, the report) works, not the figures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _row(text: str, destination: str, tool: str, section: str = "## Uploads") -> list[str]:
    """The cells of ``tool``'s row for ``destination`` in the table under ``section``."""
    start = text.index(section)
    end = text.find("\n## ", start + 1)
    for line in text[start : end if end > 0 else None].splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] == destination and cells[2] == tool:
            return cells
    raise AssertionError(f"no row for {destination} / {tool} in:\n{text}")


def test_quick_run_writes_a_table(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "local,scp", "--sets", "mid-1m-q",
         "--idle-seconds", "2", "--startup-runs", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text in proc.stdout  # the same table is printed and written

    ours = _row(text, "local", "manual-backup")
    # runs, median wall, MB/s, CPU, RSS are numbers; the range spans the runs (one here);
    # the ratio names the fastest peer
    assert ours[3] == "1", ours
    assert float(ours[4]) > 0 and float(ours[6]) > 0 and float(ours[9]) > 0, ours
    assert ours[5] == f"{ours[4]}\u2013{ours[4]}", f"one run, yet the range is {ours[5]!r}"
    assert re.match(r"\d+\.\d\d\u00d7 \(", ours[10]), ours
    assert ours[11] == "new", f"no earlier results file, yet the regression cell says {ours[11]!r}"
    cp = _row(text, "local", "cp -r + sync")
    assert float(cp[4]) > 0, cp
    # a real server: ours and OpenSSH side by side, the server's CPU measured too
    scp_ours = _row(text, "scp", "manual-backup")
    assert float(scp_ours[4]) > 0 and float(scp_ours[8]) >= 0, scp_ours
    assert float(_row(text, "scp", "scp -r")[4]) > 0

    # restore cells: ours restored a backup it had just made, the peers downloaded the same
    # run; every tree was compared with the source (a wrong tree fails the run, so "failed")
    restore = _row(text, "local", "service-backup restore", "## Restores")
    assert restore[3] == "1" and float(restore[4]) > 0 and float(restore[9]) > 0, restore
    assert re.match(r"\d+\.\d\d\u00d7 \(", restore[10]), f"no ratio for the restore: {restore}"
    assert float(_row(text, "local", "cp -r + sync", "## Restores")[4]) > 0
    assert float(_row(text, "scp", "service-backup restore", "## Restores")[4]) > 0
    for peer in ("scp -r + sync", "scp -O -r + sync", "sftp -b + sync"):
        assert float(_row(text, "scp", peer, "## Restores")[4]) > 0, f"{peer} did not restore"
    assert re.search(r"#13 \| local \| restore: peak RSS .* \| met \|", text), text

    assert "## Start-up and idle daemon" in text
    assert re.search(r"validate`, all five types \| 1 \| \d", text), text
    assert re.search(r"idle daemon, all five types, 2 s window \| 1 \| ready after \d", text), text
    assert "not run:" not in text and "failed" not in text, text
    knobs = [line for line in text.splitlines() if line.startswith("- local / manual-backup:")]
    assert knobs and re.search(r"file_concurrency \d", knobs[0]), f"knobs line: {knobs}"
    assert "byte-compiled" in text, "the report does not say the measured code was byte-compiled"
    assert "Machine: " in text and "rclone" in text and "python: 3." in text
