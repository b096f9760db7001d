"""The `kb` command line: the command tree. Each command or group lives in app/commands/.

Command modules import the database, the knowledge base and the models inside command bodies, so
`kb --help` starts without them.

Exit codes: 0 success, 1 error (nothing or not everything could be done, see the message),
2 bad usage, 3 finished but some inputs were skipped (each one is named with its reason).
"""

from __future__ import annotations

import typer

from app.commands.ask import ask
from app.commands.audit import audit_app
from app.commands.bench import bench_app
from app.commands.budget import budget_app
from app.commands.db import db_app
from app.commands.doctor import doctor
from app.commands.ingest import ingest
from app.commands.llm import llm_app
from app.commands.models import models_app
from app.commands.push import push_app
from app.commands.redact import redact
from app.commands.serve import serve
from app.commands.sources import sources_app
from app.commands.status import status
from app.commands.teams import teams_app
from app.commands.train import train_app
from app.support import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    help="Enterprise knowledge assistant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(ingest)
app.command()(ask)
app.command()(redact)
app.command()(serve)
app.command()(status)
app.command()(doctor)  # are Slack and Teams connected?
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
app.add_typer(llm_app, name="llm")
app.add_typer(models_app, name="models")  # the local model store
app.add_typer(sources_app, name="sources")
app.add_typer(budget_app, name="budget")
app.add_typer(push_app, name="push")
app.add_typer(teams_app, name="teams")
app.add_typer(train_app, name="train")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
