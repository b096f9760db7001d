"""The web admin page's model and training-run tables, filled from the registry and the run rows.

`bot/web` renders whatever `{"available", "columns", "rows"}` a slot returns; the data lives in
`training`, which `bot` may not import, so the fillers are wired here. Each filler runs on the
admin page's worker thread and reads the database afresh.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from bot.web.admin import ADMIN_SLOTS_KEY
from core.models import ModelVersionRow, TrainingRunRow, as_utc
from core.settings import Settings
from training.runs import RunStore
from training.worker import registry_from_settings

RECENT_RUNS = 20


def mount_admin_slots(app: web.Application, settings: Settings, engine: Engine) -> None:
    """Fill the admin page's `models` and `training_runs` slots."""
    registry = registry_from_settings(settings, engine)
    runs = RunStore(engine)
    slots = app.setdefault(ADMIN_SLOTS_KEY, {})
    slots["models"] = lambda: _table(
        ["version", "name", "status", "A/B share", "ε", "correct", "activated"],
        [_version(row) for row in registry.versions()],
    )
    slots["training_runs"] = lambda: _table(
        ["run", "status", "asked by", "ε", "epochs", "step", "created", "finished", "error"],
        [_run(row) for row in runs.recent(RECENT_RUNS)],
    )


def _table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    # The page reads each cell by its column name.
    return {
        "available": True,
        "columns": columns,
        "rows": [dict(zip(columns, row, strict=True)) for row in rows],
    }


def _version(row: ModelVersionRow) -> list[Any]:
    manifest = row.manifest or {}
    figures = manifest.get("figures") or {}
    return [
        row.version,
        row.served_name,
        row.status,
        row.ab_share,
        manifest.get("epsilon"),
        figures.get("correctness") if isinstance(figures, dict) else None,
        _when(row.activated_at),
    ]


def _run(row: TrainingRunRow) -> list[Any]:
    params, progress = row.params or {}, row.progress or {}
    return [
        row.id,
        row.status,
        row.requested_by,
        params.get("epsilon"),
        params.get("epochs"),
        progress.get("step"),
        _when(row.created_at),
        _when(row.finished_at),
        row.error[:200],
    ]


def _when(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat(timespec="seconds")
