"""`kb train run|list|show|cancel|worker`: the chat's training commands from the shell, and the worker.

`kb train run` queues a run (or, with --dry-run, reports what it would need) exactly as
`admin retrain` does; `kb train worker` trains queued runs until interrupted (a GPU machine's
process), the same worker that `kb serve` runs inside itself when KB_TRAIN_ENABLED is on.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Annotated

import typer

from app.support import JsonOption, cli_actor, cli_settings, friendly_errors, migrated_engine, out, print_json

train_app = typer.Typer(help="Training runs of the answer model (DP distillation).", no_args_is_help=True)


@train_app.command("run")
@friendly_errors
def train_run(
    epsilon: Annotated[float | None, typer.Option(help="Target ε (default KB_TRAIN_EPSILON).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default KB_TRAIN_EPOCHS).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report data size, noise, utility; spend nothing.")
    ] = False,
) -> None:
    """Queue a training run (the worker picks it up), or with --dry-run say what it would need."""
    from app.server.training import training_desk

    settings = cli_settings()
    desk = training_desk(settings, migrated_engine(settings))
    message = asyncio.run(desk.retrain(cli_actor(), epsilon=epsilon, epochs=epochs, dry_run=dry_run))
    out.print(message, highlight=False, markup=False)


@train_app.command("list")
@friendly_errors
def train_list(limit: int = 20, as_json: JsonOption = False) -> None:
    """The newest runs, one line each."""
    from training.runs import RunStore, describe

    settings = cli_settings()
    rows = RunStore(migrated_engine(settings)).recent(limit)
    if as_json:
        print_json([row.model_dump(mode="json") for row in rows])
        return
    for row in rows:
        out.print(describe(row), highlight=False, markup=False)
    if not rows:
        out.print("No training runs yet.")


@train_app.command("show")
@friendly_errors
def train_show(run_id: int, as_json: JsonOption = False) -> None:
    """One run: what was asked, its progress, its report."""
    from core.training import TrainingRefused
    from training.runs import RunStore, describe

    settings = cli_settings()
    row = RunStore(migrated_engine(settings)).get(run_id)
    if row is None:
        raise TrainingRefused(f"there is no training run #{run_id}", hint="`kb train list` shows them")
    if as_json:
        print_json(row.model_dump(mode="json"))
        return
    out.print(describe(row), highlight=False, markup=False)
    for title, part in (("params", row.params), ("progress", row.progress), ("report", row.report)):
        out.print(f"{title}: {json.dumps(part, default=str)}", highlight=False, markup=False)


@train_app.command("cancel")
@friendly_errors
def train_cancel(run_id: int) -> None:
    """Cancel a queued run, or stop a running one at its next step (spent ε stays spent)."""
    from training.runs import RunStore

    settings = cli_settings()
    out.print(RunStore(migrated_engine(settings)).cancel(run_id), highlight=False, markup=False)


@train_app.command("worker")
@friendly_errors
def train_worker(
    once: Annotated[bool, typer.Option("--once", help="Train one queued run, then exit.")] = False,
) -> None:
    """Train queued runs one at a time until interrupted (a run cut off resumes from its checkpoint)."""
    from app.server.training import adapter_server
    from training.worker import Worker

    settings = cli_settings()
    worker = Worker(settings, migrated_engine(settings), server=adapter_server(settings))
    if once:
        row = worker.run_once()
        out.print("No queued run." if row is None else f"Run #{row.id}: {row.status}", highlight=False)
        return
    stop = threading.Event()
    try:
        worker.serve(stop)
    except KeyboardInterrupt:
        stop.set()
