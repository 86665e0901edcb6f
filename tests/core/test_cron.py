"""robfig/cron v3 semantics, checked against next fire times computed by hand."""

from __future__ import annotations

import datetime

import pytest

from service_backup.cron import ScheduleError, parse_go_duration, parse_schedule

UTC = datetime.UTC
# Thursday 26 November 2026, 12:00:00 UTC.
NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def next_after(spec: str, now: datetime.datetime = NOW) -> datetime.datetime:
    fire = parse_schedule(spec, timezone=UTC).next_fire_time(now)
    assert fire is not None
    return fire.astimezone(UTC)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 11, year=2026):
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0 */6 * * *", at(26, 18)),  # five fields; strictly after now: minute hour dom month dow
        ("30 */6 * * *", at(26, 12, 30)),
        ("15 14 * * *", at(26, 14, 15)),
        ("0 0 0 * * *", at(27)),  # six fields: leading seconds
        ("*/20 * * * * *", at(26, 12, 0, 20)),
        ("10,40 13 * * *", at(26, 13, 10)),  # list
        ("0 9-11 * * *", at(27, 9)),  # range
        ("0 1-23/4 * * *", at(26, 13)),  # range with step
        ("0 5/7 * * *", at(26, 19)),  # "N/step" means N-max/step: 5, 12, 19
        ("0 0 * * 0", at(29)),  # Sunday = 0
        ("0 0 * * sun", at(29)),
        ("0 0 * * SAT", at(28)),
        ("0 0 * * mon-fri", at(27)),
        ("0 0 1 jan *", at(1, month=1, year=2027)),  # month names
        ("0 0 1 * ?", at(1, month=12)),  # ? is *
        ("0 0 ? * 4", at(3, month=12)),  # Thursday, next week (today's midnight passed)
        # Both day fields restricted: either matches (cron's OR), not both.
        ("0 0 1 * 6", at(28)),  # Saturday the 28th comes before the 1st
        ("0 0 27 * 0", at(27)),  # the 27th comes before Sunday
        ("@hourly", at(26, 13)),
        ("@daily", at(27)),
        ("@midnight", at(27)),
        ("@weekly", at(29)),  # Sunday midnight
        ("@monthly", at(1, month=12)),
        ("@yearly", at(1, month=1, year=2027)),
        ("@annually", at(1, month=1, year=2027)),
    ],
)
def test_next_fire_time(spec: str, expected: datetime.datetime) -> None:
    assert next_after(spec) == expected


def test_every_duration() -> None:
    schedule = parse_schedule("@every 1h30m", timezone=UTC)
    first = schedule.trigger.get_next_fire_time(None, NOW)
    second = schedule.trigger.get_next_fire_time(first, first)
    assert second - first == datetime.timedelta(hours=1, minutes=30)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("2m3s", 123), ("500ms", 0.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("spec", ["@every 0s", "@every 100ms", "@every 999ms"])
def test_every_below_one_second_is_refused(spec: str) -> None:
    # robfig rounded these up to 1s: "@every 0s" ran ten backups in ten seconds.
    with pytest.raises(ScheduleError, match="must be at least 1s"):
        parse_schedule(spec)


def test_every_one_second_is_still_allowed() -> None:
    schedule = parse_schedule("@every 1s", timezone=UTC)
    first = schedule.trigger.get_next_fire_time(None, NOW)
    assert schedule.trigger.get_next_fire_time(first, first) - first == datetime.timedelta(
        seconds=1
    )


@pytest.mark.parametrize("spec", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_refused(spec: str) -> None:
    with pytest.raises(ScheduleError, match="never fires"):
        parse_schedule(spec)


@pytest.mark.parametrize("spec", ["0 0 29 2 *", "0 0 31 2 1", "0 0 31 1-2 *"])
def test_rare_but_possible_schedules_are_accepted(spec: str) -> None:
    assert parse_schedule(spec, timezone=UTC).next_fire_time(NOW) is not None


def test_cron_tz_prefix() -> None:
    fire = parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *").next_fire_time(NOW)
    assert fire is not None
    assert fire.astimezone(UTC) == at(27, 0)  # 09:00 in Tokyo is 00:00 UTC


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("* * * * * 99", r"End of range \(99\) above maximum \(6\): 99 \(day-of-week field, 0-6\)"),
        ("0 0 * * 7", r"above maximum \(6\).*day-of-week"),
        ("61 * * * *", r"End of range \(61\) above maximum \(59\).*minute"),
        ("0 0 0 * *", r"Beginning of range \(0\) below minimum \(1\).*day-of-month"),
        ("0 5-2 * * *", r"Beginning of range \(5\) beyond end of range \(2\).*hour"),
        ("*/0 * * * *", r"Step of range should be a positive number"),
        ("* * *", r"expected 5 to 6 fields, found 3"),
        ("@fortnightly", r"unrecognized descriptor"),
        ("@every soon", r"failed to parse duration"),
        ("0 0 * foo *", r"failed to parse int from foo"),
        ("", r"empty spec string"),
    ],
)
def test_invalid_schedules(spec: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        parse_schedule(spec)
