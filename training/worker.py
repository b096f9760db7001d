"""The training worker: takes queued runs one at a time, trains them, gates and activates the result.

    worker = Worker.from_settings(settings, engine, server=VLLMClient(settings.llm.url))
    worker.serve(stop_event)          # `kb train worker`, or a thread inside `kb serve`

A run's checkpoints live in `<KB_TRAIN_DIR>/runs/<id>`; a worker killed mid-run leaves the row
`running` with a heartbeat that goes stale, and the next worker resumes it from its last
checkpoint under the same ledger reservation (`run.run_name(id)`), so ε is never counted twice.
A heartbeat thread keeps the row fresh through the long steps (data, evaluation) too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.errors import KBError
from core.models import TrainingRunRow
from core.settings import Settings
from privacy.budget import BudgetLedger
from training.registry import AdapterServer, Registry
from training.run import RunCancelled, RunContext, RunSpec, execute
from training.runs import CANCELLED, FAILED, SUCCEEDED, RunStore

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0


def registry_from_settings(settings: Settings, engine: Engine) -> Registry:
    base = settings.training.served_base or settings.llm.model or "base"
    return Registry(engine, settings.training.dir / "models", base_name=base)


def spec_for(row: TrainingRunRow, settings: Settings) -> RunSpec:
    """The run's full recipe: what the admin asked (stored on the row) over the training settings."""
    train, params = settings.training, row.params
    if train.student is None:
        raise KBError(
            "no student model is configured", hint="set KB_TRAIN_STUDENT to the base model's folder"
        )
    return RunSpec(
        run_id=row.id or 0, epsilon=float(params["epsilon"]), epochs=int(params["epochs"]),
        student=train.student, teacher=train.teacher, out_dir=train.dir / "runs" / str(row.id),
        requested_by=row.requested_by, lora_rank=train.lora_rank,
        lora_targets=tuple(train.lora_targets.split(",")), batch_size=train.batch_size,
        max_examples=train.max_examples, max_len=train.max_len,
        canary_salt=str(params.get("canary_salt", row.id)),
    )  # fmt: skip


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        server: Callable[[], AdapterServer] | None = None,
        name: str | None = None,
    ) -> None:
        self.settings, self.engine = settings, engine
        self.runs = RunStore(engine)
        self.ledger = BudgetLedger.from_settings(settings, engine)
        self.registry = registry_from_settings(settings, engine)
        self.server = server
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    def serve(self, stop: threading.Event) -> None:
        """Train queued runs until `stop` is set (checked between runs and every poll)."""
        while not stop.is_set():
            try:
                worked = self.run_once() is not None
            except Exception:  # a broken database must not end the worker: log and look again later
                log.exception("the training worker failed to take a run")
                worked = False
            if not worked:
                stop.wait(self.settings.training.poll_s)

    def run_once(self) -> TrainingRunRow | None:
        """Train the next run, if any; returns its finished row."""
        row = self.runs.claim(self.name)
        if row is None or row.id is None:
            return None
        run_id, beating = row.id, threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(run_id, beating), daemon=True)
        beat.start()
        try:
            report = execute(spec_for(row, self.settings), self._context(run_id))
            report.update(self._activate(report["version"]))
            self.runs.finish(run_id, SUCCEEDED, report=report, version=report["version"])
        except RunCancelled as exc:
            self.runs.finish(run_id, CANCELLED, error=str(exc))
        except KBError as exc:
            self.runs.finish(run_id, FAILED, error=exc.message + (f" ({exc.hint})" if exc.hint else ""))
        except Exception as exc:
            log.exception("training run %s failed", run_id)
            self.runs.finish(run_id, FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            beating.set()
        return self.runs.get(run_id)

    def _context(self, run_id: int) -> RunContext:
        def progress(update: dict[str, Any]) -> bool:
            return self.runs.progress(run_id, **update)

        return RunContext(self.engine, self.ledger, self.registry, progress=progress)

    def _heartbeat(self, run_id: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            self.runs.progress(run_id)

    def _activate(self, version: int) -> dict[str, Any]:
        """Gate the new version and, when it passes (and auto-activation is on), serve it."""
        train = self.settings.training
        verdict = self.registry.gate(
            version, tolerance=train.gate_tolerance, canary_limit_bits=train.canary_limit_bits
        )
        if not verdict.passed:
            return {"activation": "not activated: " + "; ".join(verdict.reasons), "gate_passed": False}
        if not train.auto_activate or self.server is None:
            return {
                "activation": "passed the gate; activate it with `admin rollback " + f"{version}`",
                "gate_passed": True,
            }
        try:
            asyncio.run(self.registry.activate(version, self.server()))
        except KBError as exc:
            return {"activation": f"not activated: {exc.message}", "gate_passed": True}
        return {"activation": f"active as kb-v{version}", "gate_passed": True}


def out_dir(settings: Settings, run_id: int) -> Path:
    return settings.training.dir / "runs" / str(run_id)
