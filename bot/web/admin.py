"""What the web chat's admin page shows: status, sources and the privacy budget, as JSON.

`/admin` and `/api/admin` answer only admins (`web:<user>` in KB_BOT_ADMINS); anyone else gets
403. The `models` and `training_runs` parts are slots: `kb serve` fills them from the model
registry and the training runs (app/server/admin_slots.py puts a filler into the application's
`ADMIN_SLOTS_KEY` dict, returning `{"available": True, "columns": [...], "rows": [...]}`, which the
page renders as a table); a slot nobody fills shows as not available.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from core.models import DocumentRow, IngestRunRow, SourceStateRow, as_utc
from core.settings import Settings
from privacy.budget import BudgetError, BudgetLedger

# A slot's filler returns its rows; the admin page renders `rows` as a table with `columns`.
SlotFiller = Callable[[], dict[str, Any]]
ADMIN_SLOTS_KEY = web.AppKey("web_admin_slots", dict[str, SlotFiller])


def empty_slot(what: str) -> dict[str, Any]:
    return {"available": False, "note": f"{what} will appear here once this server has them.", "rows": []}


def admin_status(
    settings: Settings, engine: Engine, *, slots: dict[str, SlotFiller] | None = None
) -> dict[str, Any]:
    """Everything the admin page shows, read in one go (runs on a worker thread)."""
    slots = slots or {}
    return {
        "status": _status(settings, engine),
        "sources": _sources(engine),
        "budget": _budget(settings, engine),
        # Slots for a later feature: the model registry and the record of training runs.
        "models": slots["models"]() if "models" in slots else empty_slot("Answer models"),
        "training_runs": slots["training_runs"]()
        if "training_runs" in slots
        else empty_slot("Training runs"),
    }


def _status(settings: Settings, engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        documents = session.execute(select(func.count()).select_from(DocumentRow)).scalar_one()
        last = session.execute(
            select(IngestRunRow).order_by(col(IngestRunRow.id).desc()).limit(1)
        ).scalar_one_or_none()
    llm = settings.llm
    return {
        "documents": int(documents),
        "last_ingest": _run(last) if last is not None else None,
        "answer_model": llm.model,
        "answers": "model" if llm.url is not None else "extractive",
        "database": engine.dialect.name,
    }


def _run(run: IngestRunRow) -> dict[str, Any]:
    return {
        "status": run.status,
        "started_at": as_utc(run.started_at).isoformat(),
        "finished_at": as_utc(run.finished_at).isoformat() if run.finished_at else None,
        "added": run.added,
        "updated": run.updated,
        "removed": run.removed,
    }


def _sources(engine: Engine) -> list[dict[str, Any]]:
    """Documents per source, with the declared sources' last sync where there is one."""
    with Session(engine) as session:
        counts = session.execute(
            select(col(DocumentRow.source), func.count(), func.max(col(DocumentRow.updated_at)))
            .group_by(col(DocumentRow.source))
            .order_by(col(DocumentRow.source))
        ).all()
        states = {row.name: row for row in session.execute(select(SourceStateRow)).scalars()}
    out = []
    for name, count, newest in counts:
        state = states.pop(name, None)
        out.append(_source_row(name, int(count), newest, state))
    out += [_source_row(name, 0, None, state) for name, state in sorted(states.items())]
    return out


def _source_row(name: str, count: int, newest: Any, state: SourceStateRow | None) -> dict[str, Any]:
    return {
        "name": name,
        "documents": count,
        "newest": as_utc(newest).isoformat() if newest is not None else None,
        "last_sync": as_utc(state.last_sync_at).isoformat() if state and state.last_sync_at else None,
        "sync_status": state.status if state else None,
    }


def _budget(settings: Settings, engine: Engine) -> dict[str, Any]:
    try:
        state = BudgetLedger.from_settings(settings, engine).state()
    except BudgetError as exc:
        return {"error": str(exc)}
    return {
        "epsilon_total": state.epsilon_total,
        "epsilon_used": state.epsilon_used,
        "epsilon_remaining": state.epsilon_remaining,
        "delta_total": state.delta_total,
        "delta_used": state.delta_used,
        "runs_settled": state.runs_settled,
        "runs_reserved": state.runs_reserved,
        "summary": state.describe(),
    }
