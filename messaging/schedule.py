"""When a message may go out: coalescing, quiet hours, the daily cap and retry backoff.

Plain functions on aware datetimes; times of day are read in the customer's timezone (else the
brand's), so quiet hours follow daylight-saving changes.
"""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

# Backoff for retryable failures: 30 s doubling per attempt, at most an hour, with jitter so
# a provider outage does not end in a thundering herd.
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 3600.0
WEBHOOK_RETRY_WINDOW = dt.timedelta(hours=24)


def parse_clock(value: str) -> dt.time:
    """Read an "HH:MM" time of day."""
    hours, _, minutes = value.partition(":")
    return dt.time(int(hours), int(minutes))


def zone(name: str | None, fallback: str) -> zoneinfo.ZoneInfo:
    """Return the named timezone, else the fallback (an unknown name is not an error here)."""
    for candidate in (name, fallback):
        if candidate:
            try:
                return zoneinfo.ZoneInfo(candidate)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return zoneinfo.ZoneInfo("UTC")


def quiet_until(
    at: dt.datetime, tz: zoneinfo.ZoneInfo, start: dt.time, end: dt.time
) -> dt.datetime | None:
    """Return when quiet hours end if `at` falls inside them (in UTC), else None.

    Quiet hours run from `start` to `end` local time and may span midnight (21:00 to 08:00);
    equal times mean none. The end is a wall-clock time, so it moves with daylight saving.
    """
    if start == end:
        return None
    local = at.astimezone(tz)
    now = local.time().replace(tzinfo=None)
    if start < end:
        if not start <= now < end:
            return None
        end_day = local.date()
    elif now >= start:
        end_day = local.date() + dt.timedelta(days=1)
    elif now < end:
        end_day = local.date()
    else:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=tz).astimezone(dt.UTC)


def day_start(at: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Return the start of `at`'s local day, in UTC."""
    local = at.astimezone(tz).date()
    return dt.datetime.combine(local, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


def next_day_start(at: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Return the start of the local day after `at`'s, in UTC."""
    local = at.astimezone(tz).date() + dt.timedelta(days=1)
    return dt.datetime.combine(local, dt.time(0), tzinfo=tz).astimezone(dt.UTC)


def retry_delay(
    attempts: int, retry_after: float | None, rng: random.Random | None = None
) -> float:
    """Return seconds to wait before the next attempt: exponential, jittered, never sooner
    than the provider's Retry-After."""
    draw: float = (rng or random).uniform(0.5, 1.0)
    growth = float(2 ** max(0, attempts - 1))
    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * growth) * draw
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
