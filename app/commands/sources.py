"""`kb sources`: declare folders, SQL queries and HTTP APIs as sources, and sync them incrementally.

Exit codes as for every `kb` command: 0 all went well, 1 nothing could be done (an unknown
source, an invalid sources file), 3 the sync finished but a source failed or skipped records.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.support import (
    EXIT_PARTIAL,
    JsonOption,
    audit_log,
    cli_actor,
    cli_settings,
    err,
    friendly_errors,
    migrated_engine,
    open_kb,
    out,
    print_json,
)
from core.errors import KBError

if TYPE_CHECKING:
    from knowledge.sources.config import AnySource, SourcesFile

sources_app = typer.Typer(
    help="Declared sources (folders, SQL queries, HTTP JSON APIs) and their incremental sync.",
    no_args_is_help=True,
)


class Kind(StrEnum):
    files = "files"
    sql = "sql"
    api = "api"


def _opt(help_text: str, *names: str) -> Any:
    return typer.Option(*names, help=help_text, show_default=False)


@sources_app.command("add")
@friendly_errors
def sources_add(
    name: Annotated[str, typer.Argument(help="Unique name, e.g. crm-tickets.", show_default=False)],
    kind: Annotated[Kind, _opt("files, sql or api.", "--kind")],
    path: Annotated[Path | None, _opt("files: the folder.")] = None,
    acl_group: Annotated[list[str] | None, _opt("Group for documents that name none (repeatable).")] = None,
    tag: Annotated[list[str] | None, _opt("Tag for documents that carry none (repeatable).")] = None,
    url: Annotated[str | None, _opt("sql: SQLAlchemy URL, secrets as ${NAME}; api: first page.")] = None,
    query: Annotated[str | None, _opt("sql: the SELECT whose rows become documents.")] = None,
    id_column: Annotated[str | None, _opt("sql: the column of stable row ids.")] = None,
    title_column: Annotated[str | None, _opt("sql: the title column.")] = None,
    text_column: Annotated[list[str] | None, _opt("sql: a text column (repeatable).")] = None,
    updated_column: Annotated[str | None, _opt("sql: change-time column, for incremental sync.")] = None,
    acl_column: Annotated[str | None, _opt("sql: column of comma-separated groups.")] = None,
    tags_column: Annotated[str | None, _opt("sql: column of comma-separated tags.")] = None,
    uri_template: Annotated[str | None, _opt("sql: citation link, e.g. crm://tickets/{id}.")] = None,
    items_path: Annotated[str | None, _opt("api: dotted path to the records, e.g. data.items.")] = None,
    next_path: Annotated[str | None, _opt("api: dotted path to the next page's URL.")] = None,
    page_param: Annotated[str | None, _opt("api: query parameter numbering the pages.")] = None,
    page_size: Annotated[int | None, _opt("api: records per page (with --page-param).")] = None,
    auth_header: Annotated[str | None, _opt("api: auth header name, e.g. Authorization.")] = None,
    auth_env: Annotated[str | None, _opt("api: environment variable holding its value.")] = None,
    id_field: Annotated[str | None, _opt("api: id field (default id).")] = None,
    title_field: Annotated[str | None, _opt("api: title field (default title).")] = None,
    text_field: Annotated[list[str] | None, _opt("api: text field (repeatable; default body).")] = None,
    updated_field: Annotated[str | None, _opt("api: change-time field.")] = None,
    url_field: Annotated[str | None, _opt("api: field with the record's web link.")] = None,
    acl_field: Annotated[str | None, _opt("api: field with the record's groups.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Declare a source in the sources file (KB_SOURCES_FILE, default <KB_DATA_DIR>/sources.yaml)."""
    given: dict[str, Any] = {
        "path": str(path.expanduser().resolve()) if path is not None else None,
        "acl_groups": acl_group, "tags": tag, "url": url, "query": query, "id_column": id_column,
        "title_column": title_column, "text_columns": text_column, "updated_column": updated_column,
        "acl_column": acl_column, "tags_column": tags_column, "uri_template": uri_template,
        "items_path": items_path, "next_path": next_path, "page_param": page_param,
        "page_size": page_size, "auth_header": auth_header, "auth_env": auth_env, "id_field": id_field,
        "title_field": title_field, "text_fields": text_field, "updated_field": updated_field,
        "url_field": url_field, "acl_field": acl_field,
    }  # fmt: skip
    _declare(name, kind, {key: value for key, value in given.items() if value not in (None, [])},
             folder=path, as_json=as_json)  # fmt: skip


def _declare(name: str, kind: Kind, fields: dict[str, Any], *, folder: Path | None, as_json: bool) -> None:
    """Check a source's options, add it to the sources file, and record that in the audit log."""
    from knowledge.sources.config import SourceConfigError, audit_params, load_sources, parse_source

    settings = cli_settings()
    engine = migrated_engine(settings)
    try:
        source = parse_source({"name": name, "kind": kind.value, **fields})
    except SourceConfigError as exc:
        raise KBError(exc.message, hint="see `kb sources add --help` for each kind's options") from exc
    if folder is not None and not folder.is_dir():
        raise KBError(f"no folder at {folder}", hint="a files source reads a folder of documents")
    sources = load_sources(settings.sources_path).with_source(source)
    sources.save()
    params = audit_params(source)
    audit_log(settings, engine).record(cli_actor(), "source.add", target=name, params=params, outcome="ok")
    if _literal_password(fields.get("url")):
        err.print(
            "[yellow]warning:[/] the URL holds a password, now in the sources file; write it as "
            "${NAME} and set the environment variable NAME instead",
            markup=True,
            highlight=False,
        )
    if as_json:
        print_json({"file": str(sources.path), "source": params})
    else:
        out.print(f"Added {kind.value} source {name!r} to {sources.path}; run `kb sources sync {name}`.")


@sources_app.command("list")
@friendly_errors
def sources_list(as_json: JsonOption = False) -> None:
    """The declared sources with their last sync: time, status, documents, cursor."""
    from core.models import as_utc
    from knowledge.sources.config import load_sources
    from knowledge.sources.state import SourceStates

    settings = cli_settings()
    engine = migrated_engine(settings)
    sources = load_sources(settings.sources_path)
    states = SourceStates(engine).all()
    rows: list[dict[str, Any]] = []
    for source in sources.sources:
        state = states.get(source.name)
        rows.append(
            {
                "name": source.name,
                "kind": source.kind,
                "target": _target(source, sources),
                "status": state.status if state else "never",
                "last_sync_at": as_utc(state.last_sync_at) if state and state.last_sync_at else None,
                "documents": state.documents if state else 0,
                "cursor": state.cursor.get("value") if state and state.cursor else None,
                "problems": len(state.problems) if state else 0,
            }
        )
    if as_json:
        print_json({"file": str(sources.path), "sources": rows})
        return
    if not rows:
        out.print(f"No sources declared in {sources.path}; add one with `kb sources add NAME --kind ...`.")
        return
    from rich.table import Table

    table = Table("name", "kind", "target", "last sync", "status", "documents", "cursor", box=None)
    for row in rows:
        synced = f"{row['last_sync_at']:%Y-%m-%d %H:%M:%S} UTC" if row["last_sync_at"] else "never"
        table.add_row(
            row["name"], row["kind"], row["target"], synced, row["status"],
            str(row["documents"]), str(row["cursor"] or ""),
        )  # fmt: skip
    out.print(table)


@sources_app.command("remove")
@friendly_errors
def sources_remove(
    name: Annotated[str, typer.Argument(help="The source's name.", show_default=False)],
    purge: Annotated[bool, typer.Option("--purge", help="Also delete its documents.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove a source from the sources file; with --purge, delete its documents too."""
    from knowledge.sources.config import load_sources
    from knowledge.sources.runner import SourceRunner

    settings = cli_settings()
    sources = load_sources(settings.sources_path)
    source = sources.get(name)
    kb = open_kb(settings)
    runner = SourceRunner(
        kb, sources, environ=os.environ, audit=audit_log(settings, kb.store.engine), actor=cli_actor()
    )
    kept = 0 if purge else runner.states.count_documents(runner.document_source(source))
    with err.status("deleting its documents…") if purge else nullcontext():
        removed = runner.remove(source, purge=purge)
    sources.without(name).save()
    if as_json:
        print_json({"removed": name, "purged": purge, "documents_deleted": removed, "documents_kept": kept})
    elif purge:
        out.print(f"Removed source {name!r} and deleted its {removed} documents.")
    else:
        out.print(
            f"Removed source {name!r}; its {kept} documents stay searchable "
            "(`kb sources remove --purge` deletes them)."
        )


@sources_app.command("sync")
@friendly_errors
def sources_sync(
    names: Annotated[list[str] | None, typer.Argument(help="Sources to sync (default: all).")] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Read every row, not only changed ones, and sweep deleted ones.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync sources: changed documents are re-embedded, unchanged skipped, deleted ones removed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from knowledge.sources.config import load_sources
    from knowledge.sources.runner import SourceRunner

    settings = cli_settings()
    sources = load_sources(settings.sources_path)
    if not sources.sources:
        raise KBError(
            f"no sources declared in {sources.path}", hint="add one with `kb sources add NAME --kind ...`"
        )
    kb = open_kb(settings)
    runner = SourceRunner(
        kb, sources, environ=os.environ, audit=audit_log(settings, kb.store.engine), actor=cli_actor()
    )
    selected = runner.select(names or ())
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}"),
        TimeElapsedColumn(),
    )
    results = []
    with Progress(*columns, console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("loading the embedding model", total=None)
        _ = kb.index  # loads the model and checks the index first, inside the spinner
        for source in selected:
            progress.update(task, description=f"sync {source.name}", completed=0, total=None)

            def advance(item: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total or None)

            results.append(runner.sync(source, full=full, progress=advance))
    if as_json:
        print_json({"ok": all(r.ok for r in results), "sources": [r.as_dict() for r in results]})
    for result in [] if as_json else results:
        data = result.as_dict()
        colour = {"ok": "green", "partial": "yellow"}.get(result.status, "red")
        out.print(
            f"[{colour}]{result.name}[/] ({result.kind}) {result.status} in {data['seconds']:.1f}s: "
            f"{data['added']} added, {data['updated']} updated, {data['unchanged']} unchanged, "
            f"{data['removed']} removed, {data['skipped']} skipped; {data['documents']} documents.",
            markup=True,
            highlight=False,
        )
        for problem in result.report.skipped:
            err.print(f"[yellow]skipped[/] {problem.path}: {problem.reason}", markup=True, highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_PARTIAL)


def _target(source: AnySource, sources: SourcesFile) -> str:
    """Where a source reads from, for listings: a folder, or a URL without its secrets."""
    from knowledge.sources.config import FilesSource, mask_url

    return str(sources.folder(source)) if isinstance(source, FilesSource) else mask_url(source.url)


def _literal_password(url: str | None) -> bool:
    from urllib.parse import urlsplit

    if not url:
        return False
    try:
        password = urlsplit(url).password
    except ValueError:
        return False
    return bool(password) and not (password or "").startswith("${")


def _register_owner_commands() -> None:
    from app.commands.source_owners import register

    register(sources_app)


_register_owner_commands()
