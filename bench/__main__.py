"""``python -m bench [--quick] [--only local,s3] [--runs N]``: run the benchmark, write the table.

See ``docs/benchmarks.md``. Full run: the 1 GiB, 5,000 x 16 KiB, 200 x 1 MiB and 2 GiB (memory
check, ours only) sets to every destination, 3 measured runs per tool after a warm-up, a 60 s
idle window; then the restore cells (``--phase``): the 1 GiB and 5,000 x 16 KiB sets backed up
once and restored by ``service-backup restore`` beside the peers' downloads. ``--quick``: the
small sets only (50 x 1 MiB and 500 x 16 KiB), one run each, no warm-up, a 10 s idle window: a
smoke run that finishes in a few minutes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shutil
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path

from . import datasets, report, tools
from .overhead import all_types_config, measure_idle, measure_startup
from .runner import PHASES, RESTORE, UPLOAD, Row, run_cell, run_restore_cell
from .targets import RESTORE as RESTORE_OURS
from .targets import BenchContext, Target, Tool, with_baseline

REPO = Path(__file__).resolve().parent.parent
DESTINATIONS = ("local", "s3", "azure", "gcs", "scp")
TARGET_CLASSES = {
    "local": "bench.targets.local:LocalTarget",
    "s3": "bench.targets.s3:S3Target",
    "azure": "bench.targets.azure:AzureTarget",
    "gcs": "bench.targets.gcs:GcsTarget",
    "scp": "bench.targets.scp:ScpTarget",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sets, one run: a smoke run")
    p.add_argument(
        "--only",
        default=",".join(DESTINATIONS),
        help="comma-separated destinations (default: all five)",
    )
    p.add_argument(
        "--sets",
        default=None,
        help=f"comma-separated data sets (of {', '.join(datasets.ALL_SETS)})",
    )
    p.add_argument(
        "--phase",
        default=",".join(PHASES),
        help="comma-separated: upload (every set to the destination), restore (the sets marked "
        "for it, big-1g and many-16k, or the quick sets: backed up once, then restored; "
        "default: both)",
    )
    p.add_argument(
        "--runs", type=int, default=None, help="measured runs per tool (default 3, quick 1)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="warm-up runs per tool (default 1, quick 0)"
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="idle daemon window (default 60, quick 10; 0 skips it)",
    )
    p.add_argument(
        "--startup-runs",
        type=int,
        default=None,
        help="validate runs for start-up (default 10, quick 3; 0 skips it)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=REPO / "bench" / "work",
        help="data sets, peers' virtualenvs, server folders (default bench/work)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "latest.md",
        help="where the Markdown report goes (default bench/results/latest.md)",
    )
    p.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="the results the regression column compares with: a report's .md or .json "
        "(default: the --out file about to be replaced, its .json first)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="per upload, seconds")
    p.add_argument("--note", action="append", default=[], help="a line added under the table")
    p.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="the .json of an earlier run (repeatable): its destinations not run now (and its "
        "start-up and idle figures when those are skipped now) join this report, marked as such",
    )
    return p


def _load_target(name: str, ctx: BenchContext) -> Target:
    module_name, _, class_name = TARGET_CLASSES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(ctx)  # type: ignore[no-any-return]


def _failed_rows(
    name: str,
    sets: list[datasets.DataSet],
    reason: str,
    target: Target | None,
    phases: list[str],
) -> list[Row]:
    try:
        tool_list = target.tools() if target else [Tool("manual-backup", ours=True)]
    except Exception:
        tool_list = [Tool("manual-backup", ours=True)]
    try:
        restore_list = target.restore_tools() if target else [Tool(RESTORE_OURS, ours=True)]
    except Exception:
        restore_list = [Tool(RESTORE_OURS, ours=True)]
    rows = []
    if UPLOAD in phases:
        rows += [
            Row(name, d, t, None, reason)
            for d in sets
            for t in with_baseline(tool_list, d)
            if (t.ours or not d.memory_check) and d.runs_on(name)
        ]
    if RESTORE in phases:
        rows += [
            Row(name, d, t, None, reason, RESTORE)
            for d in sets
            for t in restore_list
            if d.restore and d.runs_on(name)
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in DESTINATIONS]
    if unknown:
        raise SystemExit(f"bench: unknown destination(s) {unknown}; choose from {DESTINATIONS}")
    if args.sets:
        try:
            sets = [datasets.ALL_SETS[x.strip()] for x in args.sets.split(",") if x.strip()]
        except KeyError as exc:
            raise SystemExit(
                f"bench: unknown data set {exc}; choose from {list(datasets.ALL_SETS)}"
            ) from None
    else:
        sets = list(datasets.QUICK_SETS if args.quick else datasets.FULL_SETS)
    phases = [x.strip() for x in args.phase.split(",") if x.strip()]
    if not phases or any(x not in PHASES for x in phases):
        raise SystemExit(f"bench: --phase {args.phase!r}: choose from {', '.join(PHASES)}")
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    idle_seconds = (
        args.idle_seconds if args.idle_seconds is not None else (10 if args.quick else 60)
    )
    startup_runs = args.startup_runs if args.startup_runs is not None else (3 if args.quick else 10)

    started = datetime.datetime.now(datetime.UTC)
    load_start = report.load_average()
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tools.ensure_gnu_time()
    ctx = BenchContext(repo=REPO, work=work)
    ctx.rclone = tools.ensure_rclone()
    if "s3" in only:
        ctx.aws = tools.ensure_awscli(work)

    bytecode = tools.ensure_bytecode(REPO, [ctx.aws.parent.parent] if ctx.aws else [])
    print(f"bench: {bytecode}", file=sys.stderr, flush=True)
    print("bench: generating data sets (once)", file=sys.stderr, flush=True)
    sources = {d.name: datasets.ensure(d, work / "data") for d in sets}
    stamp = started.strftime("%Y%m%dT%H%M%S")

    rows: list[Row] = []
    knobs: dict[str, list[tuple[str, str]]] = {}
    versions = report.our_versions(REPO)
    if ctx.rclone:
        versions["rclone"] = tools.version_of([ctx.rclone, "version"])
    for name in only:
        target: Target | None = None
        try:
            target = _load_target(name, ctx)
            knobs[name] = []
            if UPLOAD in phases:
                listed = {t.name: t for d in sets for t in with_baseline(target.tools(), d)}
                knobs[name] += [(t.name, t.knobs) for t in listed.values()]
            if RESTORE in phases and any(d.restore for d in sets):
                knobs[name] += [(f"restore: {t.name}", t.knobs) for t in target.restore_tools()]
            with ExitStack() as stack:
                stack.enter_context(target.serving())
                versions.update(target.versions())
                try:
                    cells = []
                    if UPLOAD in phases:
                        cells += [(run_cell, d) for d in sets if d.runs_on(name)]
                    if RESTORE in phases:
                        cells += [
                            (run_restore_cell, d) for d in sets if d.runs_on(name) and d.restore
                        ]
                    for cell, dataset in cells:
                        rows += cell(
                            target,
                            dataset,
                            sources[dataset.name],
                            runs,
                            warmup,
                            stamp,
                            args.timeout,
                        )
                finally:
                    for location in target.deferred:
                        target.remove(location)
                    for folder in target.deferred_folders:
                        shutil.rmtree(folder, ignore_errors=True)
        except Exception as exc:  # a server that cannot start: say so in the table
            reason = (
                f"not run: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            print(f"bench: {name}: {reason}", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            done = {(r.phase, r.dataset.name, r.tool.name) for r in rows if r.destination == name}
            rows += [
                r
                for r in _failed_rows(name, sets, reason, target, phases)
                if (r.phase, r.dataset.name, r.tool.name) not in done
            ]

    startup, idle = [], None
    if startup_runs > 0:
        print("bench: start-up (validate)", file=sys.stderr, flush=True)
        src = next(iter(sources.values()), work)
        config_all = all_types_config(work, src)
        config_local = all_types_config(work, src, types=["local"])
        startup.append(
            measure_startup(
                ctx.bin, config_all, "`service-backup validate`, all five types", startup_runs
            )
        )
        startup.append(
            measure_startup(
                ctx.bin, config_local, "`service-backup validate`, local only", startup_runs
            )
        )
    if idle_seconds > 0:
        print(f"bench: idle daemon ({idle_seconds:.0f} s)", file=sys.stderr, flush=True)
        src = next(iter(sources.values()), work)
        idle = measure_idle(ctx.bin, all_types_config(work, src), idle_seconds)

    finished = datetime.datetime.now(datetime.UTC)
    settings = (
        f"{'--quick, ' if args.quick else ''}{' and '.join(phases)}; "
        f"destinations {', '.join(only)}; "
        f"sets {', '.join(d.name for d in sets)}; {runs} measured run(s) after "
        f"{warmup} warm-up per tool"
    )
    if not only:
        settings = (
            "no uploads measured in this invocation: the rows come from the runs in the notes"
        )
    meta = {
        "settings": settings,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "load": [load_start, report.load_average()],
        "knobs": knobs,
        "versions": versions,
    }
    raw_rows, raw_startup, raw_idle = list(rows), list(startup), idle
    notes = list(args.note)
    notes.append(f"Our packages and the measured tools' virtualenvs: {bytecode}.")
    previous = report.load_previous(args.previous or args.out)
    for path in args.merge:
        earlier = report.load_raw(path)
        taken = {(r.phase, r.destination, r.dataset.name) for r in rows}
        new_rows = [
            r for r in earlier.rows if (r.phase, r.destination, r.dataset.name) not in taken
        ]
        rows += new_rows
        merged: dict[str, list[str]] = {}
        for r in new_rows:
            names = merged.setdefault(r.destination, [])
            if r.dataset.name not in names:
                names.append(r.dataset.name)
        for d in merged:
            if d not in knobs:
                knobs[d] = [tuple(k) for k in earlier.meta.get("knobs", {}).get(d, [])]  # type: ignore[misc]
        for key, value in earlier.meta.get("versions", {}).items():
            versions.setdefault(key, value)
        when = earlier.meta.get("started", "?")[:16].replace("T", " ")
        until = earlier.meta.get("finished", "?")[11:16]
        load = earlier.meta.get("load", ["?", "?"])
        if merged:
            own = {(r.destination, r.dataset.name) for r in earlier.rows}
            parts = []
            for d, names in merged.items():
                whole = {n for (dd, n) in own if dd == d} == set(names)
                parts.append(d if whole else f"{d} ({', '.join(names)})")
            notes.append(
                f"Rows for {'; '.join(parts)} come from an earlier run of the same harness "
                f"({when} to {until} UTC; {earlier.meta.get('settings', '?')}; load average "
                f"at start {load[0]}, at end {load[1]})."
            )
        if not startup and earlier.startup:
            startup = earlier.startup
            notes.append(f"Start-up figures come from an earlier run ({when} UTC).")
        if idle is None and earlier.idle is not None:
            idle = earlier.idle
            notes.append(f"Idle-daemon figures come from an earlier run ({when} UTC).")
    order = {d: i for i, d in enumerate(DESTINATIONS)}
    set_order = {name: i for i, name in enumerate(datasets.ALL_SETS)}
    rows.sort(
        key=lambda r: (r.phase != UPLOAD, order[r.destination], set_order[r.dataset.name])
    )  # keeps tools' order
    shown = [d for d in DESTINATIONS if d in only or any(r.destination == d for r in rows)]

    text = report.document(
        rows=rows,
        startup=startup,
        idle=idle,
        destinations=shown,
        knobs=knobs,
        versions=versions,
        settings=settings,
        started=started,
        finished=finished,
        load=(load_start, report.load_average()),
        notes=notes,
        previous=previous,
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    raw = report.raw_json(raw_rows, raw_startup, raw_idle, meta)
    args.out.with_suffix(".json").write_text(raw)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    broken = [r for r in rows if r.tool.ours and r.summary is None]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
