"""Time arithmetic for push: cadences, digest slots in a person's time zone, quiet hours, back-off.

A *slot* is the instant a digest is due: daily at `hour` local time, or weekly on `weekday` at `hour`.
The slot names the digest's window, so the same slot always yields the same idempotency key.

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
>>> latest_slot(now, cadence="daily", zone=resolve_zone("Europe/Berlin")[0], hour=9, weekday=0)
datetime.datetime(2026, 11, 28, 8, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CADENCES = ("daily", "weekly", "off")
DEFAULT_CADENCE = "weekly"
MAX_BACKOFF = 3
# Days between digests for each back-off level; daily readers who ignore digests drop to weekly.
_PERIOD_DAYS = {"daily": (1, 7, 14, 28), "weekly": (7, 14, 28, 28)}
# A slot counts as due when this close to the end of the period (digest hours drift with DST).
_SLACK = timedelta(hours=2)


def resolve_cadence(value: str | None) -> tuple[str, str | None]:
    """(cadence, problem): an unknown cadence such as "hourly" falls back to the default, with a reason."""
    cadence = (value or DEFAULT_CADENCE).strip().lower()
    if cadence in CADENCES:
        return cadence, None
    return DEFAULT_CADENCE, f"unknown cadence {value!r} (use daily, weekly or off); using {DEFAULT_CADENCE}"


def resolve_zone(name: str | None) -> tuple[ZoneInfo, str | None]:
    """(zone, problem): an unknown IANA name falls back to UTC, with a reason."""
    if not name:
        return ZoneInfo("UTC"), None
    try:
        return ZoneInfo(name), None
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"unknown time zone {name!r} (use an IANA name like Europe/Berlin); using UTC"


def latest_slot(now: datetime, *, cadence: str, zone: ZoneInfo, hour: int, weekday: int) -> datetime | None:
    """The most recent digest slot at or before `now` (UTC), or None when the cadence is off."""
    if cadence not in ("daily", "weekly"):
        return None
    local = now.astimezone(zone)
    day = local.date()
    for back in range(0, 8):
        candidate_day = day - timedelta(days=back)
        if cadence == "weekly" and candidate_day.weekday() != weekday:
            continue
        slot = datetime(candidate_day.year, candidate_day.month, candidate_day.day, hour, tzinfo=zone)
        if slot <= local:
            return slot.astimezone(UTC)
    return None  # pragma: no cover - a week always holds a slot


def period(cadence: str, backoff: int) -> timedelta:
    """Time between digests for a cadence at a back-off level (0 = as chosen)."""
    days = _PERIOD_DAYS.get(cadence, _PERIOD_DAYS[DEFAULT_CADENCE])
    return timedelta(days=days[max(0, min(backoff, MAX_BACKOFF))])


def due_after_backoff(slot: datetime, last_digest: datetime | None, *, cadence: str, backoff: int) -> bool:
    """True when enough time has passed since the last digest for this back-off level."""
    if last_digest is None or backoff <= 0:
        return True
    return slot - last_digest >= period(cadence, backoff) - _SLACK


def in_quiet_hours(now: datetime, zone: ZoneInfo, start: int, end: int) -> bool:
    """True inside [start, end) local time; the range may wrap midnight; start == end means none."""
    if start == end:
        return False
    hour = now.astimezone(zone).hour
    return start <= hour < end if start < end else hour >= start or hour < end


def quiet_hours_end(now: datetime, zone: ZoneInfo, end: int) -> datetime:
    """The next instant (UTC) at local hour `end`, when quiet hours are over."""
    local = now.astimezone(zone)
    target = datetime(local.year, local.month, local.day, end, tzinfo=zone)
    if target <= local:
        day = local.date() + timedelta(days=1)
        target = datetime(day.year, day.month, day.day, end, tzinfo=zone)
    return target.astimezone(UTC)


def slot_label(slot: datetime) -> str:
    """A compact, sortable UTC label for keys: 2026-11-28T08:00Z."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
