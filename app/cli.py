"""The `kb` command line: parses arguments, wires the parts together, and calls down.

This is the composition root: the only place in `core` that reaches into the other packages,
and only inside command bodies (so `kb --help` stays fast and `core` imports nothing above it).

Exit codes: 0 success, 1 error (nothing or not everything could be done, see the message),
2 bad usage, 3 finished but some inputs were skipped (each one is named with its reason).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.commands.audit import audit_app
from app.commands.bench import bench_app
from app.commands.budget import budget_app
from app.commands.llm import llm_app
from app.commands.push import push_app, start_push  # push delivery (issue 6)
from app.commands.sources import sources_app
from app.support import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    JsonOption,
    audit_log,
    cli_actor,
    cli_engine,
    cli_settings,
    err,
    friendly_errors,
    open_kb,
    out,
    print_json,
)
from core import db
from core.errors import KBError

if TYPE_CHECKING:
    from knowledge.service import KnowledgeBase
    from knowledge.types import Answer, Question

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    help="Enterprise knowledge assistant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
app.add_typer(llm_app, name="llm")
app.add_typer(sources_app, name="sources")
app.add_typer(budget_app, name="budget")  # training / privacy budget (issue 7)
app.add_typer(push_app, name="push")  # push delivery (issue 6)


def main() -> None:
    app()


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(as_json: JsonOption = False) -> None:
    """Create or migrate the database schema to the newest version."""
    settings = cli_settings()
    engine = cli_engine(settings)
    before, after = db.upgrade(engine)
    if as_json:
        print_json({"database": settings.database_url_for_display(), "from": before, "to": after})
    elif before == after:
        out.print(f"Database {settings.database_url_for_display()} is up to date (revision {after}).")
    else:
        out.print(f"Migrated {settings.database_url_for_display()} from {before or 'empty'} to {after}.")


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision and the newest one this code knows."""
    settings = cli_settings()
    current = db.current_revision(cli_engine(settings))
    out.print(f"current: {current or 'none (empty database)'}  head: {db.head_revision()}")


@app.command()
@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of documents.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Read documents into the knowledge base; unchanged ones are skipped, removed ones deleted."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = cli_settings()
    kb = open_kb(settings)
    columns = (
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"),
    )
    with Progress(*columns, console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("ingest", total=None, name="loading the embedding model")
        _ = kb.index  # loads the model and checks the index first, inside the spinner

        def advance(path: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, name=Path(path).name)

        report = kb.ingest(paths, progress=advance)
    audit_log(settings).record(
        cli_actor(),
        "source.ingest",
        target=", ".join(str(p) for p in paths)[:500],
        params=report.counts(),
        outcome="ok" if report.ok else f"partial: {len(report.skipped)} skipped",
    )
    if as_json:
        print_json({**asdict(report), "ok": report.ok})
    else:
        out.print(
            f"Ingested in {report.seconds:.1f}s: {report.added} added, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.removed} removed, {len(report.skipped)} skipped; "
            f"{report.chunks} chunks written."
        )
        for problem in report.skipped:
            err.print(f"[yellow]skipped[/] {problem.path}: {problem.reason}", markup=True, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_PARTIAL)


@app.command()
@friendly_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question, in quotes.", show_default=False)],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Asker's group (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the knowledge base, with numbered citations."""
    from knowledge.types import Question

    if not question.strip():
        raise KBError(
            "the question is empty", hint='ask something, e.g. kb ask "How do I reset my password?"'
        )
    settings = cli_settings()
    kb = open_kb(settings)
    with err.status("searching…"):
        asked = Question(text=question.strip(), user="cli", groups=tuple(group or ()), channel="cli")
        answer = asyncio.run(_ask(kb, asked))
    if as_json:
        print_json(asdict(answer))
        return
    out.print(answer.text, highlight=False)
    if answer.citations:
        out.print("\n[bold]Sources[/]" if not answer.abstained else "\n[bold]Closest documents[/]")
    for c in answer.citations:
        section = f" — {c.section}" if c.section else ""
        out.print(f"[{c.number}] [bold]{c.title}[/]{section}", highlight=False, markup=True)
        out.print(f"    {c.uri}  (score {c.score:.2f})", style="dim", highlight=False, markup=False)
        out.print(f"    {c.snippet}", highlight=False, markup=False)


@app.command()
@friendly_errors
def redact(
    destination: Annotated[
        str, typer.Option(help="Whose policy: logs (everything), training, index or external_prompt.")
    ] = "logs",
    pseudonyms: Annotated[bool, typer.Option(help="Numbered placeholders: [EMAIL_1], [EMAIL_2]…")] = False,
    as_json: JsonOption = False,
) -> None:
    """Redact personal data and secrets: text on standard input, redacted text on standard output."""
    import sys

    from privacy.redaction import RedactionPolicy, policy_for

    settings = cli_settings()
    policy = policy_for(
        destination, index_kinds=settings.redact_index_kinds, prompt_kinds=settings.redact_prompt_kinds
    )
    if pseudonyms:
        policy = RedactionPolicy(policy.destination, policy.kinds, pseudonyms=True)
    result = policy.redactor().redact(sys.stdin.read())
    if as_json:
        print_json({"text": result.text, "counts": result.counts})
    else:
        sys.stdout.write(result.text)


async def _ask(kb: KnowledgeBase, question: Question) -> Answer:
    try:
        return await kb.ask_async(question)
    finally:
        if kb.llm is not None:
            await kb.llm.aclose()


@app.command()
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default KB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default KB_PORT).")] = None,
) -> None:
    """Run the service: web chat, Slack (/slack/events), Teams (/api/messages), /healthz and /metrics."""
    from aiohttp import web

    from bot.web.app import create_app

    settings = cli_settings()
    kb = open_kb(settings)
    with err.status("loading the embedding model and the index…"):
        stats = kb.stats()
        _ = kb.index
    bind_host, bind_port = host or settings.host, port or settings.port
    err.print(
        f"Serving {stats.documents} documents ({stats.chunks} chunks) on http://{bind_host}:{bind_port}/"
    )
    application = create_app(settings, kb)
    start_push(application, settings, kb.store.engine, embedder=kb.embedder)  # push delivery (issue 6)
    web.run_app(application, host=bind_host, port=bind_port, print=None)


@app.command()
@friendly_errors
def status(as_json: JsonOption = False) -> None:
    """Documents, chunks, index, last ingest, and whether the configured backends answer."""
    from core.health import check_all

    settings = cli_settings()
    kb = open_kb(settings)
    stats = kb.stats()
    index_file = settings.index_dir / "vectors.faiss"
    last = stats.last_ingest
    backends = asyncio.run(check_all(settings))
    data = {
        "database": settings.database_url_for_display(),
        "schema_revision": db.head_revision(),
        "documents": stats.documents,
        "chunks": stats.chunks,
        "index_vectors": kb.index.size,
        "index_bytes": index_file.stat().st_size if index_file.exists() else 0,
        "last_ingest": None
        if last is None
        else {
            "finished_at": last.finished_at,
            "status": last.status,
            "added": last.added,
            "skipped": last.skipped,
        },
        "backends": {
            b.name: {"configured": b.configured, "reachable": b.reachable, "detail": b.detail}
            for b in backends
        },
    }
    if as_json:
        print_json(data)
        return
    out.print(f"database     {data['database']} (revision {data['schema_revision']})", highlight=False)
    out.print(f"documents    {stats.documents}   chunks {stats.chunks}   vectors {data['index_vectors']}")
    out.print(f"index        {index_file} ({data['index_bytes']:,} bytes)", highlight=False)
    if last is None:
        out.print("last ingest  never")
    else:
        out.print(
            f"last ingest  {last.finished_at or 'still running'} ({last.status}, {last.skipped} skipped)"
        )
    for b in backends:
        state = {True: "reachable", False: "UNREACHABLE", None: "configured" if b.configured else "off"}[
            b.reachable
        ]
        out.print(f"{b.name:<12} {state}: {b.detail}", highlight=False)


if __name__ == "__main__":
    main()
