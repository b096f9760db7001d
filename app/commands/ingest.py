"""`kb ingest`: read files and folders into the knowledge base."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.support import (
    EXIT_PARTIAL,
    JsonOption,
    audit_log,
    cli_actor,
    cli_settings,
    err,
    friendly_errors,
    open_kb,
    out,
    print_json,
)

if TYPE_CHECKING:
    from knowledge.ingest_report import IngestReport
    from knowledge.service import KnowledgeBase


@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of documents.", show_default=False)],
    allow_removals: Annotated[
        bool,
        typer.Option(
            "--allow-removals",
            help="Remove documents gone from a folder even past KB_INGEST_MAX_REMOVAL_SHARE.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Read documents into the knowledge base; unchanged ones are skipped, removed ones kept
    restorable (`kb sources restore`) for KB_INGEST_REMOVAL_RETENTION_DAYS."""
    from knowledge.trash import RemovalPolicy

    settings = cli_settings()
    kb = open_kb(settings)
    kb.store.policy = RemovalPolicy.from_settings(settings.ingest, allow=allow_removals)
    audit = kb.store.runs.audit = audit_log(settings, kb.store.engine)  # also for runs found interrupted
    purged = kb.store.purge()
    report = _ingest_with_progress(kb, paths, quiet=as_json)
    audit.record(
        cli_actor(),
        "source.ingest",
        target=", ".join(str(p) for p in paths)[:500],
        params={**report.counts(), "allow_removals": allow_removals, "purged": purged},
        outcome="ok" if report.ok else f"partial: {len(report.skipped)} skipped",
    )
    for document, flagged in report.flagged_documents().items():
        audit.record(cli_actor(), "source.flagged", target=document, params=flagged, outcome="flagged")
    if as_json:
        print_json({**asdict(report), "ok": report.ok})
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_PARTIAL)


def _ingest_with_progress(kb: KnowledgeBase, paths: list[Path], *, quiet: bool) -> IngestReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"),
    )
    with Progress(*columns, console=err, transient=True, disable=quiet) as progress:
        task = progress.add_task("ingest", total=None, name="loading the embedding model")
        _ = kb.index  # loads the model and checks the index first, inside the spinner

        def advance(path: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, name=Path(path).name)

        return kb.ingest(paths, progress=advance)


def _print_report(report: IngestReport) -> None:
    out.print(
        f"Ingested in {report.seconds:.1f}s: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed, {len(report.skipped)} skipped; "
        f"{report.chunks} chunks written."
    )
    for note in report.notes:
        err.print(f"[cyan]note[/] {note}", markup=True, highlight=False)
    if report.flagged:
        documents = len({f["document"] for f in report.flagged})
        err.print(
            f"[yellow]flagged[/] {len(report.flagged)} passages of {documents} documents look like "
            "instructions to an assistant; see `kb sources flagged`",
            markup=True,
            highlight=False,
        )
    for problem in report.skipped:
        err.print(f"[yellow]skipped[/] {problem.path}: {problem.reason}", markup=True, highlight=False)
