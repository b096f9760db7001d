"""What every `kb` command shares: consoles, settings and logging, engines, errors, JSON output.

Imports of the database layer, the knowledge base and the models sit inside the functions that
need them: `kb --help` and the commands that do no model work start without loading them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from core.errors import KBError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from core.settings import Settings
    from knowledge.embeddings import Embedder
    from knowledge.service import KnowledgeBase
    from privacy.audit import AuditLog

OUR_PACKAGES = ("core", "privacy", "knowledge", "bot", "push", "training")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

_engines: list[Engine] = []

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


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


def cli_settings() -> Settings:
    from rich.logging import RichHandler

    from core.settings import load_settings

    settings = load_settings()
    handler = RichHandler(console=err, show_path=False, show_time=False)
    # Third-party chatter (faiss, alembic, bm25s set their own levels) stays quiet below WARNING.
    handler.addFilter(lambda rec: rec.levelno >= logging.WARNING or rec.name.startswith(OUR_PACKAGES))
    from privacy.redaction import RedactingFilter

    handler.addFilter(RedactingFilter())  # secrets and personal data never reach a log
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(settings.log_level)
    return settings


def cli_engine(settings: Settings) -> Engine:
    """An engine that is disposed when the command ends (closing its pooled connections)."""
    from core import db

    engine = db.make_engine(settings)
    _engines.append(engine)
    return engine


def migrated_engine(settings: Settings) -> Engine:
    """`cli_engine`, refused with the fix when the schema is missing or behind."""
    from core import db

    engine = cli_engine(settings)
    db.require_migrated(engine)
    return engine


def open_kb(settings: Settings) -> KnowledgeBase:
    from knowledge.service import KnowledgeBase

    return KnowledgeBase(settings, migrated_engine(settings))


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str, ensure_ascii=False))


def audit_log(settings: Settings, engine: Engine | None = None) -> AuditLog:
    from privacy.audit import AuditLog

    return AuditLog.from_settings(settings, engine or cli_engine(settings))


def cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def settings_embedder(settings: Settings) -> Embedder:
    """The embedding model as configured (the same object a KnowledgeBase with these settings loads)."""
    from knowledge.embeddings import get_embedder

    return get_embedder(
        settings.embedding.model, settings.embedding.batch_size, settings.embedding.torch_threads,
        settings.embedding.precision, query_encoder=settings.embedding.query_encoder,
        cache_dir=settings.embedding.model_cache_dir,
    )  # fmt: skip
