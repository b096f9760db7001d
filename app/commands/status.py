"""`kb status`: what the knowledge base holds and whether the configured backends answer.

It reads the database and the vector index as they are on disk and loads no embedding model:
`kb ingest` and `kb serve` check the index against the database (and rebuild it when it is behind),
status only reports, so it answers in about a second however large the model is.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.support import JsonOption, cli_settings, friendly_errors, migrated_engine, out, print_json

if TYPE_CHECKING:
    from core.health import Backend
    from core.settings import Settings
    from knowledge.store import Stats


@friendly_errors
def status(as_json: JsonOption = False) -> None:
    """Documents, chunks, index, last ingest, and whether the configured backends answer."""
    from core.health import check_all
    from knowledge.index import INDEX_FILE
    from knowledge.store import Store

    settings = cli_settings()
    stats = Store(migrated_engine(settings)).stats()
    backends = asyncio.run(check_all(settings))
    data = _report(settings, stats, backends)
    if as_json:
        print_json(data)
        return
    last = stats.last_ingest
    out.print(f"database     {data['database']} (revision {data['schema_revision']})", highlight=False)
    out.print(f"documents    {stats.documents}   chunks {stats.chunks}   vectors {data['index_vectors']}")
    index_file = settings.index_dir / INDEX_FILE
    out.print(f"index        {index_file} ({data['index_bytes']:,} bytes)", highlight=False)
    if last is None:
        out.print("last ingest  never")
    else:
        out.print(
            f"last ingest  {last.finished_at or 'still running'} ({last.status}, {last.skipped} skipped)"
        )
    out.print(f"answers      {_answers_line(data['answers'])}", highlight=False)
    for b in backends:
        state = {True: "reachable", False: "UNREACHABLE", None: "configured" if b.configured else "off"}[
            b.reachable
        ]
        out.print(f"{b.name:<12} {state}: {b.detail}", highlight=False)


def _answers(backends: list[Backend]) -> dict[str, Any]:
    """Who writes the answers now: the model (name, URL, reachable) or extractive (and why)."""
    llm = next((b for b in backends if b.name == "llm"), None)
    if llm is None or not llm.configured:
        return {"mode": "extractive", "model": None, "url": None, "reachable": None, "detail": "no model"}
    mode = "model" if llm.reachable else "extractive"
    return {
        "mode": mode,
        "model": llm.model,
        "url": llm.url,
        "reachable": llm.reachable,
        "detail": llm.detail,
    }


def _answers_line(answers: dict[str, Any]) -> str:
    if answers["mode"] == "model":
        return f"written by {answers['model']} at {answers['url']} (reachable)"
    if answers["model"] is None:
        return "extractive (no model: set KB_LLM_URL, or run kb serve --with-model NAME)"
    return f"extractive for now: {answers['model']} at {answers['url']} is not reachable"


def _report(settings: Settings, stats: Stats, backends: list[Backend]) -> dict[str, Any]:
    from core import db
    from knowledge.index import INDEX_FILE

    index_file = settings.index_dir / INDEX_FILE
    last = stats.last_ingest
    return {
        "database": settings.database_url_for_display(),
        "schema_revision": db.head_revision(),
        "documents": stats.documents,
        "chunks": stats.chunks,
        "index_vectors": _stored_vectors(settings),
        "index_bytes": index_file.stat().st_size if index_file.exists() else 0,
        "last_ingest": None
        if last is None
        else {
            "finished_at": last.finished_at,
            "status": last.status,
            "added": last.added,
            "skipped": last.skipped,
        },
        "answers": _answers(backends),
        "backends": {
            b.name: {"configured": b.configured, "reachable": b.reachable, "detail": b.detail}
            for b in backends
        },
    }


def _stored_vectors(settings: Settings) -> int:
    """How many vectors the index on disk holds (0 when there is none or it cannot be read)."""
    from knowledge.errors import VectorIndexError
    from knowledge.index import MANIFEST_FILE, VectorIndex

    if not (settings.index_dir / MANIFEST_FILE).exists():
        return 0
    try:
        index, _ = VectorIndex.load(settings.index_dir)
    except VectorIndexError:
        return 0
    return index.size
