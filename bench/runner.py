"""The cells of the tables: every data set to every destination with every tool, interleaved.

For one (destination, data set) cell each tool first runs once as a warm-up (page cache,
server caches, first-connection costs; the stored object count is checked then), then the
measured rounds run the tools one after another in orders that vary both who goes first and
who follows whom (``round_orders``). Every run gets a fresh remote location, created before
and removed after the timed region.

A restore cell (``run_restore_cell``) backs the set up once with ``manual-backup`` outside any
timing, then times ``service-backup restore`` of that run against the peers downloading the
same objects, in the same interleaved rounds, each run into a folder that does not exist yet.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from .datasets import DataSet
from .measure import Measurement, Summary, run_measured
from .targets import Invocation, Location, Target, Tool, server_cpu_seconds, with_baseline

_ids = itertools.count(1)

#: Cells of at least this many files keep their run folders until the destination's last cell.
#: On ext4 (no journal) every file created within a minute or more of a mass deletion makes
#: the inode allocator step over each recently deleted inode (``recently_deleted`` in
#: ``ext4_create``: 75 % of a 20,000-file run's CPU in ``perf``, the run 3 to 6 times slower,
#: for every tool alike). Removing 60,000 files between cells poisoned the next cell.
DEFER_REMOVAL_FILES = 1000
#: Runs of files at least this big are removed right after each run, on every target: a few
#: big files are freed in one cheap step each, and keeping a 1 GiB cell's runs until its end
#: (8 runs of 4 tools with ``--runs 7``) would hold 32 GiB of disk.
REMOVE_FILES_FROM = 64 * 1024 * 1024


UPLOAD = "upload"
RESTORE = "restore"
PHASES = (UPLOAD, RESTORE)


@attrs.frozen
class Row:
    destination: str
    dataset: DataSet
    tool: Tool
    summary: Summary | None
    note: str = ""
    #: ``upload`` (the data set to the destination) or ``restore`` (back into a folder).
    phase: str = UPLOAD


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:160]


def round_orders(tools: list[Tool], rounds: int, last: Tool | None = None) -> list[list[Tool]]:
    """The order of the tools in each measured round: who goes first and who follows whom vary.

    A plain rotation (A B C, B C A, C A B) keeps every tool behind the same neighbour, and a
    tool can leave the machine busy after it exits: a run right after ``rclone copy`` + sync
    measured twice as slow (20,000 x 4 KiB: 4.2 to 5.2 s against 2.2 to 2.5 s after ``cp``),
    so under a rotation one tool paid for another's leftovers in every round. Each round
    takes the permutation whose (predecessor, tool) pairs, and first tool, were used least.
    """
    used: dict[tuple[str | None, str | None], int] = {}
    firsts: dict[str, int] = {}
    previous = last.name if last else None
    orders: list[list[Tool]] = []
    candidates = list(itertools.permutations(tools))
    for _ in range(rounds if tools else 0):

        def cost(order: tuple[Tool, ...], before: str | None = previous) -> tuple[int, int]:
            names: list[str | None] = [before, *(t.name for t in order)]
            pairs = sum([used.get(pair, 0) for pair in itertools.pairwise(names)])
            return pairs, firsts.get(order[0].name, 0)

        best = min(candidates, key=cost)
        names: list[str | None] = [previous, *(t.name for t in best)]
        for pair in itertools.pairwise(names):
            used[pair] = used.get(pair, 0) + 1
        firsts[best[0].name] = firsts.get(best[0].name, 0) + 1
        previous = best[-1].name
        orders.append(list(best))
    return orders


def _record(
    target: Target,
    dataset: DataSet,
    tool: Tool,
    m: Measurement,
    measured: bool,
    status: str,
    measurements: dict[str, list[Measurement]],
    failures: dict[str, str],
    progress: Callable[[str], None],
) -> None:
    """One timed run of a cell (upload or restore): its first failure kept, a progress line,
    and the figures when the run counts."""
    if not m.ok:
        phase = "run" if measured else "warm-up"
        detail = _first_line(m.stderr_tail) or f"exit status {m.exit_status}"
        failures.setdefault(tool.name, f"{phase} failed: {detail}")
    progress(
        f"{target.name:<6} {dataset.name:<11} {tool.name:<22} "
        f"{'run' if measured else 'warm-up':<7} {m.wall:7.2f}s "
        f"cpu {m.cpu:6.2f}s rss {m.peak_rss_kib / 1024:7.1f} MiB  {status}"
    )
    if measured:
        measurements[tool.name].append(m)


def run_cell(
    target: Target,
    dataset: DataSet,
    source: Path,
    runs: int,
    warmup: int,
    stamp: str,
    timeout: float,
    progress: Callable[[str], None] = _log,
) -> list[Row]:
    tools = with_baseline(target.tools(), dataset)
    rows: dict[str, Row] = {}
    active: list[Tool] = []
    for tool in tools:
        if dataset.memory_check and not tool.ours:
            continue
        reason = tool.unavailable or target.skip(dataset, tool)
        if reason:
            rows[tool.name] = Row(target.name, dataset, tool, None, reason)
        else:
            active.append(tool)
    measurements: dict[str, list[Measurement]] = {t.name: [] for t in active}
    failures: dict[str, str] = {}
    leftovers: list[Location] = []

    def one(tool: Tool, measured: bool, check: bool) -> None:
        """One run; a harness-side failure (server hiccup) is noted, never fatal to the cell."""
        try:
            _one(tool, measured, check)
        except Exception as exc:
            phase = "run" if measured else "warm-up"
            failures.setdefault(tool.name, f"{phase}: harness error {type(exc).__name__}: {exc}")
            progress(f"{target.name:<6} {dataset.name:<11} {tool.name:<22} {phase}: {exc!r}")

    def _one(tool: Tool, measured: bool, check: bool) -> None:
        run_id = f"{stamp}-{next(_ids):04d}-{target.name}-{dataset.name}"
        location = target.new_location(run_id)
        invocation = target.invocation(tool, source, location)
        out = target.ctx.work / "logs" / f"{run_id}.out"
        out.parent.mkdir(parents=True, exist_ok=True)
        cpu_before = server_cpu_seconds(target.server_pid)
        m = run_measured(
            invocation.argv,
            env=invocation.env,
            cwd=invocation.cwd,
            stdout_path=out,
            timeout=timeout,
        )
        cpu_after = server_cpu_seconds(target.server_pid)
        if cpu_before is not None and cpu_after is not None:
            m = attrs.evolve(m, server_cpu=cpu_after - cpu_before)
        status = "ok" if m.ok else f"exit {m.exit_status}"
        if m.ok and check:
            stored = target.count(location)
            # ours (sha256 off too) adds the run manifest
            expected = dataset.files + (0 if tool.is_peer else 1)
            if stored != expected:
                m = attrs.evolve(
                    m, exit_status=-1, stderr_tail=f"stored {stored} of {expected} files"
                )
                status = m.stderr_tail
        _record(target, dataset, tool, m, measured, status, measurements, failures, progress)
        if target.remove_right_away or dataset.file_size >= REMOVE_FILES_FROM:
            target.remove(location)
        else:
            leftovers.append(location)

    runs_here = 1 if dataset.memory_check else runs
    warm_here = 0 if dataset.memory_check else warmup
    limited = target.limit(dataset)
    limit_note = ""
    if limited is not None and (limited[0] < runs_here or limited[1] < warm_here):
        runs_here, warm_here = min(runs_here, limited[0]), min(warm_here, limited[1])
        limit_note = limited[2]
    for _ in range(warm_here):
        for tool in active:
            one(tool, measured=False, check=True)
    last = active[-1] if active and warm_here else None
    for round_no, order in enumerate(round_orders(active, runs_here, last)):
        for tool in order:
            one(tool, measured=True, check=(round_no == 0 and warm_here == 0))
    if dataset.files >= DEFER_REMOVAL_FILES:
        target.deferred += leftovers  # removed after the destination's last cell
    else:
        for location in leftovers:
            target.remove(location)
        if leftovers:
            os.sync()  # let the file system settle before the next cell's timing starts
    for tool in active:
        summary = Summary.of(measurements[tool.name])
        note = failures.get(tool.name, "")
        if summary and summary.failed:
            note = f"{summary.failed} of {summary.runs + summary.failed} runs failed; {note}"
        note = "; ".join(x for x in (limit_note, note) if x)
        rows[tool.name] = Row(target.name, dataset, tool, summary, note)
    return [rows[t.name] for t in tools if t.name in rows]


MANIFEST_NAME = ".service-backup-manifest.json"


def compare_trees(source: Path, restored: Path, full: bool) -> str | None:
    """Why ``restored`` is not the tree ``source`` (None: the same files, sizes and, when
    ``full``, bytes). The run manifest the peers download beside the files is ignored."""
    import filecmp

    def files(root: Path) -> dict[str, int]:
        found: dict[str, int] = {}
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                found[path.relative_to(root).as_posix()] = path.stat().st_size
        return found

    if not restored.is_dir():
        return f"no folder {restored.name} was created"
    want, got = files(source), files(restored)
    got.pop(MANIFEST_NAME, None)
    if want.keys() != got.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        return (
            f"restored tree differs: {len(missing)} missing {missing[:2]}, "
            f"{len(extra)} extra {extra[:2]}"
        )
    wrong = [k for k in want if want[k] != got[k]]
    if wrong:
        return f"restored tree differs: {len(wrong)} file(s) of the wrong size, e.g. {wrong[0]}"
    if full:
        for key in want:
            if not filecmp.cmp(source / key, restored / key, shallow=False):
                return f"restored tree differs: {key} has other bytes"
    return None


def run_prefix(config_file: Path, bin_dir: Path) -> str:
    """The dated folder (``YYYY/MM/DD``) of the newest complete run, from ``list --json``."""
    import json
    import subprocess

    out = subprocess.run(
        [str(bin_dir / "service-backup"), "list", str(config_file), "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        runs = [r for r in json.loads(out.stdout) if r["state"] == "complete"]
    except (ValueError, KeyError, TypeError):
        runs = []
    if not runs:
        raise RuntimeError(f"no complete run listed: {_first_line(out.stderr or out.stdout)}")
    return str(runs[0]["date"]).replace("-", "/")


def with_sync(invocation: Invocation, into: Path) -> Invocation:
    """The peer, then ``sync -f`` of the target's file system (ours ends with one syncfs)."""
    script = 'into="$1"; shift; "$@" && sync -f "$into"'
    return attrs.evolve(invocation, argv=["sh", "-c", script, "sh", str(into), *invocation.argv])


def run_restore_cell(
    target: Target,
    dataset: DataSet,
    source: Path,
    runs: int,
    warmup: int,
    stamp: str,
    timeout: float,
    progress: Callable[[str], None] = _log,
) -> list[Row]:
    """One restore cell: back ``dataset`` up once (not timed), then time ``service-backup
    restore`` of that run against the peers' downloads of the same objects, interleaved like
    the uploads, each into a fresh folder; the first run of every tool is compared byte for
    byte with the source, later ones by names and sizes."""
    tools = target.restore_tools()
    rows: dict[str, Row] = {}
    active: list[Tool] = []
    for tool in tools:
        reason = tool.unavailable or target.restore_skip(dataset, tool)
        if reason:
            rows[tool.name] = Row(target.name, dataset, tool, None, reason, RESTORE)
        else:
            active.append(tool)
    measurements: dict[str, list[Measurement]] = {t.name: [] for t in active}
    failures: dict[str, str] = {}
    checked: set[str] = set()
    folders: list[Path] = []

    run_id = f"{stamp}-{next(_ids):04d}-{target.name}-{dataset.name}-restore"
    (target.ctx.work / "logs").mkdir(parents=True, exist_ok=True)
    location = target.new_location(run_id)
    try:
        config_file = target.ctx.ours_config_file(
            run_id, target.name, target.ours_config(location), source
        )
        backup = run_measured(
            [str(target.ctx.bin / "manual-backup"), str(config_file)],
            stdout_path=target.ctx.work / "logs" / f"{run_id}-backup.out",
            timeout=timeout,
        )
        progress(
            f"{target.name:<6} {dataset.name:<11} {'(backup, not timed)':<22} "
            f"{'setup':<7} {backup.wall:7.2f}s  {'ok' if backup.ok else backup.stderr_tail}"
        )
        if not backup.ok:
            raise RuntimeError(f"the backup to restore failed: {_first_line(backup.stderr_tail)}")
        prefix = run_prefix(config_file, target.ctx.bin)
        root = target.ctx.work / "restore"
        root.mkdir(parents=True, exist_ok=True)

        def one(tool: Tool, measured: bool) -> None:
            phase = "run" if measured else "warm-up"
            try:
                _one(tool, measured)
            except Exception as exc:
                failures.setdefault(
                    tool.name, f"{phase}: harness error {type(exc).__name__}: {exc}"
                )
                progress(f"{target.name:<6} {dataset.name:<11} {tool.name:<22} {phase}: {exc!r}")

        def _one(tool: Tool, measured: bool) -> None:
            into = root / f"{run_id}-{next(_ids):04d}"
            folders.append(into)
            if tool.ours:
                invocation = target.ctx.restore_invocation(config_file, into)
            else:
                invocation = with_sync(target.download(tool, location, prefix, into), into)
            cpu_before = server_cpu_seconds(target.server_pid)
            m = run_measured(
                invocation.argv,
                env=invocation.env,
                cwd=invocation.cwd,
                stdout_path=target.ctx.work / "logs" / f"{into.name}.out",
                timeout=timeout,
            )
            cpu_after = server_cpu_seconds(target.server_pid)
            if cpu_before is not None and cpu_after is not None:
                m = attrs.evolve(m, server_cpu=cpu_after - cpu_before)
            status = "ok" if m.ok else f"exit {m.exit_status}"
            if m.ok:
                full = tool.name not in checked
                problem = compare_trees(source, into, full=full)
                checked.add(tool.name)
                if problem:
                    m = attrs.evolve(m, exit_status=-1, stderr_tail=problem)
                    status = problem
                elif full:
                    status = "ok, same bytes as the source"
            _record(target, dataset, tool, m, measured, status, measurements, failures, progress)
            if dataset.files < DEFER_REMOVAL_FILES:
                shutil.rmtree(into, ignore_errors=True)

        runs_here, warm_here = runs, warmup
        limited = target.limit(dataset)
        limit_note = ""
        if limited is not None and (limited[0] < runs_here or limited[1] < warm_here):
            runs_here, warm_here = min(runs_here, limited[0]), min(warm_here, limited[1])
            limit_note = limited[2]
        for _ in range(warm_here):
            for tool in active:
                one(tool, measured=False)
        last = active[-1] if active and warm_here else None
        for order in round_orders(active, runs_here, last):
            for tool in order:
                one(tool, measured=True)
    except Exception as exc:  # the backup to restore, or listing it: no tool can run
        progress(f"{target.name:<6} {dataset.name:<11} restore cell: {exc!r}")
        for tool in active:
            failures.setdefault(tool.name, f"not run: {type(exc).__name__}: {exc}")
    finally:
        if dataset.files >= DEFER_REMOVAL_FILES:
            target.deferred.append(location)
            target.deferred_folders += folders
        else:
            target.remove(location)
            os.sync()
    for tool in active:
        summary = Summary.of(measurements[tool.name])
        note = failures.get(tool.name, "")
        if summary and summary.failed:
            note = f"{summary.failed} of {summary.runs + summary.failed} runs failed; {note}"
        note = "; ".join(x for x in (limit_note, note) if x)
        rows[tool.name] = Row(target.name, dataset, tool, summary, note, RESTORE)
    return [rows[t.name] for t in tools if t.name in rows]
