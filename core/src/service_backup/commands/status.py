"""``service-backup status CONFIG [--max-age DURATION] [--json]``: did the backups work?

The answer comes from the destinations themselves (the newest dated folder with a manifest),
never from local state, so it is true on a freshly recreated VM and for runs made from
elsewhere. Exit 0 when every destination has a complete run younger than ``--max-age``
(default 26h), 1 otherwise (a destination without one, or one that cannot be listed, counts
as failing): a Nagios or cron check as it stands.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from typing import Any

import attrs

from ..errors import ConfigError

HELP = "the newest complete run of every destination and its age (exit 1 if too old or none)"
DEFAULT_MAX_AGE = "26h"
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``30s``, ``90m``, ``26h``, ``2d`` → seconds; ValueError with a one-line reason."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"'{text}' is not a duration: a positive whole number followed by s, m, h or d "
            "(e.g. 30s, 90m, 26h, 2d)"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-age", metavar="DURATION", default=DEFAULT_MAX_AGE,
        help=f"oldest acceptable complete run: 30s, 90m, 26h, 2d (default {DEFAULT_MAX_AGE})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON array on stdout")


@attrs.frozen
class DestinationStatus:
    """One row; ``problem`` says why it is not ok (the JSON shape is fixed, so it goes to
    the table, or to stderr with ``--json``)."""

    destination: str
    last_complete_date: str | None
    finished_at: str | None
    age_seconds: int | None
    ok: bool
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "last_complete_date": self.last_complete_date,
            "finished_at": self.finished_at,
            "age_seconds": self.age_seconds,
            "ok": self.ok,
        }


def parse_timestamp(text: str) -> datetime.datetime:
    """An RFC 3339 time as manifests write it (``Z``, up to nanosecond digits)."""
    text = text.strip()
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("no time zone")
    return when


def destination_status(
    spec: Any, config: Any, registry: Any, max_age: int, now: datetime.datetime
) -> DestinationStatus:
    """Open one destination, find its newest complete run, judge its age. Never raises."""
    from ..catalog import run_folders, run_root
    from ..destination import DestinationContext
    from ..secret import scrub, secret_field_values

    name = spec.display_name

    def failing(problem: str) -> DestinationStatus:
        problem = " ".join(scrub(problem, secret_field_values(config)).split())
        return DestinationStatus(name, None, None, None, False, problem)

    try:
        dtype = registry.destination_type(spec.type)
        with dtype.factory(spec.config, DestinationContext(name)) as destination:
            folders = run_folders(destination, run_root(config))
    except Exception as exc:
        from ..errors import BackupError

        reason = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        return failing(f"cannot be listed: {reason}")
    newest = next((f for f in folders if f.complete), None)
    if newest is None or newest.manifest is None:
        incomplete = f" ({len(folders)} incomplete)" if folders else ""
        return failing(f"no complete run{incomplete}")
    date = newest.date.isoformat()
    finished_at = newest.manifest.finished_at
    try:
        age = int((now - parse_timestamp(finished_at)).total_seconds())
    except ValueError:
        return DestinationStatus(
            name, date, finished_at, None, False, f"finished_at '{finished_at}' is not a time"
        )
    if age > max_age:
        return DestinationStatus(
            name, date, finished_at, age, False, f"older than {_age_text(max_age)}"
        )
    return DestinationStatus(name, date, finished_at, age, True)


def _age_text(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def table(rows: list[DestinationStatus]) -> str:
    """Aligned columns for people; the last column says ok or what is wrong."""
    lines = [("DESTINATION", "LAST COMPLETE", "FINISHED AT", "AGE", "STATUS")]
    for row in rows:
        lines.append(
            (
                row.destination,
                row.last_complete_date or "-",
                row.finished_at or "-",
                _age_text(row.age_seconds),
                "ok" if row.ok else f"FAIL: {row.problem}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True))
        + "  "
        + line[4]
        for line in lines
    )


def run(args: argparse.Namespace) -> int:
    from .. import gc_pause
    from ..config import load_config
    from ..plugins import load_registry

    try:
        max_age = parse_duration(args.max_age)
    except ValueError as exc:
        print(f"service-backup status: --max-age {exc}", file=sys.stderr)
        return EXIT_INVALID
    _quiet_logs()
    try:
        registry = load_registry()
        config = load_config(args.config, registry)
    except ConfigError as exc:
        print(f"service-backup: invalid config {args.config}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    gc_pause.done()  # start-up is over: the collector runs again for the listing
    now = datetime.datetime.now(datetime.UTC)
    rows = [destination_status(s, config, registry, max_age, now) for s in config.destinations]
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=1))
        for row in rows:
            if row.problem:
                print(f"{row.destination}: {row.problem}", file=sys.stderr)
    elif rows:
        print(table(rows))
    else:
        print("no destinations configured: nothing to check")
    return EXIT_OK if all(row.ok for row in rows) else EXIT_FAILED


def _quiet_logs() -> None:
    """``status`` prints for people and scripts: plugins' debug lines stay out of the way."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR", format="{message}")
