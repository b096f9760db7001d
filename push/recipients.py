"""Who push may write to, and how: each person's cadence, time zone, hours, groups and back-off.

People are everyone with a digest preference, push state or behaviour event (anyone who used the
bot); their access groups come from the same settings the bot answers with, so push never shows a
person a document the bot would not cite to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from core.models import BehaviourEventRow, DigestPrefRow, PushUserStateRow, as_utc, utcnow
from core.settings import Settings
from push.cadence import resolve_cadence, resolve_zone
from push.types import Recipient


@dataclass(frozen=True)
class PushUser:
    """One person with everything the planner needs; `problems` are bad preferences we worked around."""

    recipient: Recipient
    cadence: str
    zone: ZoneInfo
    hour: int
    weekday: int
    quiet_start: int
    quiet_end: int
    backoff: int = 0
    requested_at: datetime | None = None
    first_seen: datetime | None = None  # the earliest sign of the person; no catch-up from before it
    problems: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return self.recipient.key

    @property
    def opted_out(self) -> bool:
        return self.cadence == "off"


def user_groups(settings: Settings, platform: str, user_id: str) -> frozenset[str]:
    if platform == "web":
        return frozenset(settings.server.web_user_groups)
    return frozenset(settings.bot.user_groups.get(f"{platform}:{user_id}", ()))


def split_key(user_key: str) -> tuple[str, str]:
    """'slack:U1' -> ('slack', 'U1'); a bare id is taken as a Slack user."""
    platform, sep, user_id = user_key.partition(":")
    return (platform, user_id) if sep else ("slack", user_key)


def load_users(engine: Engine, settings: Settings, *, only: Iterable[str] | None = None) -> list[PushUser]:
    """Every known person (or those in `only`, as platform:user keys), sorted by key."""
    wanted = {split_key(key) for key in only} if only is not None else None
    ids = sorted({user_id for _, user_id in wanted}) if wanted is not None else None
    pref_q, state_q = select(DigestPrefRow), select(PushUserStateRow)
    seen_q = select(
        col(BehaviourEventRow.platform), col(BehaviourEventRow.user_id), func.min(BehaviourEventRow.at)
    ).group_by(col(BehaviourEventRow.platform), col(BehaviourEventRow.user_id))
    if ids is not None:  # one person's delivery must not read everyone's rows
        pref_q = pref_q.where(col(DigestPrefRow.user_id).in_(ids))
        state_q = state_q.where(col(PushUserStateRow.user_id).in_(ids))
        seen_q = seen_q.where(col(BehaviourEventRow.user_id).in_(ids))
    with Session(engine) as session:
        prefs = {(r.platform, r.user_id): r for r in session.execute(pref_q).scalars()}
        states = {(r.platform, r.user_id): r for r in session.execute(state_q).scalars()}
        seen: dict[tuple[str, str], datetime] = {
            (str(p), str(u)): as_utc(at) for p, u, at in session.execute(seen_q).all()
        }
    people = {*prefs, *states, *seen}
    if wanted is not None:
        people = wanted  # named people are planned even before they have any row
    return [
        _user(
            settings,
            platform,
            user_id,
            prefs.get((platform, user_id)),
            states.get((platform, user_id)),
            seen.get((platform, user_id)),
        )
        for platform, user_id in sorted(people)
    ]


def _user(
    settings: Settings,
    platform: str,
    user_id: str,
    pref: DigestPrefRow | None,
    state: PushUserStateRow | None,
    first_event: datetime | None,
) -> PushUser:
    cadence, cadence_problem = resolve_cadence(pref.cadence if pref else None)
    zone, zone_problem = resolve_zone(state.timezone if state else None)
    hour = _hour(state.digest_hour if state else None, settings.push.digest_hour)
    requested = as_utc(pref.requested_at) if pref and pref.requested_at else None
    recipient = Recipient(
        platform=platform, user_id=user_id, groups=user_groups(settings, platform, user_id),
        timezone=zone.key,
    )  # fmt: skip
    return PushUser(
        recipient=recipient,
        cadence=cadence,
        zone=zone,
        hour=hour,
        weekday=settings.push.digest_weekday,
        quiet_start=_hour(state.quiet_start if state else None, settings.push.quiet_start),
        quiet_end=_hour(state.quiet_end if state else None, settings.push.quiet_end),
        backoff=state.backoff if state else 0,
        requested_at=requested,
        first_seen=min(
            (as_utc(t) for t in (pref and pref.updated_at, state and state.updated_at, first_event) if t),
            default=None,
        ),
        problems=tuple(p for p in (cadence_problem, zone_problem) if p),
    )


def _hour(value: int | None, default: int) -> int:
    return value if value is not None and 0 <= value <= 23 else default


def set_preferences(
    engine: Engine,
    platform: str,
    user_id: str,
    *,
    timezone: str | None = None,
    digest_hour: int | None = None,
    quiet: tuple[int, int] | None = None,
) -> PushUserStateRow:
    """Store a person's push settings (`kb push prefs`); an unknown time zone is refused here."""
    from push.errors import PushConfigError

    if timezone is not None and resolve_zone(timezone)[1]:
        raise PushConfigError(f"unknown time zone {timezone!r}", hint="use an IANA name like Europe/Berlin")
    for hour in (digest_hour, *(quiet or ())):
        if hour is not None and not 0 <= hour <= 23:
            raise PushConfigError(f"hour {hour} is not 0-23", hint="hours are local, 0 to 23")
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(PushUserStateRow, (platform, user_id)) or PushUserStateRow(
            platform=platform, user_id=user_id, updated_at=utcnow()
        )
        if timezone is not None:
            row.timezone = timezone
        if digest_hour is not None:
            row.digest_hour = digest_hour
        if quiet is not None:
            row.quiet_start, row.quiet_end = quiet
        row.updated_at = datetime.now(UTC)
        session.add(row)
        session.commit()
        return row


def store_backoff(engine: Engine, platform: str, user_id: str, backoff: int) -> None:
    """Remember the learned back-off level (shown by `kb push preview`)."""
    with Session(engine) as session:
        existing = session.get(PushUserStateRow, (platform, user_id))
        if existing is not None and existing.backoff == backoff:
            return
        row = existing or PushUserStateRow(platform=platform, user_id=user_id, updated_at=utcnow())
        row.backoff, row.updated_at = backoff, utcnow()
        session.add(row)
        session.commit()
