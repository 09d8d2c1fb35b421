"""Durations and dates written as text, the way Conductor's WAIT task reads them.

`duration`: "30s", "30 seconds", "1 minute", "2h 30m", "1d", "1 day 2 hours" (days, hours,
minutes, seconds, in that order, each optional; abbreviations d, h/hr/hrs, m/min/mins,
s/sec/secs; plural or not). A bare number is seconds.

`until`: "2024-01-01 10:00 UTC", "2024-01-01 10:00", "2024-01-01" (Conductor's formats), and
ISO 8601 ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00+02:00"). A time without a zone is
UTC. A zone is UTC, GMT, Z or an offset (+02:00, +0200, UTC+2); named zones such as
"Europe/Paris" would need the time zone database, which the pure core does not read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["parse_duration_seconds", "parse_until_ms"]

_DURATION = re.compile(
    r"^\s*(?:(\d+)\s*(?:days?|d)(?![a-z]))?\s*,?\s*(?:(\d+)\s*(?:hours?|hrs?|h)(?![a-z]))?\s*,?\s*"
    r"(?:(\d+)\s*(?:minutes?|mins?|m)(?![a-z]))?\s*,?\s*(?:(\d+)\s*(?:seconds?|secs?|s)(?![a-z]))?\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")

_DATE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|UTC|GMT|(?:UTC|GMT)?\s*[+-]\d{1,2}(?::?\d{2})?)?\s*$", re.IGNORECASE)
_OFFSET = re.compile(r"([+-])(\d{1,2})(?::?(\d{2}))?$")


def parse_duration_seconds(text: str) -> float:
    """Seconds in `text`; ValueError naming the accepted forms."""
    if _NUMBER.match(text):
        return float(text)
    match = _DURATION.match(text)
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"'{text}' is not a duration; write e.g. '30s', '30 seconds', '5 minutes', '2h 30m', "
                         "'1 day' or a number of seconds")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_until_ms(text: str) -> int:
    """Epoch milliseconds of a date or date-time in `text`; ValueError naming the formats."""
    match = _DATE.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a date; write e.g. '2024-01-01 10:00 UTC', '2024-01-01 10:00', "
                         "'2024-01-01' or ISO 8601 ('2024-01-01T10:00:00Z')")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = UTC
    if zone and zone.strip().upper() not in ("Z", "UTC", "GMT"):
        offset = _OFFSET.search(zone.replace(" ", ""))
        if not offset:
            raise ValueError(f"'{text}': the zone '{zone}' is not UTC, GMT, Z or an offset such as +02:00")
        sign = -1 if offset.group(1) == "-" else 1
        delta = timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0))
        if delta >= timedelta(hours=24):
            raise ValueError(f"'{text}': the offset '{zone}' is not below 24 hours")
        tz = timezone(sign * delta)
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          int((fraction or "0").ljust(6, "0")[:6]), tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"'{text}' is not a valid date: {exc}") from None
    return int(moment.timestamp() * 1000)
