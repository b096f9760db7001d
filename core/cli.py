"""The `kb` command line: parses arguments, wires the parts together, and calls down.

This is the composition root: the only place in `core` that reaches into the other packages,
and only inside command bodies (so `kb --help` stays fast and `core` imports nothing above it).

Exit codes: 0 success, 1 error (nothing or not everything could be done, see the message),
2 bad usage, 3 finished but some inputs were skipped (each one is named with its reason).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from sqlalchemy import Engine

from core import db
from core.errors import KBError
from core.settings import Settings, load_settings

if TYPE_CHECKING:
    from knowledge.service import KnowledgeBase
    from privacy.audit import AuditLog

OUR_PACKAGES = ("core", "privacy", "knowledge", "bot", "push", "training")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

app = typer.Typer(
    help="Enterprise knowledge assistant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
bench_app = typer.Typer(help="Measure retrieval quality and speed.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

_engines: list[Engine] = []

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


def main() -> None:
    app()


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one red line and exit code 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KBError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", markup=True, highlight=False)
            if exc.hint:
                err.print(f"[dim]hint:[/] {exc.hint}", markup=True, highlight=False)
            raise typer.Exit(EXIT_ERROR) from None
        finally:
            while _engines:
                _engines.pop().dispose()

    return wrapper


def _settings() -> Settings:
    settings = load_settings()
    handler = RichHandler(console=err, show_path=False, show_time=False)
    # Third-party chatter (faiss, alembic, bm25s set their own levels) stays quiet below WARNING.
    handler.addFilter(lambda rec: rec.levelno >= logging.WARNING or rec.name.startswith(OUR_PACKAGES))
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(settings.log_level)
    return settings


def _engine(settings: Settings) -> Engine:
    """An engine that is disposed when the command ends (closing its pooled connections)."""
    engine = db.make_engine(settings)
    _engines.append(engine)
    return engine


def _open_kb(settings: Settings) -> KnowledgeBase:
    from knowledge.service import KnowledgeBase

    engine = _engine(settings)
    db.require_migrated(engine)
    return KnowledgeBase(settings, engine)


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str, ensure_ascii=False))


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(as_json: JsonOption = False) -> None:
    """Create or migrate the database schema to the newest version."""
    settings = _settings()
    engine = _engine(settings)
    before, after = db.upgrade(engine)
    if as_json:
        _print_json({"database": settings.database_url_for_display(), "from": before, "to": after})
    elif before == after:
        out.print(f"Database {settings.database_url_for_display()} is up to date (revision {after}).")
    else:
        out.print(f"Migrated {settings.database_url_for_display()} from {before or 'empty'} to {after}.")


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision and the newest one this code knows."""
    settings = _settings()
    current = db.current_revision(_engine(settings))
    out.print(f"current: {current or 'none (empty database)'}  head: {db.head_revision()}")


@app.command()
@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of documents.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Read documents into the knowledge base; unchanged ones are skipped, removed ones deleted."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = _settings()
    kb = _open_kb(settings)
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
    _audit(settings).record(
        _cli_actor(),
        "source.ingest",
        target=", ".join(str(p) for p in paths)[:500],
        params=report.counts(),
        outcome="ok" if report.ok else f"partial: {len(report.skipped)} skipped",
    )
    if as_json:
        _print_json({**asdict(report), "ok": report.ok})
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
    settings = _settings()
    kb = _open_kb(settings)
    with err.status("searching…"):
        answer = kb.ask(Question(text=question.strip(), user="cli", groups=tuple(group or ()), channel="cli"))
    if as_json:
        _print_json(asdict(answer))
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
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default KB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default KB_PORT).")] = None,
) -> None:
    """Run the service: web chat, /healthz and /metrics (Slack and Teams arrive with their issue)."""
    from aiohttp import web

    from bot.web.app import create_app

    settings = _settings()
    kb = _open_kb(settings)
    with err.status("loading the embedding model and the index…"):
        stats = kb.stats()
        _ = kb.index
    bind_host, bind_port = host or settings.host, port or settings.port
    err.print(
        f"Serving {stats.documents} documents ({stats.chunks} chunks) on http://{bind_host}:{bind_port}/"
    )
    web.run_app(create_app(settings, kb), host=bind_host, port=bind_port, print=None)


@audit_app.command("verify")
@friendly_errors
def audit_verify(as_json: JsonOption = False) -> None:
    """Check the hash chain from the first entry; exit 1 naming the first altered entry."""
    settings = _settings()
    engine = _engine(settings)
    db.require_migrated(engine)
    checked, problems = _audit(settings, engine).verify()
    if as_json:
        _print_json({"entries": checked, "ok": not problems, "problems": [asdict(p) for p in problems]})
    elif not problems:
        out.print(f"Audit log intact: {checked} entries, every hash chains to the one before.")
    else:
        for problem in problems[:20]:
            err.print(f"[red]entry {problem.seq}[/]: {problem.reason}", markup=True, highlight=False)
        err.print(f"The audit log was tampered with: {len(problems)} problems in {checked} entries.")
    if problems:
        raise typer.Exit(EXIT_ERROR)


@audit_app.command("tail")
@friendly_errors
def audit_tail(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many entries.")] = 20,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this, e.g. admin.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The newest audit entries, oldest first."""
    settings = _settings()
    engine = _engine(settings)
    db.require_migrated(engine)
    rows = _audit(settings, engine).tail(count, action=action)
    if as_json:
        _print_json([row.model_dump(exclude={"id"}) for row in rows])
        return
    for row in rows:
        target = f" {row.target}" if row.target else ""
        out.print(
            f"{row.seq:>6} {row.at:%Y-%m-%d %H:%M:%S} {row.actor} {row.action}{target} -> {row.outcome}",
            highlight=False,
            markup=False,
        )


def _audit(settings: Settings, engine: Engine | None = None) -> AuditLog:
    from privacy.audit import AuditLog

    return AuditLog(engine or _engine(settings))


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@bench_app.command("retrieval")
@friendly_errors
def bench_retrieval(
    docs: Annotated[Path, typer.Option(help="Folder of documents to index.", show_default=False)],
    queries: Annotated[Path, typer.Option(help="JSONL of {query, relevant}.", show_default=False)],
    mode: Annotated[str, typer.Option(help="hybrid, dense, bm25, or all.")] = "hybrid",
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the index here (default: a temporary folder).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Index DOCS in a scratch knowledge base and report recall@k, MRR, nDCG@10 and latency."""
    import tempfile

    from knowledge.evaluation import evaluate, load_queries
    from knowledge.service import KnowledgeBase

    modes = ["bm25", "dense", "hybrid"] if mode == "all" else [mode]
    if any(m not in ("bm25", "dense", "hybrid") for m in modes):
        raise KBError(f"unknown mode {mode!r}", hint="use hybrid, dense, bm25 or all")
    labelled = load_queries(queries)
    _settings()  # logging, and a clear error for a bad environment
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch:
        settings = load_settings(data_dir=data_dir or Path(scratch), database_url="")
        engine = _engine(settings)
        db.upgrade(engine)
        kb = KnowledgeBase(settings, engine)
        with err.status(f"indexing {docs}…"):
            report = kb.ingest([docs])
        if report.added + report.unchanged == 0:
            raise KBError(f"nothing could be indexed from {docs}")
        results = [evaluate(kb, labelled, mode=m) for m in modes]  # type: ignore[arg-type]
        stats = kb.stats()
    summary = {"documents": stats.documents, "chunks": stats.chunks, "skipped": len(report.skipped)}
    if as_json:
        _print_json(results[0] | summary if len(results) == 1 else {"results": results, **summary})
        return
    for r in results:
        out.print(
            f"{r['mode']:<7} recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f}  "
            f"recall@10 {r['recall@10']:.3f}  mrr@10 {r['mrr@10']:.3f}  ndcg@10 {r['ndcg@10']:.3f}  "
            f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms"
        )


@app.command()
@friendly_errors
def status(as_json: JsonOption = False) -> None:
    """Documents, chunks, index, last ingest, and whether the configured backends answer."""
    from core.health import check_all

    settings = _settings()
    kb = _open_kb(settings)
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
        _print_json(data)
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
