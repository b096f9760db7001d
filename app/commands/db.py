"""`kb db`: create or migrate the database schema, and show its revision."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from app.support import JsonOption, cli_engine, cli_settings, friendly_errors, out, print_json

if TYPE_CHECKING:
    from core.db import DataStep
    from core.settings import Settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(as_json: JsonOption = False) -> None:
    """Create or migrate the database schema to the newest version."""
    from core import db

    settings = cli_settings()
    engine = cli_engine(settings)
    before, after = db.upgrade(engine, data_steps=data_steps(settings))
    if as_json:
        print_json({"database": settings.database_url_for_display(), "from": before, "to": after})
    elif before == after:
        out.print(f"Database {settings.database_url_for_display()} is up to date (revision {after}).")
    else:
        out.print(f"Migrated {settings.database_url_for_display()} from {before or 'empty'} to {after}.")


def data_steps(settings: Settings) -> dict[str, DataStep]:
    """The data migrations that apply the product's policies (core's migrations cannot import them)."""
    from knowledge import stored_redaction

    kinds = list(settings.privacy.index_kinds)
    return {stored_redaction.STEP: lambda connection: stored_redaction.redact_stored_rows(connection, kinds)}


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision and the newest one this code knows."""
    from core import db

    settings = cli_settings()
    current = db.current_revision(cli_engine(settings))
    out.print(f"current: {current or 'none (empty database)'}  head: {db.head_revision()}")
