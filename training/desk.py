"""The admin commands of training (core.training.TrainingDesk), for chat and `kb train`.

    desk = Desk(settings, engine, server=lambda: VLLMClient(settings.llm.url))
    await desk.retrain("slack:U0ADMIN", epsilon=4.0, epochs=2, dry_run=False)   # "Run #3 queued ..."

Every method answers with the sentence to show; a refusal raises core.training.TrainingRefused
(the chat layer shows its message and audits it). Nothing here trains: a retrain adds a run row for
the worker; a dry run reads the knowledge base and plans the noise, spending nothing. `progress`
reads run rows for `admin status`, which the chat polls while a run is live: a few small queries,
and the ε so far from the run's ledger reservation (its noise, sampling rate and accountant) at the
step the row reports, computed once per step.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from core.models import TrainingRunRow
from core.settings import Settings
from core.training import ACTIVE, NO_RUNS, RunProgress, TrainingRefused
from privacy.budget import BudgetLedger
from training.dp import epsilon_after
from training.registry import AdapterServer
from training.run import RunContext, dry_run, run_name
from training.runs import QUEUED, RUNNING, SUCCEEDED, RunStore, describe
from training.versions import feedback_by_model, render_versions
from training.worker import registry_from_settings, spec_for


class Desk:
    def __init__(
        self, settings: Settings, engine: Engine, *, server: Callable[[], AdapterServer] | None = None
    ) -> None:
        self.settings, self.engine, self.server = settings, engine, server
        self.runs = RunStore(engine)
        self.ledger = BudgetLedger.from_settings(settings, engine)
        self.registry = registry_from_settings(settings, engine)

    async def retrain(self, actor: str, *, epsilon: float | None, epochs: int | None, dry_run: bool) -> str:
        train = self.settings.training
        epsilon = train.epsilon if epsilon is None else epsilon
        epochs = train.epochs if epochs is None else epochs
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise TrainingRefused(
                f"ε must be a positive number, not {epsilon}", hint="for example --epsilon 4"
            )
        if not 1 <= epochs <= train.max_epochs:
            raise TrainingRefused(f"--epochs must be between 1 and {train.max_epochs}, not {epochs}")
        if train.student is None:
            raise TrainingRefused("no student model is configured", hint="set KB_TRAIN_STUDENT")
        state = self.ledger.state()
        if epsilon > state.epsilon_remaining:
            raise TrainingRefused(
                f"ε={epsilon:g} is more than the privacy budget has left ({state.describe()})",
                hint="ask for a smaller --epsilon, or have the data owner raise KB_PRIVACY_BUDGET_EPSILON",
            )
        teacher = str(train.teacher) if train.teacher else None
        params = {"epsilon": epsilon, "epochs": epochs, "lora_rank": train.lora_rank,
                  "lora_targets": train.lora_targets, "student": str(train.student),
                  "teacher": teacher}  # fmt: skip
        if dry_run:
            return await asyncio.to_thread(self._dry_run, actor, params)
        params["canary_salt"] = secrets.token_hex(8)
        running = self.runs.running()
        row = self.runs.create(actor, params)
        behind = f" behind run #{running.id} (by {running.requested_by})" if running is not None else ""
        return (
            f"Run #{row.id} queued{behind}: ε={epsilon:g}, {epochs} epochs, "
            f"LoRA rank {train.lora_rank} on {train.lora_targets}. "
            "`admin status` shows its progress."
        )

    def _dry_run(self, actor: str, params: dict[str, object]) -> str:
        from core.models import TrainingRunRow, utcnow

        probe = TrainingRunRow(id=0, status="dry-run", requested_by=actor, params=params, created_at=utcnow())
        context = RunContext(self.engine, self.ledger, self.registry)
        plan = dry_run(spec_for(probe, self.settings), context)
        return (
            f"Dry run (nothing spent): {plan['examples']} training and {plan['test_examples']} test "
            "examples; "
            f"ε={params['epsilon']}, δ={plan['delta']:.2g} needs noise σ={plan['noise_multiplier']} over "
            f"{plan['steps']} steps (sampling rate {plan['sample_rate']}); "
            f"noise/signal {plan['noise_to_signal']} over {plan['trained_parameters']} trained "
            "parameters, "
            f"expected utility {plan['expected_utility']}. Budget: {plan['budget']}."
        )

    async def status(self) -> str:
        return "\n".join(run.summary for run in await self.progress()) or NO_RUNS

    async def progress(self, runs: Sequence[int] = ()) -> tuple[RunProgress, ...]:
        return await asyncio.to_thread(self._progress, tuple(runs))

    def _progress(self, ids: tuple[int, ...]) -> tuple[RunProgress, ...]:
        if ids:
            rows = [row for row in map(self.runs.get, ids) if row is not None]
        else:
            recent = self.runs.recent(3)
            rows = [r for r in recent if r.status in (RUNNING, QUEUED)] or recent[:1]
        return tuple(self._read(row) for row in rows)

    def _read(self, row: TrainingRunRow) -> RunProgress:
        progress = row.progress
        step, total, loss = progress.get("step"), progress.get("total"), progress.get("loss")
        epsilon = self._epsilon(row, step if isinstance(step, int) else 0)
        return RunProgress(
            run_id=row.id or 0, status=row.status, stage=str(progress.get("stage", "")),
            summary=describe(row, epsilon_so_far=epsilon if row.status == RUNNING else None),
            step=step if isinstance(step, int) else None, total=total if isinstance(total, int) else None,
            loss=float(loss) if isinstance(loss, (int, float)) else None, epsilon=epsilon,
        )  # fmt: skip

    def _epsilon(self, row: TrainingRunRow, step: int) -> float | None:
        """ε spent: the report's once it succeeded, the ledger's once settled, else by the steps taken."""
        if row.status == SUCCEEDED and isinstance(row.report.get("epsilon_spent"), (int, float)):
            return float(row.report["epsilon_spent"])
        entry = self.ledger.get(run_name(row.id or 0))
        if entry is None:
            return None  # not reserved yet (queued, or still building its data)
        if entry.epsilon_spent is not None:
            return entry.epsilon_spent
        details = entry.details
        try:
            sigma, rate = float(details["noise_multiplier"]), float(details["sample_rate"])
            accountant = str(details["accountant"])
        except (KeyError, TypeError, ValueError):
            return None
        return epsilon_after(accountant, sigma, rate, step, entry.delta) if step > 0 else 0.0

    async def budget(self) -> str:
        state = await asyncio.to_thread(self.ledger.state)
        return f"Privacy budget: {state.describe()}."

    async def models(self) -> str:
        versions = await asyncio.to_thread(self.registry.versions)
        stats = await asyncio.to_thread(feedback_by_model, self.engine)
        return render_versions(versions, stats)

    async def rollback(self, actor: str, version: int) -> str:
        current = self.registry.active()
        server = self._server()
        row = await self.registry.activate(version, server)
        before = f" (was version {current.version}, {current.served_name})" if current is not None else ""
        return f"Version {row.version} ({row.served_name}) is active now{before}; new answers use it."

    async def ab(self, actor: str, version: int, share: float) -> str:
        if not 0 <= share <= 0.5:
            raise TrainingRefused(
                f"the share must be between 0 and 0.5, not {share:g}", hint="e.g. `admin ab 3 0.1`"
            )
        row = self.registry.get(version)
        if row is None:
            raise TrainingRefused(f"there is no model version {version}", hint="`admin models` lists them")
        if row.status == ACTIVE:
            raise TrainingRefused(f"version {version} is the active one: A/B compares a candidate with it")
        if share > 0:
            await self.registry.load(row, self._server())
        self.registry.set_share(version, share)
        if share == 0:
            return f"A/B test of version {version} ended: every answer comes from the active version."
        return (
            f"Version {version} ({row.served_name}) answers {share:.0%} of questions now; "
            "`admin models` compares."
        )

    def _server(self) -> AdapterServer:
        if self.server is None:
            raise TrainingRefused("no model server is configured", hint="set KB_LLM_URL to the vLLM server")
        return self.server()
