"""The retention policy as a pure function: hand-computed cases and properties."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service_backup.retention import RetentionPolicy, decide

D = datetime.date


def kept(policy: RetentionPolicy, dates: list[datetime.date]) -> list[datetime.date]:
    return [d.date for d in decide(policy, dates) if d.keep]


def daily(start: datetime.date, days: int) -> list[datetime.date]:
    return [start + datetime.timedelta(days=i) for i in range(days)]


def test_all_zero_policy_keeps_everything() -> None:
    dates = daily(D(2026, 1, 1), 40)
    assert kept(RetentionPolicy(), dates) == sorted(dates, reverse=True), (
        "a policy with every value 0 must keep every run (Part 1 behaviour)"
    )


def test_keep_last_keeps_the_newest() -> None:
    dates = daily(D(2026, 3, 1), 10)
    assert kept(RetentionPolicy(keep_last=3), dates) == [
        D(2026, 3, 10),
        D(2026, 3, 9),
        D(2026, 3, 8),
    ]


def test_keep_daily_counts_dates_that_have_a_run() -> None:
    dates = [D(2026, 3, 1), D(2026, 3, 5), D(2026, 3, 6), D(2026, 3, 20)]
    assert kept(RetentionPolicy(keep_daily=3), dates) == [
        D(2026, 3, 20),
        D(2026, 3, 6),
        D(2026, 3, 5),
    ]


def test_keep_monthly_across_a_year_boundary() -> None:
    dates = daily(D(2025, 11, 20), 60)  # 2025-11-20 .. 2026-01-18
    assert kept(RetentionPolicy(keep_monthly=3), dates) == [
        D(2026, 1, 18),
        D(2025, 12, 31),
        D(2025, 11, 30),
    ], "keep_monthly keeps the newest run of each of the last 3 months"


def test_keep_yearly_newest_of_each_year() -> None:
    dates = [D(2024, 2, 1), D(2024, 12, 31), D(2025, 6, 1), D(2026, 1, 1)]
    assert kept(RetentionPolicy(keep_yearly=2), dates) == [D(2026, 1, 1), D(2025, 6, 1)]


def test_keep_weekly_uses_iso_weeks_including_week_53() -> None:
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 2026-W53; 2027-01-04 starts 2027-W01.
    dates = [D(2026, 12, 27), D(2026, 12, 28), D(2027, 1, 1), D(2027, 1, 3), D(2027, 1, 4)]
    assert D(2026, 12, 28).isocalendar()[:2] == (2026, 53)
    assert kept(RetentionPolicy(keep_weekly=3), dates) == [
        D(2027, 1, 4),  # 2027-W01
        D(2027, 1, 3),  # newest of 2026-W53, which spans the new year
        D(2026, 12, 27),  # 2026-W52
    ]


def test_several_rules_keeping_one_run_list_every_reason() -> None:
    dates = daily(D(2026, 5, 1), 31)
    decisions = decide(RetentionPolicy(keep_last=1, keep_daily=2, keep_monthly=1), dates)
    newest = decisions[0]
    assert newest.date == D(2026, 5, 31)
    assert newest.reasons == ("last snapshot", "daily snapshot", "monthly snapshot")
    assert decisions[1].reasons == ("daily snapshot",)
    assert not decisions[2].keep


def test_a_year_of_daily_runs_with_the_usual_policy() -> None:
    dates = daily(D(2026, 1, 1), 365)
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12)
    result = kept(policy, dates)
    # Hand-computed: 2026-12-31 is a Thursday in ISO week 2026-W53. Daily: Dec 25-31.
    # Weekly (4): W53 (Dec 31), W52 (Sun Dec 27), W51 (Sun Dec 20), W50 (Sun Dec 13).
    # Monthly (12): the last day of every month of 2026.
    month_ends = [D(2026, m + 1, 1) - datetime.timedelta(days=1) for m in range(1, 12)]
    expected = set(daily(D(2026, 12, 25), 7)) | {D(2026, 12, 20), D(2026, 12, 13)}
    expected |= set(month_ends) | {D(2026, 12, 31)}
    assert set(result) == expected, f"unexpected keep set: {sorted(set(result) ^ expected)}"
    assert len(result) == 20


@pytest.mark.parametrize("value", [-1, -7])
def test_negative_values_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="keep_daily: must be 0 or more"):
        RetentionPolicy(keep_daily=value)


policies = st.builds(
    RetentionPolicy,
    keep_last=st.integers(0, 5),
    keep_daily=st.integers(0, 5),
    keep_weekly=st.integers(0, 4),
    keep_monthly=st.integers(0, 4),
    keep_yearly=st.integers(0, 3),
)
run_dates = st.lists(st.dates(D(2020, 1, 1), D(2030, 12, 31)), min_size=0, max_size=60)


@settings(max_examples=200, deadline=None)
@given(policies, run_dates)
def test_properties(policy: RetentionPolicy, dates: list[datetime.date]) -> None:
    decisions = decide(policy, dates)
    ordered = sorted(set(dates), reverse=True)
    assert [d.date for d in decisions] == ordered, "one decision per run date, newest first"
    keep = {d.date for d in decisions if d.keep}
    if ordered and policy.active:
        assert ordered[0] in keep, "the newest run is always kept when any rule is non-zero"
    if not policy.active:
        assert keep == set(ordered)
    by_last = {d.date for d in decisions if "last snapshot" in d.reasons}
    assert by_last == set(ordered[: policy.keep_last]), "keep_last keeps exactly the N newest"
    for name, count in (("daily", policy.keep_daily), ("weekly", policy.keep_weekly)):
        assert sum(f"{name} snapshot" in d.reasons for d in decisions) <= count
    monthly = [d.date for d in decisions if "monthly snapshot" in d.reasons]
    assert len({(d.year, d.month) for d in monthly}) == len(monthly), "one run per month"
    assert len(keep) <= max(
        len(ordered) if not policy.active else 0,
        policy.keep_last
        + policy.keep_daily
        + policy.keep_weekly
        + policy.keep_monthly
        + policy.keep_yearly,
    )
