"""The table, the machine it ran on, the versions, the targets: printed and written as Markdown."""

from __future__ import annotations

import datetime
import importlib.metadata
import operator
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from .datasets import DataSet
from .measure import Summary
from .overhead import IdleResult, StartupResult
from .runner import RESTORE, UPLOAD, Row
from .targets import Tool

MiB = 1024 * 1024
X = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash: an empty cell
RSS_LIMIT_MIB = 150
OUR_DISTRIBUTIONS = (
    "service-backup",
    "service-backup-plugins",
    "service-backup-s3",
    "service-backup-azure",
    "service-backup-gcs",
    "service-backup-scp",
)


def machine() -> dict[str, str]:
    info: dict[str, str] = {"nproc": str(os.cpu_count() or "?")}
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["memory"] = "?"
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or "?"
    info["kernel"] = platform.release()
    try:
        info["os"] = "Debian " + Path("/etc/debian_version").read_text().strip()
    except OSError:
        info["os"] = platform.platform()
    return info


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def our_versions(repo: Path) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for dist in OUR_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        versions["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return versions


def _mbps(dataset: DataSet, wall: float) -> float:
    return dataset.total_bytes / wall / 1e6 if wall > 0 else 0.0


IS_PEER: Callable[[Tool], bool] = operator.attrgetter("is_peer")
IS_BASELINE: Callable[[Tool], bool] = operator.attrgetter("baseline")


def measured(
    rows: Sequence[Row], dest: str, dataset: str, phase: str, wanted: Callable[[Tool], bool]
) -> list[Row]:
    """The rows of one cell whose tool ``wanted`` accepts, and that have figures."""
    return [
        r
        for r in rows
        if r.destination == dest
        and r.dataset.name == dataset
        and r.phase == phase
        and wanted(r.tool)
        and r.summary is not None
    ]


def fastest_peer(rows: Sequence[Row], ours: Row) -> Row | None:
    peers = measured(rows, ours.destination, ours.dataset.name, ours.phase, IS_PEER)
    return min(peers, key=lambda r: r.summary.wall) if peers else None  # type: ignore[union-attr]


def ratio_text(rows: Sequence[Row], row: Row) -> str:
    """Ours: ÷ the fastest peer (named). A peer: ours ÷ that peer, so every pair is kept.
    Ours with sha256 off: the share of ours' wall that hashing costs."""
    if row.summary is None:
        return ""
    if row.tool.baseline:
        share = hashing_share(rows, row.destination, row.dataset.name, row.phase)
        return "" if share is None else "hashing: " + share_text(share[0], " of ours' wall")
    if not row.tool.ours:
        ours = _find(rows, row.destination, row.dataset.name, None, row.phase)
        if ours is None or ours.summary is None or row.summary.wall <= 0:
            return ""
        return f"{ours.summary.wall / row.summary.wall:.2f}{X}"
    peer = fastest_peer(rows, row)
    if peer is None or peer.summary is None:
        return "no peer"
    return f"{row.summary.wall / peer.summary.wall:.2f}{X} ({peer.tool.name})"


#: A cell whose median wall moved more than this against the previous results is flagged.
REGRESSION_LIMIT = 0.10

#: Median walls by (destination, data set, tool, phase).
Previous = dict[tuple[str, str, str, str], float]


def regression_text(row: Row, previous: Previous | None) -> str:
    """This cell's median wall against the same cell of the previous results file.

    ``+12% **slower**`` / ``-15% faster`` beyond ±10 %, the bare change within it; ``new``
    when the previous results had no such cell (or there were none).
    """
    if row.summary is None:
        return ""
    before = (previous or {}).get((row.destination, row.dataset.name, row.tool.name, row.phase))
    if not before:
        return "new"
    change = row.summary.wall / before - 1
    text = f"{change * 100:+.0f}% (was {before:.2f} s)"
    if change > REGRESSION_LIMIT:
        return f"{text} **slower**"
    if change < -REGRESSION_LIMIT:
        return f"{text} faster"
    return text


def wall_range(summary: Summary) -> str:
    """The fastest and the slowest measured run: how far one cell's runs spread.

    On a machine whose disk or neighbours are noisy, a ratio of medians is only as firm as
    this spread; a miss inside it is not a finding.
    """
    if not summary.walls:
        return DASH
    return f"{min(summary.walls):.2f}\u2013{max(summary.walls):.2f}"


def table(rows: Sequence[Row], previous: Previous | None = None) -> str:
    head = (
        "| destination | data set | tool | runs | median wall s | wall range s | MB/s | CPU s "
        "| server CPU s | peak RSS MiB | ours ÷ peer (wall) | vs previous (wall, ±10 % flagged) "
        "| note |"
    )
    lines = [head, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|---|"]
    for row in rows:
        s = row.summary
        name = f"**{row.tool.name}**" if row.tool.ours else row.tool.name
        if s is None:
            cells = [DASH] * 7 + ["", ""]
        else:
            server = DASH if s.server_cpu is None else f"{s.server_cpu:.2f}"
            cells = [
                str(s.runs),
                f"{s.wall:.2f}",
                wall_range(s),
                f"{_mbps(row.dataset, s.wall):.1f}",
                f"{s.cpu:.2f}",
                server,
                f"{s.peak_rss_kib / 1024:.0f}",
                ratio_text(rows, row),
                regression_text(row, previous),
            ]
        note = row.note.replace("|", "\\|")
        lines.append(
            f"| {row.destination} | {row.dataset.title} | {name} | "
            + " | ".join(cells)
            + f" | {note} |"
        )
    return "\n".join(lines)


def overhead_table(startup: Sequence[StartupResult], idle: IdleResult | None) -> str:
    lines = [
        "| what | runs | median wall s | CPU s | peak RSS MiB | note |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for item in startup:
        s = item.summary
        if s is None:
            lines.append(f"| {item.label} | " + f"{DASH} | " * 4 + f"{item.note} |")
        else:
            lines.append(
                f"| {item.label} | {s.runs} | {s.wall:.2f} | {s.cpu:.2f} | "
                f"{s.peak_rss_kib / 1024:.0f} | {item.note} |"
            )
    if idle is not None:
        lines.append(
            f"| idle daemon, all five types, {idle.seconds:.0f} s window | 1 | "
            f"ready after {idle.ready_seconds:.2f} | {idle.cpu_seconds:.3f} "
            f"({idle.cpu_percent:.2f} % of a core) | {idle.max_rss_kib / 1024:.0f} "
            f"| RSS {idle.rss_start_kib / 1024:.0f} MiB at start, "
            f"{idle.rss_end_kib / 1024:.0f} MiB at end {idle.note} |"
        )
    return "\n".join(lines)


@attrs.frozen
class TargetCheck:
    issue: int
    destination: str
    text: str
    check: Callable[[Sequence[Row]], tuple[bool | None, str]]


def _find(
    rows: Sequence[Row], dest: str, dataset: str, tool: str | None, phase: str = UPLOAD
) -> Row | None:
    for r in rows:
        if (
            r.destination == dest
            and r.dataset.name == dataset
            and r.phase == phase
            and (r.tool.ours if tool is None else r.tool.name == tool)
        ):
            return r
    return None


def ranges_overlap(a: Summary, b: Summary) -> bool:
    """Whether some run of one tool was as slow as some run of the other: then the verdict of
    the medians could have gone either way on another minute of the same machine."""
    if not a.walls or not b.walls:
        return False
    return min(a.walls) <= max(b.walls) and min(b.walls) <= max(a.walls)


def _faster_than(  # type: ignore[no-untyped-def]
    dest: str,
    dataset: str,
    peers: Sequence[str] | None,
    factor: float = 1.0,
    phase: str = UPLOAD,
):
    """Ours' wall ≤ the fastest of ``peers``' wall ÷ ``factor`` (``None``: every peer)."""

    def check(rows: Sequence[Row]) -> tuple[bool | None, str]:
        ours = _find(rows, dest, dataset, None, phase)
        if peers is None:
            found = measured(rows, dest, dataset, phase, IS_PEER)
        else:
            found = [r for p in peers if (r := _find(rows, dest, dataset, p, phase)) and r.summary]
        if ours is None or ours.summary is None or not found:
            return None, "not measured"
        best = min(found, key=lambda r: r.summary.wall)  # type: ignore[union-attr]
        allowed = best.summary.wall / factor  # type: ignore[union-attr]
        ratio = ours.summary.wall / best.summary.wall  # type: ignore[union-attr]
        overlap = ""
        if best.summary is not None and ranges_overlap(ours.summary, best.summary):
            overlap = "; the runs' wall ranges overlap"
        return ours.summary.wall <= allowed, (
            f"ours {ours.summary.wall:.2f} s vs {best.tool.name} {best.summary.wall:.2f} s "  # type: ignore[union-attr]
            f"(ours ÷ peer {ratio:.3f}{X}; target ≤ {1 / factor:.2f}{X}{overlap})"
        )

    return check


def hashing_share(
    rows: Sequence[Row], dest: str, dataset: str, phase: str = UPLOAD
) -> tuple[float, Row, Row] | None:
    """(share, ours, baseline): how much of ours' median wall the sha256 costs, measured as
    ours minus the same backup with it switched off (``bench.unhashed``), ÷ ours."""
    ours = _find(rows, dest, dataset, None, phase)
    off = next(iter(measured(rows, dest, dataset, phase, IS_BASELINE)), None)
    if ours is None or ours.summary is None or off is None or ours.summary.wall <= 0:
        return None
    return (ours.summary.wall - off.summary.wall) / ours.summary.wall, ours, off  # type: ignore[union-attr]


def share_text(share: float, of: str) -> str:
    """A hashing share as a percentage (``of`` says of what); one below zero (the runs without
    sha256 were the slower ones: noise) as 0 %, saying so."""
    if share < 0:
        return f"0%{of} (sha256 off was {-share:.0%} slower)"
    return f"{share:.0%}{of}"


def _hashing_under(dest: str, dataset: str, limit: float = 0.10):  # type: ignore[no-untyped-def]
    """What hashing costs (``hashing_share``) is at most ``limit`` of ours' wall."""

    def check(rows: Sequence[Row]) -> tuple[bool | None, str]:
        found = hashing_share(rows, dest, dataset)
        if found is None:
            return None, "not measured"
        share, ours, off = found
        assert ours.summary is not None and off.summary is not None
        overlap = ""
        if ranges_overlap(ours.summary, off.summary):
            fastest, fastest_off = min(ours.summary.walls), min(off.summary.walls)
            overlap = (
                f"; the runs' wall ranges overlap; fastest runs {fastest:.2f} s and "
                f"{fastest_off:.2f} s: {share_text((fastest - fastest_off) / fastest, '')}"
            )
        return share <= limit, (
            f"ours {ours.summary.wall:.2f} s, with sha256 off {off.summary.wall:.2f} s: "
            f"hashing {share_text(share, ' of the wall')} (target ≤ {limit:.0%}{overlap})"
        )

    return check


def _rss_under(  # type: ignore[no-untyped-def]
    dest: str, datasets: Sequence[str], limit_mib: float = RSS_LIMIT_MIB, phase: str = UPLOAD
):
    def check(rows: Sequence[Row]) -> tuple[bool | None, str]:
        found = [r for d in datasets if (r := _find(rows, dest, d, None, phase)) and r.summary]
        if not found:
            return None, "not measured"
        worst = max(found, key=lambda r: r.summary.peak_rss_kib)  # type: ignore[union-attr]
        mib = worst.summary.peak_rss_kib / 1024  # type: ignore[union-attr]
        return (
            mib <= limit_mib,
            f"peak {mib:.0f} MiB on {worst.dataset.title} (limit {limit_mib:.0f})",
        )

    return check


def _all_of(*checks):  # type: ignore[no-untyped-def]
    """Every check met (the details of all, joined)."""

    def check(rows: Sequence[Row]) -> tuple[bool | None, str]:
        results = [c(rows) for c in checks]
        if any(met is None for met, _ in results):
            return None, "not measured"
        return all(met for met, _ in results), "; ".join(d for _, d in results)

    return check


TARGETS = [
    TargetCheck(
        4,
        "s3",
        "1 GiB file: at least as fast as the faster of aws-cli and rclone",
        _faster_than("s3", "big-1g", ["aws s3 cp --recursive", "rclone copy"]),
    ),
    TargetCheck(
        4,
        "s3",
        f"5,000 {X} 16 KiB: at least as fast as the faster of aws-cli and rclone",
        _faster_than("s3", "many-16k", ["aws s3 cp --recursive", "rclone copy"]),
    ),
    TargetCheck(4, "s3", "peak RSS ≤ 150 MiB for a 2 GiB file", _rss_under("s3", ["huge-2g"])),
    TargetCheck(
        5,
        "azure",
        "1 GiB file: at least rclone's speed",
        _faster_than("azure", "big-1g", ["rclone copy"]),
    ),
    TargetCheck(
        5,
        "azure",
        f"5,000 {X} 16 KiB: at least rclone's speed",
        _faster_than("azure", "many-16k", ["rclone copy"]),
    ),
    TargetCheck(
        5, "azure", "peak RSS ≤ 150 MiB for a 2 GiB file", _rss_under("azure", ["huge-2g"])
    ),
    TargetCheck(6, "gcs", "peak RSS ≤ 150 MiB for a 2 GiB file", _rss_under("gcs", ["huge-2g"])),
    TargetCheck(
        7,
        "scp",
        f"5,000 {X} 16 KiB: at least as fast as OpenSSH scp -r",
        _faster_than("scp", "many-16k", ["scp -r"]),
    ),
    TargetCheck(
        7,
        "scp",
        f"1 GiB file: within 0.8{X} of OpenSSH scp -r's speed",
        _faster_than("scp", "big-1g", ["scp -r"], factor=0.8),
    ),
    TargetCheck(
        7,
        "scp",
        "peak RSS ≤ 150 MiB (every set)",
        _rss_under("scp", ["big-1g", "many-16k", "mid-1m", "many-4k", "huge-2g", "many-16k-q"]),
    ),
]


_LOCAL_PEER = ["cp -r + sync"]
TARGETS += [
    TargetCheck(
        20,
        "local",
        f"5,000 {X} 16 KiB: within 1.5{X} of `cp -r` + sync",
        _faster_than("local", "many-16k", _LOCAL_PEER, factor=1 / 1.5),
    ),
    TargetCheck(
        20,
        "local",
        f"200 {X} 1 MiB: within 1.2{X} of `cp -r` + sync",
        _faster_than("local", "mid-1m", _LOCAL_PEER, factor=1 / 1.2),
    ),
    TargetCheck(
        20,
        "local",
        "1 GiB file: at least as fast as `cp -r` + sync",
        _faster_than("local", "big-1g", _LOCAL_PEER),
    ),
    *[
        TargetCheck(
            20,
            "scp",
            f"{title}: at least as fast as `sftp -b`, within 1.2{X} of `scp -O -r`",
            _all_of(
                _faster_than("scp", name, ["sftp -b"]),
                _faster_than("scp", name, ["scp -O -r"], factor=1 / 1.2),
            ),
        )
        for name, title in (("many-16k", f"5,000 {X} 16 KiB"), ("mid-1m", f"200 {X} 1 MiB"))
    ],
]


#: Issue 13: hashing within 10 % of the 1 GiB upload; restore at least as fast as the fastest
#: peer's download, in bounded memory.
TARGETS += [
    check
    for dest in ("local", "s3", "azure", "gcs", "scp")
    for check in (
        TargetCheck(
            13,
            dest,
            "backup, 1 GiB file: the manifest's sha256 costs ≤ 10 % of the wall",
            _hashing_under(dest, "big-1g"),
        ),
        TargetCheck(
            13,
            dest,
            "restore, 1 GiB file: at least as fast as the fastest peer's download",
            _faster_than(dest, "big-1g", None, phase=RESTORE),
        ),
        TargetCheck(
            13,
            dest,
            f"restore, 5,000 {X} 16 KiB: at least as fast as the fastest peer's download",
            _faster_than(dest, "many-16k", None, phase=RESTORE),
        ),
        TargetCheck(
            13,
            dest,
            "restore: peak RSS ≤ 150 MiB (every set)",
            _rss_under(dest, ["big-1g", "many-16k", "mid-1m-q", "many-16k-q"], phase=RESTORE),
        ),
    )
]


def targets_table(rows: Sequence[Row], destinations: Sequence[str]) -> str:
    lines = ["| issue | destination | target | result | measured |", "|--:|---|---|---|---|"]
    for t in TARGETS:
        if t.destination not in destinations:
            continue
        met, detail = t.check(rows)
        verdict = "met" if met else ("not measured" if met is None else "**missed**")
        lines.append(f"| #{t.issue} | {t.destination} | {t.text} | {verdict} | {detail} |")
    return "\n".join(lines)


def document(
    *,
    rows: Sequence[Row],
    startup: Sequence[StartupResult],
    idle: IdleResult | None,
    destinations: Sequence[str],
    knobs: dict[str, list[tuple[str, str]]],
    versions: dict[str, str],
    settings: str,
    started: datetime.datetime,
    finished: datetime.datetime,
    load: tuple[str, str],
    notes: Sequence[str],
    previous: Previous | None = None,
) -> str:
    m = machine()
    parts = [
        "# service-backup benchmark: latest results",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} {DASH} {finished:%H:%M} UTC by `python -m bench` "
        f"({settings}).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, {m['os']}, "
        f"kernel {m['kernel']}. Load average at start {load[0]}, at end {load[1]}.",
        "",
        "## Uploads",
        "",
        "Every upload is one whole process (`manual-backup CONFIG` for ours) timed through GNU "
        "`time -v`, to a fresh location on a server on loopback. Median of the measured runs "
        "after one warm-up per tool, interleaved A B C, A B C; MB/s = 10^6 bytes per second of "
        "median wall time; wall range = the fastest and the slowest measured run; CPU = "
        "user + system of the tool's whole process tree; server CPU = "
        "what the server process spent meanwhile (median); peak RSS = the highest across "
        "runs (largest process per GNU time, or "
        "the sampled sum of the process tree when larger). Ratio = ours' median wall ÷ the "
        "fastest peer's (below 1 = ours faster); on a peer's row, ours ÷ that peer. "
        "On the 1 GiB sets ours also runs with the manifest's sha256 switched off "
        '("manual-backup, sha256 off", a baseline, not a peer; `bench/unhashed.py`): ours\' '
        "wall minus that one's, ÷ ours', is what hashing costs. "
        '"vs previous" compares each cell\'s median wall with the same cell of the results '
        "file this run replaced (`latest.json`, else the table of `latest.md`); a change "
        "beyond ±10 % is flagged (a slower cell in bold).",
        "",
        table([r for r in rows if r.phase == UPLOAD], previous),
        "",
    ]
    restores = [r for r in rows if r.phase == RESTORE]
    if restores:
        parts += [
            "## Restores",
            "",
            "Each cell first backs the data set up once with `manual-backup` (not timed); then "
            "`service-backup restore CONFIG --to DIR` (ours: finds the run, by folder listings "
            "where the store has them, else one listing; reads its manifest, "
            "downloads every file, checks its size and sha256, renames it into place, one "
            "`syncfs` at the end) and each peer downloading the same run folder, followed by "
            "`sync -f`, run as whole processes under GNU `time -v`, interleaved like the "
            "uploads, each into a folder that does not exist yet. The first run of every tool "
            "is compared byte for byte with the source, later runs by names and sizes (the "
            "manifest object the peers fetch beside the files is ignored). Columns as above; "
            "MB/s counts the data set's bytes.",
            "",
            table(restores, previous),
            "",
        ]
    if notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    parts += [
        "## Targets (issues 4 to 7, 13 and 20)",
        "",
        targets_table(rows, destinations),
        "",
    ]
    parts += ["## Start-up and idle daemon", "", overhead_table(startup, idle), ""]
    parts += ["## Tools and knobs", ""]
    for dest, items in knobs.items():
        for name, text in items:
            parts.append(f"- {dest} / {name}: {text}")
    parts += ["", "## Versions", ""]
    parts += [f"- {k}: {v}" for k, v in versions.items()]
    return "\n".join(parts) + "\n"


def raw_json(
    rows: Sequence[Row],
    startup: Sequence[StartupResult],
    idle: IdleResult | None,
    meta: dict[str, Any],
) -> str:
    """Every figure behind the table (per-run walls included), for re-plotting or ``--merge``."""
    import json

    def summary(s: Any) -> Any:
        return None if s is None else attrs.asdict(s)

    data = {
        "meta": meta,
        "uploads": [
            {
                "destination": r.destination,
                "dataset": r.dataset.name,
                "bytes": r.dataset.total_bytes,
                "tool": r.tool.name,
                "ours": r.tool.ours,
                "baseline": r.tool.baseline,
                "knobs": r.tool.knobs,
                "summary": summary(r.summary),
                "note": r.note,
                "phase": r.phase,
            }
            for r in rows
        ],
        "startup": [
            {"label": s.label, "summary": summary(s.summary), "note": s.note} for s in startup
        ],
        "idle": None if idle is None else attrs.asdict(idle),
    }
    return json.dumps(data, indent=1)


@attrs.frozen
class Earlier:
    """What an earlier run measured (``--merge``): its rows, overheads and circumstances."""

    rows: list[Row]
    startup: list[StartupResult]
    idle: IdleResult | None
    meta: dict[str, Any]


def load_raw(path: Path) -> Earlier:
    import json

    from .datasets import ALL_SETS

    data = json.loads(path.read_text())

    def summary(d: Any) -> Summary | None:
        if d is None:
            return None
        return Summary(**{**d, "walls": tuple(d["walls"])})

    rows = [
        Row(
            u["destination"],
            ALL_SETS[u["dataset"]],
            Tool(
                u["tool"],
                ours=u["ours"],
                knobs=u.get("knobs", ""),
                baseline=u.get("baseline", False),
            ),
            summary(u["summary"]),
            u["note"],
            u.get("phase", UPLOAD),
        )
        for u in data["uploads"]
    ]
    startup = [StartupResult(s["label"], summary(s["summary"]), s["note"]) for s in data["startup"]]
    idle = IdleResult(**data["idle"]) if data.get("idle") else None
    return Earlier(rows, startup, idle, data.get("meta", {}))


def load_previous(out: Path) -> Previous | None:
    """The median walls of the results file about to be replaced, by (destination, set, tool).

    Every row of the Markdown tables of ``out``'s ``.md`` (rows merged from earlier runs
    included), overlaid with the unrounded figures of its ``.json`` where that run measured
    them (the JSON holds only the rows its own run measured, and is not committed: a fresh
    clone has only the tables).
    """
    import json

    found: Previous = {}
    table_file = out.with_suffix(".md")
    if table_file.is_file():
        found.update(parse_table(table_file.read_text()))
    raw = out.with_suffix(".json")
    if raw.is_file():
        try:
            data = json.loads(raw.read_text())
            found.update(
                {
                    (u["destination"], u["dataset"], u["tool"], u.get("phase", UPLOAD)): float(
                        u["summary"]["wall"]
                    )
                    for u in data["uploads"]
                    if u.get("summary")
                }
            )
        except (ValueError, KeyError, TypeError):
            pass
    return found or None


def parse_table(text: str) -> Previous:
    """The rows of a report's Markdown tables (the data set by its title; the phase by the
    section the table is in: ``## Restores`` or not)."""
    from .datasets import ALL_SETS

    by_title = {d.title: d.name for d in ALL_SETS.values()}
    found: Previous = {}
    phase = UPLOAD
    for line in text.splitlines():
        if line.startswith("## "):
            phase = RESTORE if line.strip() == "## Restores" else UPLOAD
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[1] not in by_title:
            continue
        try:
            wall = float(cells[4])
        except ValueError:
            continue
        found[(cells[0], by_title[cells[1]], cells[2].strip("*"), phase)] = wall
    return found
