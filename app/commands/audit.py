"""`kb audit`: check and read the append-only, hash-chained audit log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from app.support import (
    EXIT_ERROR,
    JsonOption,
    audit_log,
    cli_settings,
    err,
    friendly_errors,
    migrated_engine,
    out,
    print_json,
)

audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
@friendly_errors
def audit_verify(as_json: JsonOption = False) -> None:
    """Check the hash chain from the first entry; exit 1 naming the first altered entry."""
    settings = cli_settings()
    engine = migrated_engine(settings)
    checked, problems = audit_log(settings, engine).verify()
    if as_json:
        print_json({"entries": checked, "ok": not problems, "problems": [asdict(p) for p in problems]})
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
    settings = cli_settings()
    engine = migrated_engine(settings)
    rows = audit_log(settings, engine).tail(count, action=action)
    if as_json:
        print_json([row.model_dump(exclude={"id"}) for row in rows])
        return
    for row in rows:
        target = f" {row.target}" if row.target else ""
        out.print(
            f"{row.seq:>6} {row.at:%Y-%m-%d %H:%M:%S} {row.actor} {row.action}{target} -> {row.outcome}",
            highlight=False,
            markup=False,
        )
