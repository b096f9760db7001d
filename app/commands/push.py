"""`kb push`: run the digest and notice pass now, preview what a person would get, and the delivery log.

The wiring of push (matcher and senders) lives in app/server/push.py, shared with `kb serve`.

    kb push run-now --dry-run            # what is due now, without sending
    kb push run-now --user slack:U0123   # a digest for this person now, due or not
    kb push preview --user slack:U0123   # their interests, schedule and the documents they would get
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.support import (
    EXIT_PARTIAL,
    JsonOption,
    cli_settings,
    err,
    friendly_errors,
    migrated_engine,
    out,
    print_json,
    settings_embedder,
)
from core.errors import KBError

if TYPE_CHECKING:
    from push.matching import Preview
    from push.recipients import PushUser

push_app = typer.Typer(help="Proactive push: digests and notices.", no_args_is_help=True)

UserOption = Annotated[
    list[str] | None, typer.Option("--user", "-u", help="platform:user, e.g. slack:U0123 (repeatable).")
]


def _keys(users: list[str] | None) -> list[str] | None:
    if not users:
        return None
    for user in users:
        platform, sep, user_id = user.partition(":")
        if not sep or not user_id or platform not in ("slack", "teams", "web"):
            raise KBError(
                f"{user!r} is not a person push knows", hint="write platform:user, e.g. slack:U0123"
            )
    return users


@push_app.command("run-now")
@friendly_errors
def run_now(
    user: UserOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and match, send nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Send what is due now: digests, `digest now` requests, notices, retries (named people: a digest now)."""
    from app.server.push import push_service

    settings = cli_settings()
    engine = migrated_engine(settings)
    only = _keys(user)
    service = push_service(settings, engine)

    async def go() -> tuple[list[str], Any, Any]:
        try:
            return await service.run_now(only=only, dry_run=dry_run)
        finally:
            await service.aclose()

    resumed, digests, notices = asyncio.run(go())
    outcomes = [
        {
            "kind": "digest",
            "user": o.user,
            "key": o.key,
            "trigger": o.trigger,
            "state": o.state,
            "items": o.items,
        }
        for o in digests.outcomes
    ] + [{"kind": "notice", **o} for o in notices.outcomes]
    bad = [o for o in outcomes if o["state"] in ("failed", "gone", "error")]
    if as_json:
        print_json(
            {"dry_run": dry_run, "resumed": resumed, "outcomes": outcomes, "problems": digests.problems}
        )
    else:
        _print_outcomes(outcomes, resumed, digests.problems, dry_run=dry_run)
    if bad:
        raise typer.Exit(EXIT_PARTIAL)


def _print_outcomes(outcomes: list[dict[str, Any]], resumed: list[str], problems: dict[str, list[str]],
                    *, dry_run: bool) -> None:  # fmt: skip
    from rich.table import Table

    table = Table(title="push (dry run: nothing sent)" if dry_run else "push", show_lines=False)
    for column in ("kind", "person", "state", "documents"):
        table.add_column(column)
    for o in outcomes:
        docs = ", ".join(i["title"] for i in o.get("items", [])) or o.get("title", "")
        table.add_row(o["kind"], o["user"], o["state"], docs)
    out.print(table)
    if resumed:
        out.print(f"resumed {len(resumed)} earlier message(s): " + ", ".join(sorted(set(resumed))))
    if not outcomes:
        out.print("Nothing is due.")
    for person, found in problems.items():
        for problem in found:
            out.print(f"[yellow]{person}[/]: {problem}", markup=True, highlight=False)


@push_app.command("preview")
@friendly_errors
def preview(
    user: Annotated[str, typer.Option("--user", "-u", help="platform:user, e.g. slack:U0123.")],
    as_json: JsonOption = False,
) -> None:
    """What this person would get now and why: interests, schedule, candidate documents. Sends nothing."""
    from core.models import as_utc
    from push.cadence import latest_slot, period, slot_label
    from push.ledger import already_pushed, last_digest
    from push.matching import Matcher
    from push.recipients import load_users

    settings = cli_settings()
    engine = migrated_engine(settings)
    person = load_users(engine, settings, only=_keys([user]))[0]
    now = datetime.now(UTC)
    platform, user_id = person.recipient.platform, person.recipient.user_id
    previous = last_digest(engine, platform, user_id)
    since = as_utc(previous.window_end) if previous else now - period(person.cadence, 0)
    pushed = {person.key: already_pushed(engine, platform, user_id)}
    with err.status("loading the embedding model and profiles…"):
        found = Matcher(engine, settings_embedder(settings), settings).preview(
            person.recipient, since=since, now=now, k=settings.push.digest_items, already_pushed=pushed
        )
    slot = latest_slot(
        now, cadence=person.cadence, zone=person.zone, hour=person.hour, weekday=person.weekday
    )
    data = {
        "user": person.key, "groups": sorted(person.recipient.groups), "cadence": person.cadence,
        "timezone": person.zone.key, "digest_hour": person.hour, "backoff": person.backoff,
        "quiet_hours": [person.quiet_start, person.quiet_end], "problems": list(person.problems),
        "last_digest": None if previous is None else {"key": previous.key, "state": previous.state},
        "latest_slot": slot_label(slot) if slot else None, "since": since.isoformat(),
        "interests": [{"label": i.label, "weight": round(i.weight, 3), "subscription": i.subscription}
                      for i in found.interests],
        "candidates": [{"document_id": c.document_id, "title": c.title, "uri": c.uri,
                        "score": round(c.score, 3), "relevance": round(c.relevance, 3),
                        "freshness": round(c.freshness, 3), "novelty": round(c.novelty, 3), "why": c.reason}
                       for c in found.candidates],
    }  # fmt: skip
    if as_json:
        print_json(data)
        return
    _print_preview(person, found, since)


def _print_preview(person: PushUser, found: Preview, since: datetime) -> None:
    groups = ", ".join(sorted(person.recipient.groups)) or "(none)"
    out.print(f"[bold]{person.key}[/]  groups {groups}", markup=True, highlight=False)
    out.print(
        f"cadence {person.cadence} at {person.hour:02d}:00 {person.zone.key}, quiet {person.quiet_start:02d}-"
        f"{person.quiet_end:02d}, back-off level {person.backoff}", highlight=False,
    )  # fmt: skip
    for problem in person.problems:
        out.print(f"[yellow]problem[/]: {problem}", markup=True, highlight=False)
    out.print("[bold]Interests[/]", markup=True)
    for interest in found.interests or []:
        out.print(f"  {interest.label} ({interest.weight:.2f})", highlight=False)
    out.print(f"[bold]Would send now[/] (changes since {since:%Y-%m-%d %H:%M} UTC)", markup=True)
    if not found.candidates:
        out.print("  nothing new that matches")
    for c in found.candidates:
        out.print(f"  {c.score:.2f}  {c.title}  {c.uri}\n        {c.reason}", highlight=False, markup=False)


@push_app.command("prefs")
@friendly_errors
def prefs(
    user: Annotated[str, typer.Option("--user", "-u", help="platform:user, e.g. slack:U0123.")],
    timezone: Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")] = None,
    hour: Annotated[int | None, typer.Option(help="Local hour digests go out at (0-23).")] = None,
    quiet: Annotated[
        str | None, typer.Option(help="Quiet hours as START-END local hours, e.g. 22-7.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set a person's time zone, digest hour and quiet hours (the cadence is theirs to set in chat)."""
    from push.recipients import set_preferences, split_key

    settings = cli_settings()
    engine = migrated_engine(settings)
    platform, user_id = split_key(user)
    _keys([user])
    window = None
    if quiet is not None:
        start, sep, end = quiet.partition("-")
        if not sep or not start.strip().isdigit() or not end.strip().isdigit():
            raise KBError(
                f"quiet hours {quiet!r} are not START-END", hint="e.g. --quiet 22-7, or 0-0 for none"
            )
        window = (int(start), int(end))
    row = set_preferences(engine, platform, user_id, timezone=timezone, digest_hour=hour, quiet=window)
    data = {"user": user, "timezone": row.timezone, "digest_hour": row.digest_hour,
            "quiet_hours": [row.quiet_start, row.quiet_end]}  # fmt: skip
    if as_json:
        print_json(data)
    else:
        hour_ = "default" if row.digest_hour is None else f"{row.digest_hour:02d}:00"
        quiet_ = "default" if row.quiet_start is None else f"{row.quiet_start}-{row.quiet_end}"
        out.print(
            f"{user}: time zone {row.timezone}, digest at {hour_}, quiet hours {quiet_}", highlight=False
        )


@push_app.command("log")
@friendly_errors
def delivery_log(
    user: UserOption = None,
    limit: Annotated[int, typer.Option(help="Newest rows to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The delivery log: what went to whom, when, and what came of it (sent, failed and why, clicked)."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from core.models import PushDeliveryRow

    settings = cli_settings()
    engine = migrated_engine(settings)
    query = select(PushDeliveryRow).order_by(col(PushDeliveryRow.id).desc()).limit(limit)
    keys = _keys(user)
    if keys:
        ids = [k.partition(":")[2] for k in keys]
        query = query.where(col(PushDeliveryRow.user_id).in_(ids))
    with Session(engine) as session:
        rows = list(session.execute(query).scalars())
    data = [
        {"key": r.key, "kind": r.kind, "user": f"{r.platform}:{r.user_id}", "state": r.state,
         "reason": r.reason, "attempts": r.attempts, "documents": r.documents, "sent_at": r.sent_at,
         "clicked_at": r.clicked_at, "dismissed_at": r.dismissed_at}
        for r in rows
    ]  # fmt: skip
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(title="push delivery log")
    for column in ("key", "state", "reason", "clicked"):
        table.add_column(column)
    for row in data:
        table.add_row(row["key"], row["state"], row["reason"], "yes" if row["clicked_at"] else "")
    out.print(table)
