"""Retention: which complete runs a destination keeps, restic ``forget`` style.

The policy is a pure function of the run dates (``decide``), so it can be reasoned about and
tested on its own; ``service_backup.prune`` applies it to a destination.

Semantics (restic's ``forget --keep-*``, with one complete run per date): walking the runs
newest first, ``keep_last`` keeps the N newest; ``keep_daily`` / ``keep_weekly`` (ISO weeks)
/ ``keep_monthly`` / ``keep_yearly`` keep the newest run of each of the last N days / weeks /
months / years that have one. A run is kept when any rule keeps it. A policy whose values
are all 0 keeps everything (Part 1 behaviour).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable, Sequence

import attrs


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: must be 0 or more, not {value}")


@attrs.frozen
class RetentionPolicy:
    """``retention:`` of one destination entry."""

    keep_last: int = attrs.field(default=0, validator=_non_negative)
    keep_daily: int = attrs.field(default=0, validator=_non_negative)
    keep_weekly: int = attrs.field(default=0, validator=_non_negative)
    keep_monthly: int = attrs.field(default=0, validator=_non_negative)
    keep_yearly: int = attrs.field(default=0, validator=_non_negative)

    @property
    def active(self) -> bool:
        """False when every value is 0: nothing is ever deleted."""
        return any(attrs.astuple(self))

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in attrs.fields(type(self))]
        return ", ".join(p for p in parts if not p.endswith("=0")) or "keep everything"


@attrs.frozen
class Decision:
    """One run's fate: kept (with every rule that keeps it, as restic lists them) or not."""

    date: datetime.date
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


@attrs.define
class _Rule:
    """One ``keep_*`` rule while walking the runs: how many buckets it may still keep."""

    name: str
    left: int
    bucket: Callable[[datetime.date], Hashable]
    last: Hashable = None

    def keeps(self, date: datetime.date) -> bool:
        if self.left <= 0:
            return False
        value = self.bucket(date)
        if value == self.last:
            return False
        self.left, self.last = self.left - 1, value
        return True


def _rules(policy: RetentionPolicy) -> list[_Rule]:
    return [
        _Rule("last", policy.keep_last, lambda d: d),
        _Rule("daily", policy.keep_daily, lambda d: d),
        _Rule("weekly", policy.keep_weekly, lambda d: d.isocalendar()[:2]),
        _Rule("monthly", policy.keep_monthly, lambda d: (d.year, d.month)),
        _Rule("yearly", policy.keep_yearly, lambda d: d.year),
    ]


def decide(policy: RetentionPolicy, dates: Sequence[datetime.date]) -> list[Decision]:
    """Keep/delete for each date (complete runs, one per date), newest first.

    With an inactive policy every run is kept (reason ``no retention``).
    """
    ordered = sorted(set(dates), reverse=True)
    if not policy.active:
        return [Decision(d, ("no retention",)) for d in ordered]
    rules = _rules(policy)
    return [
        Decision(date, tuple(f"{r.name} snapshot" for r in rules if r.keeps(date)))
        for date in ordered
    ]
