"""`kb sources folders|move|removed|restore|purge|flagged`: who owns which documents, what syncs
removed (restorable until the purge), and the passages the ingest injection scan flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.support import (
    JsonOption,
    audit_log,
    cli_actor,
    cli_settings,
    friendly_errors,
    migrated_engine,
    open_kb,
    out,
    print_json,
)
from core.errors import KBError


def register(app: typer.Typer) -> None:
    for name, command in (
        ("folders", sources_folders),
        ("move", sources_move),
        ("removed", sources_removed),
        ("restore", sources_restore),
        ("purge", sources_purge),
        ("flagged", sources_flagged),
    ):
        app.command(name)(friendly_errors(command))


def sources_folders(as_json: JsonOption = False) -> None:
    """Every source that holds documents: its key (ids and links start with it), root and count."""
    from knowledge.store import Store

    store = Store(migrated_engine(cli_settings()))
    counts = store.owners.documents()
    rows: list[dict[str, Any]] = [
        {
            "key": row.key,
            "kind": row.kind,
            "root": row.root,
            "root_exists": bool(row.root) and Path(row.root or "").is_dir(),
            "documents": counts.get(row.key, 0),
            "removed": len(store.removed(source=row.key)),
        }
        for row in store.owners.all()
    ]
    if as_json:
        print_json({"sources": rows})
        return
    for row in rows:
        where = row["root"] or (
            "(root unknown until its folder is ingested)" if row["kind"] == "legacy" else ""
        )
        gone = "  [folder missing: `kb sources move`]" if row["root"] and not row["root_exists"] else ""
        out.print(
            f"{row['key']:<24} {row['kind']:<7} {row['documents']:>6} documents  "
            f"{row['removed']:>4} removed  {where}{gone}",
            highlight=False,
        )


def sources_move(
    key: Annotated[
        str, typer.Argument(help="The source's key (see `kb sources folders`).", show_default=False)
    ],
    folder: Annotated[Path, typer.Argument(help="Where its folder is now.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Re-point a folder source after its folder moved or was renamed; its documents keep their ids."""
    from knowledge.errors import KnowledgeError
    from knowledge.store import Store

    settings = cli_settings()
    store = Store(migrated_engine(settings))
    old = store.owners.get(key)
    try:
        row = store.owners.move(key, folder)
    except KnowledgeError as exc:
        raise KBError(str(exc), hint="see `kb sources folders`") from exc
    params = {"from": old.root if old else None, "to": row.root}
    audit_log(settings, store.engine).record(
        cli_actor(), "source.move", target=key, params=params, outcome="ok"
    )
    if as_json:
        print_json({"key": key, **params})
    else:
        out.print(f"Source {key!r} now reads {row.root}; `kb ingest {row.root}` updates it in place.")


def sources_removed(
    source: Annotated[str | None, typer.Option("--source", help="Only this source's key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Documents that syncs removed and `kb sources restore` can still bring back."""
    from knowledge.store import Store

    settings = cli_settings()
    store = Store(migrated_engine(settings))
    days = settings.ingest.removal_retention_days
    rows = [
        {
            "id": r.id, "document_id": r.document_id, "source": r.source, "title": r.title, "uri": r.uri,
            "removed_at": r.removed_at, "ingest_run_id": r.ingest_run_id,
        }
        for r in store.removed(source=source)
    ]  # fmt: skip
    if as_json:
        print_json({"retention_days": days, "removed": rows})
        return
    if not rows:
        out.print("Nothing removed is waiting to be restored or purged.")
    for row in rows:
        out.print(
            f"{row['id']:>6}  {row['removed_at']:%Y-%m-%d %H:%M} UTC  {row['uri']}  ({row['title']})",
            highlight=False,
        )
    if rows:
        out.print(f"Restorable for {days} days after removal: `kb sources restore ID...` or `--source KEY`.")


def sources_restore(
    ids: Annotated[list[int] | None, typer.Argument(help="Ids from `kb sources removed`.")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Everything removed from this source.")
    ] = None,
    run: Annotated[int | None, typer.Option("--run", help="Everything one ingest run removed.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Bring removed documents back (with their stored embeddings: no model work but the index)."""
    settings = cli_settings()
    kb = open_kb(settings)
    store = kb.store
    audit = store.runs.audit = audit_log(settings, store.engine)
    chosen = [
        r.id
        for r in store.removed(source=source)
        if (not ids or r.id in ids) and (run is None or r.ingest_run_id == run)
    ]
    if not (ids or source or run is not None):
        raise KBError("say what to restore", hint="ids from `kb sources removed`, --source KEY or --run ID")
    if not chosen:
        raise KBError("nothing removed matches", hint="see `kb sources removed`")
    run_id = store.start_run([f"restore {len(chosen)} documents"])
    restored, live = store.restore(chosen, run_id=run_id)
    counts = {"added": len(restored), "skipped": len(live)}
    problems = [{"path": d, "reason": "a document with this id is live again; kept"} for d in live]
    store.finish_run(run_id, status="ok" if not live else "partial", counts=counts, problems=problems)
    _ = kb.index  # the index and the lexical index are rebuilt from the stored embeddings
    params = {"restored": len(restored), "kept_live": len(live), "source": source, "run": run}
    audit.record(
        cli_actor(),
        "source.restore",
        target=source or ",".join(map(str, chosen))[:500],
        params=params,
        outcome="ok",
    )
    if as_json:
        print_json({"restored": restored, "kept_live": live})
        return
    out.print(f"Restored {len(restored)} documents.", highlight=False)
    for document in live:
        out.print(f"kept {document}: a document with this id was ingested again since", highlight=False)


def sources_purge(
    everything: Annotated[
        bool, typer.Option("--all", help="Purge everything removed, not only what is past retention.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete for good what syncs removed longer than KB_INGEST_REMOVAL_RETENTION_DAYS ago."""
    from core.models import utcnow
    from knowledge.store import Store
    from knowledge.trash import RemovalPolicy

    settings = cli_settings()
    store = Store(migrated_engine(settings), policy=RemovalPolicy.from_settings(settings.ingest))
    purged = store.purge(before=utcnow() if everything else None)
    params = {"all": everything, "retention_days": settings.ingest.removal_retention_days}
    audit_log(settings, store.engine).record(
        cli_actor(),
        "source.purge",
        target="removed documents",
        params={**params, "purged": purged},
        outcome="ok",
    )
    if as_json:
        print_json({"purged": purged})
    else:
        out.print(f"Purged {purged} removed documents.")


def sources_flagged(as_json: JsonOption = False) -> None:
    """Passages the ingest scan flagged as instructions aimed at an assistant, or hidden text."""
    from knowledge.store import Store

    flagged = Store(migrated_engine(cli_settings())).flagged()
    rows = [
        {
            "chunk_id": f.chunk_id, "document_id": f.document_id, "title": f.title, "uri": f.uri,
            "section": f.section, "reasons": f.reasons, "ingested_at": f.ingested_at,
        }
        for f in flagged
    ]  # fmt: skip
    if as_json:
        print_json({"flagged": rows})
        return
    if not rows:
        out.print("No flagged passages.")
    for row in rows:
        where = f"{row['uri']} > {row['section']}" if row["section"] else row["uri"]
        out.print(f"{where}: {row['reasons']}", highlight=False)
