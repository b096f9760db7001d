"""`kb audit`: check and read the append-only, keyed and checkpointed audit log."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from privacy.audit_verify import VerifyReport

audit_app = typer.Typer(help="The append-only, keyed and checkpointed audit log.", no_args_is_help=True)


@audit_app.command("verify")
@friendly_errors
def audit_verify(as_json: JsonOption = False) -> None:
    """Check the chain against the audit key and the checkpoints; exit 1 naming what was tampered with.

    Reports altered entries, a chain rewritten after a checkpoint, and a truncated tail
    ("checkpoint says M entries, found K"); a missing or changed key is said, not crashed on.
    """
    from privacy.audit import AuditLog
    from privacy.audit_keys import CheckpointSink, checkpoint_path, load_key

    settings = cli_settings()
    engine = migrated_engine(settings)
    loaded = load_key(settings)  # never creates one: a new key would check nothing
    log = AuditLog(engine, key=loaded.key, key_problem=loaded.problem)
    report = log.report(sink=CheckpointSink(checkpoint_path(settings)))
    if as_json:
        print_json({
            "entries": report.checked, "ok": report.ok, "problems": [asdict(p) for p in report.problems],
            "keyed": report.keyed, "legacy": report.legacy, "checkpoints": report.checkpoints,
            "last_checkpoint": report.last_checkpoint, "key": loaded.source, "key_problem": loaded.problem,
            "notes": report.notes,
        })  # fmt: skip
    else:
        _print_report(report, key_problem=loaded.problem)
    if report.problems:
        raise typer.Exit(EXIT_ERROR)


def _print_report(report: VerifyReport, *, key_problem: str | None) -> None:
    for note in report.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    if key_problem and report.keyed:
        err.print(f"audit key: {key_problem}", highlight=False, markup=False)
    if not report.problems:
        legacy = f", {report.legacy} legacy (unkeyed, from before the audit key)" if report.legacy else ""
        checkpoint = (
            f"; the newest checkpoint ({report.last_checkpoint} entries) matches"
            if report.last_checkpoint is not None
            else "; no checkpoint to compare with"
        )
        out.print(
            f"Audit log intact: {report.checked} entries ({report.keyed} keyed{legacy}), every link checks "
            f"out{checkpoint}.",
            highlight=False,
        )
        return
    for problem in report.problems[:20]:
        where = f"entry {problem.seq}" if problem.seq else "log"
        err.print(f"[red]{where}[/]: {problem.reason}", markup=True, highlight=False)
    count, checked = len(report.problems), report.checked
    if all(_key_only(problem.reason) for problem in report.problems):
        err.print(f"The audit log could not be fully checked: {count} problems in {checked} entries.")
        err.print("Set KB_AUDIT_KEY or KB_AUDIT_KEY_FILE to the key the entries were written with.")
    else:
        err.print(f"The audit log was tampered with: {count} problems in {checked} entries.")


def _key_only(reason: str) -> bool:
    """A problem of the key (missing, another one), not evidence of tampering."""
    return "cannot be checked" in reason or "another audit key" in reason


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
