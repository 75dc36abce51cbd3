"""The mesh's days: spend counts on the local day it happened, and daily caps reset at local
midnight, in the configured IANA time zone (zoneinfo). A day is not always 24 hours: midnight is
found on the calendar, never by adding 86400 s, so a DST day resets at the right instant."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def day_of(t: float, zone: ZoneInfo) -> str:
    """The local day (YYYY-MM-DD) the instant `t` falls on."""
    return datetime.fromtimestamp(t, zone).date().isoformat()


def start_of(day: str, zone: ZoneInfo) -> float:
    """The first instant of a local day. Where a zone skips midnight itself (a DST change at
    00:00), the non-existent 00:00 is read with the offset before the change: the instant of the
    change, the first one of that day."""
    return datetime.combine(date.fromisoformat(day), time(0), tzinfo=zone).timestamp()


def next_midnight(t: float, zone: ZoneInfo) -> float:
    """When the local day of `t` ends."""
    following = datetime.fromtimestamp(t, zone).date() + timedelta(days=1)
    return start_of(following.isoformat(), zone)


def days_back(t: float, zone: ZoneInfo, count: int) -> tuple[str, str]:
    """The range of `count` local days ending with today's (first, last)."""
    today = datetime.fromtimestamp(t, zone).date()
    return (today - timedelta(days=count - 1)).isoformat(), today.isoformat()
