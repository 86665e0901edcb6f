"""``cron_schedule`` with robfig/cron v3 semantics, on APScheduler triggers.

The Go release parsed schedules with robfig/cron (5 fields, or 6 with a leading seconds field;
descriptors such as ``@daily`` and ``@every 1h30m``). APScheduler differs in ways that would
silently move backups: it numbers weekdays from Monday, and it ANDs day-of-month with
day-of-week where cron ORs them when both are restricted. So the schedule is parsed here with
robfig's rules and error messages, and each field is handed to APScheduler as an explicit list.

Parsing (every ``validate`` and every config load, ``manual-backup`` included) needs no
APScheduler: its trigger is built, and APScheduler imported, only when ``Schedule.trigger`` is
first read, by the daemon or by something asking for fire times.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger


class ScheduleError(ConfigError):
    """An invalid ``cron_schedule``; logged as ``Error scheduling job``."""


@attrs.frozen
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int] = attrs.Factory(dict)


_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_DOWS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
SECOND = _Bounds("second", 0, 59)
MINUTE = _Bounds("minute", 0, 59)
HOUR = _Bounds("hour", 0, 23)
DOM = _Bounds("day-of-month", 1, 31)
MONTH = _Bounds("month", 1, 12, _MONTHS)
DOW = _Bounds("day-of-week", 0, 6, _DOWS)
_FIELDS = (SECOND, MINUTE, HOUR, DOM, MONTH, DOW)

_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_APS_DOW = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@attrs.frozen
class FieldValues:
    values: frozenset[int]
    star: bool  # "*" or "?" (robfig's star bit): unrestricted for the day-matching rule


def _number(text: str, bounds: _Bounds, expr: str) -> int:
    lowered = text.lower()
    if lowered in bounds.names:
        return bounds.names[lowered]
    if not re.fullmatch(r"\d+", text):
        raise ScheduleError(f"failed to parse int from {text}: {bounds.name} field '{expr}'")
    return int(text)


def _range(expr: str, bounds: _Bounds) -> FieldValues:
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    star = False
    if low_high[0] in ("*", "?"):
        if len(low_high) > 1:
            raise ScheduleError(f"too many hyphens: {expr}")
        start, end, star = bounds.low, bounds.high, True
    else:
        start = _number(low_high[0], bounds, expr)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _number(low_high[1], bounds, expr)
        else:
            raise ScheduleError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        if not re.fullmatch(r"\d+", range_and_step[1]):
            raise ScheduleError(f"failed to parse int from {range_and_step[1]}: {expr}")
        step = int(range_and_step[1])
        if len(low_high) == 1:  # "N/step" means "N-max/step"
            end = bounds.high
        if step > 1:
            star = False
    else:
        raise ScheduleError(f"too many slashes: {expr}")
    where = f" ({bounds.name} field, {bounds.low}-{bounds.high})"
    if start < bounds.low:
        raise ScheduleError(
            f"Beginning of range ({start}) below minimum ({bounds.low}): {expr}{where}"
        )
    if end > bounds.high:
        raise ScheduleError(f"End of range ({end}) above maximum ({bounds.high}): {expr}{where}")
    if start > end:
        raise ScheduleError(
            f"Beginning of range ({start}) beyond end of range ({end}): {expr}{where}"
        )
    if step == 0:
        raise ScheduleError(f"Step of range should be a positive number: {expr}{where}")
    return FieldValues(frozenset(range(start, end + 1, step)), star)


def _field(expr: str, bounds: _Bounds) -> FieldValues:
    values: set[int] = set()
    star = False
    for part in expr.split(","):
        parsed = _range(part, bounds)
        values |= parsed.values
        star = star or parsed.star
    return FieldValues(frozenset(values), star)


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(text: str) -> datetime.timedelta:
    """Go's ``time.ParseDuration`` (``1h30m``, ``90s``, ``1.5h``)."""
    if not text or not re.fullmatch(r"(\d+(\.\d*)?(h|ms|m|s|us|µs|ns))+", text):
        raise ScheduleError(f"failed to parse duration @every {text}: time: invalid duration")
    seconds = sum(
        float(n) * _DURATION_UNITS[u]
        for n, _, u in re.findall(r"(\d+(\.\d*)?)(h|ms|m|s|us|µs|ns)", text)
    )
    return datetime.timedelta(seconds=seconds)


@attrs.frozen
class Schedule:
    """A parsed schedule: what the operator wrote, and the APScheduler trigger it stands for.

    ``every`` (seconds) for ``@every``; otherwise ``fields``, the APScheduler ``CronTrigger``
    arguments shared by both day rules, with ``day``/``day_of_week``, and ``either_day``
    when both day fields are restricted (cron's OR).
    """

    text: str
    timezone: Any = None
    every: int | None = None
    fields: dict[str, str] = attrs.field(factory=dict, eq=False)
    day: str = "*"
    day_of_week: str = "*"
    either_day: bool = False

    @functools.cached_property
    def trigger(self) -> BaseTrigger:
        """The APScheduler trigger (APScheduler is imported here, on first use)."""
        from apscheduler.triggers.combining import OrTrigger
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.every is not None:
            return IntervalTrigger(seconds=self.every, timezone=self.timezone)
        common = {**self.fields, "timezone": self.timezone}
        if not self.either_day:
            # robfig: when either day field is unrestricted, both must match (an AND).
            return CronTrigger(day=self.day, day_of_week=self.day_of_week, **common)
        # Both restricted: a day matches when either does (an OR), as in every cron.
        return OrTrigger(
            [
                CronTrigger(day=self.day, day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=self.day_of_week, **common),
            ]
        )

    def next_fire_time(self, after: datetime.datetime) -> datetime.datetime | None:
        """The first fire time strictly after ``after`` (robfig's ``Next``)."""
        later = after + datetime.timedelta(microseconds=1)
        return self.trigger.get_next_fire_time(None, later)  # type: ignore[no-any-return]


#: The shortest ``@every`` accepted.
MIN_EVERY = datetime.timedelta(seconds=1)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February 29 exists, in leap years


def _day_exists(days: frozenset[int], months: frozenset[int]) -> bool:
    """Whether some day of the month named exists in some month named (``31 2`` does not)."""
    return any(min(days) <= _MONTH_DAYS[m - 1] for m in months)


def _csv(values: frozenset[int], names: list[str] | None = None) -> str:
    return ",".join(names[v] if names else str(v) for v in sorted(values))


def parse_schedule(text: str, timezone: Any = None) -> Schedule:
    """Parse ``text`` the way robfig/cron v3 did; raise ScheduleError with robfig's reason."""
    spec = text.strip()
    if not spec:
        raise ScheduleError("empty spec string")
    if spec.startswith(("TZ=", "CRON_TZ=")):
        zone_text, _, spec = spec.partition(" ")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            timezone = ZoneInfo(zone_text.split("=", 1)[1])
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"provided bad location {zone_text.split('=', 1)[1]}") from None
        spec = spec.strip()
    if spec.startswith("@every"):
        interval = parse_go_duration(spec.removeprefix("@every").strip())
        if interval < MIN_EVERY:
            # robfig rounded these up to one second: "@every 0s" ran a backup every second,
            # which is never what was meant. One second stays allowed (tests and drills).
            raise ScheduleError(
                f"@every {spec.removeprefix('@every').strip()}: the interval must be at least 1s"
            )
        seconds = int(interval.total_seconds())  # robfig drops fractions of a second
        return Schedule(text, timezone, every=seconds)
    if spec.startswith("@"):
        if spec not in _DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {spec}")
        spec = _DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ScheduleError(f"expected 5 to 6 fields, found {len(fields)}: {spec}")
    second, minute, hour, dom, month, dow = (
        _field(expr, bounds) for expr, bounds in zip(fields, _FIELDS, strict=True)
    )
    if dow.star and not dom.star and not _day_exists(dom.values, month.values):
        raise ScheduleError(f"the schedule never fires (no such day in the months named): {spec}")
    common = {
        "second": _csv(second.values),
        "minute": _csv(minute.values),
        "hour": _csv(hour.values),
        "month": _csv(month.values),
    }
    return Schedule(
        text,
        timezone,
        fields=common,
        day=_csv(dom.values),
        day_of_week=_csv(dow.values, _APS_DOW),
        either_day=not (dom.star or dow.star),
    )
