"""Quiet hours, the daily cap's day and backoff, on fixed clocks across timezones and DST."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messaging.compose import settle_news
from messaging.context import LineInfo, NewsItem
from messaging.schedule import (
    day_start,
    next_day_start,
    parse_clock,
    quiet_until,
    retry_delay,
    zone,
)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
NIGHT = (parse_clock("21:00"), parse_clock("08:00"))


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("at", "tz", "until"),
    [
        # 13:00 in New York: not quiet.
        (utc(2026, 6, 1, 17, 0), NEW_YORK, None),
        # 22:00 EDT: quiet until 08:00 EDT next morning (12:00 UTC).
        (utc(2026, 6, 2, 2, 0), NEW_YORK, utc(2026, 6, 2, 12, 0)),
        # 07:59 EDT: one more minute.
        (utc(2026, 6, 2, 11, 59), NEW_YORK, utc(2026, 6, 2, 12, 0)),
        # 08:00 sharp is allowed; 21:00 sharp is not.
        (utc(2026, 6, 2, 12, 0), NEW_YORK, None),
        (utc(2026, 6, 2, 1, 0), NEW_YORK, utc(2026, 6, 2, 12, 0)),
        # The same instant is mid-morning in Tokyo.
        (utc(2026, 6, 2, 2, 0), TOKYO, None),
        # Clocks go back on 1 Nov 2026 in New York: 22:00 EDT on 31 Oct, the morning is EST,
        # so 08:00 local is 13:00 UTC, not 12:00.
        (utc(2026, 11, 1, 2, 0), NEW_YORK, utc(2026, 11, 1, 13, 0)),
        # Clocks go forward on 8 Mar 2026: 23:00 EST on 7 Mar, 08:00 EDT is 12:00 UTC.
        (utc(2026, 3, 8, 4, 0), NEW_YORK, utc(2026, 3, 8, 12, 0)),
    ],
)
def test_quiet_hours_follow_the_local_clock(
    at: dt.datetime, tz: zoneinfo.ZoneInfo, until: dt.datetime | None
) -> None:
    assert quiet_until(at, tz, *NIGHT) == until


def test_quiet_hours_within_one_day_and_none() -> None:
    lunch = (parse_clock("12:00"), parse_clock("13:30"))
    assert quiet_until(utc(2026, 6, 1, 12, 15), dt.UTC, *lunch) == utc(2026, 6, 1, 13, 30)  # type: ignore[arg-type]
    assert quiet_until(utc(2026, 6, 1, 14, 0), dt.UTC, *lunch) is None  # type: ignore[arg-type]
    same = (parse_clock("09:00"), parse_clock("09:00"))
    assert quiet_until(utc(2026, 6, 1, 9, 0), dt.UTC, *same) is None  # type: ignore[arg-type]


@given(st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1)))
def test_quiet_hours_end_outside_quiet_hours_and_later(naive: dt.datetime) -> None:
    at = naive.replace(tzinfo=dt.UTC)
    until = quiet_until(at, NEW_YORK, *NIGHT)
    if until is not None:
        assert until > at
        assert until - at <= dt.timedelta(hours=12)
        assert quiet_until(until, NEW_YORK, *NIGHT) is None


def test_days_start_at_local_midnight_across_dst() -> None:
    at = utc(2026, 11, 1, 15, 0)  # 10:00 EST, the day clocks went back
    assert day_start(at, NEW_YORK) == utc(2026, 11, 1, 4, 0)  # midnight was still EDT
    assert next_day_start(at, NEW_YORK) == utc(2026, 11, 2, 5, 0)


def test_an_unknown_zone_falls_back() -> None:
    assert zone("Mars/Olympus", "Europe/Berlin") == zoneinfo.ZoneInfo("Europe/Berlin")
    assert zone(None, "") == zoneinfo.ZoneInfo("UTC")


def test_backoff_grows_jitters_caps_and_honours_retry_after() -> None:
    rng = random.Random(7)
    first = [retry_delay(1, None, rng) for _ in range(50)]
    assert all(15 <= d <= 30 for d in first)
    assert len(set(first)) > 40  # jittered, not one fixed delay
    assert all(30 <= retry_delay(2, None, rng) <= 60 for _ in range(20))
    assert all(retry_delay(30, None, rng) <= 3600 for _ in range(20))
    assert retry_delay(1, 120.0, rng) == 120.0


def _line(ref: str, status: str = "backordered") -> LineInfo:
    return LineInfo(ref=ref, title=f"Item {ref}", quantity=1, status=status)


def _move(ref: str, old: str, new: str) -> NewsItem:
    return NewsItem(
        "eta_changed",
        ref,
        {"lines": [{"line": ref, "old": {"ship_by": old}, "new": {"ship_by": new}}]},
    )


def test_an_eta_that_moved_and_moved_back_is_no_news() -> None:
    lines = {"1": _line("1"), "2": _line("2")}
    items = [
        _move("1", "2026-11-20", "2026-11-27"),
        _move("2", "2026-11-20", "2026-11-25"),
        _move("1", "2026-11-27", "2026-11-20"),
    ]
    settled = settle_news(items, lines)
    assert len(settled) == 1
    assert [line["line"] for line in settled[0].data["lines"]] == ["2"]
    assert settled[0].data["lines"][0]["direction"] == "later"


def test_moves_add_up_to_one_change_per_line() -> None:
    items = [_move("1", "2026-11-20", "2026-11-27"), _move("1", "2026-11-27", "2026-11-30")]
    (settled,) = settle_news(items, {"1": _line("1")})
    (line,) = settled.data["lines"]
    assert line["old"]["ship_by"] == "2026-11-20"
    assert line["new"]["ship_by"] == "2026-11-30"


def test_news_about_lines_no_longer_waiting_is_dropped_and_the_rest_ordered() -> None:
    lines = {"1": _line("1", "in_stock"), "2": _line("2")}
    items = [
        NewsItem("backordered", "order", {}),
        _move("1", "2026-11-20", "2026-11-27"),
        NewsItem("window_at_risk", "1", {"lines": ["1"]}),
        NewsItem("items_ready", "1", {"lines": ["1"]}),
    ]
    assert [n.trigger for n in settle_news(items, lines)] == ["items_ready", "backordered"]
