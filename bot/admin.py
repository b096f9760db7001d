"""What the chat admin commands do: the hooks the `kb serve` wiring hands to the conversation.

`admin ingest PATH` reads only under the configured roots (KB_ADMIN_INGEST_ROOTS): the path is
checked by the input guard (no `..`, no encoded tricks, no absolute path elsewhere), resolved
with its symbolic links, and must still lie inside a root; inside the folder, links that lead
out are not followed (see knowledge/sync.py).

The training commands (retrain, status, budget, models, rollback, ab) go to a `TrainingDesk`
(core/training.py) that `kb serve` hands in; the bot never imports training. Without one they
answer that no trainer is configured. A desk's refusal (bad input, busy, over budget, missing
files, a model server that is down or rejects the adapter) reaches the admin as the failure's
message; the active model keeps serving.

`admin status` while a run is queued or running answers with a LiveText: Slack and Teams then edit
that reply as the run goes on (bot/live.py), reading those same runs again through the desk until
every one of them has ended.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bot.commands import Admin
from bot.conversation import AdminHook, AdminHooks
from bot.types import LiveText
from core.training import NO_RUNS, RunProgress, TrainingDesk
from knowledge.service import KnowledgeBase
from knowledge.sources import SourceRunner, load_sources
from privacy.guard import Guard


def admin_hooks(
    kb: KnowledgeBase,
    *,
    ingest_roots: Sequence[Path],
    environ: Mapping[str, str] | None = None,
    desk: TrainingDesk | None = None,
) -> AdminHooks:
    roots = [root.resolve() for root in ingest_roots]
    guard = Guard(roots=roots)

    def ingest_now(command: Admin) -> str:
        if not roots:
            return "Ingesting from chat is off: no folders are allowed (set KB_ADMIN_INGEST_ROOTS)."
        if not command.args:
            return f"Say which folder: `admin ingest <folder>` (relative to {roots[0]})."
        paths = []
        for arg in command.args:
            verdict = guard.check(arg, kind="path")
            if not verdict.allowed:
                return f"I can't ingest that path: {'; '.join(verdict.reasons)}."
            path = (roots[0] / arg).resolve() if not os.path.isabs(arg) else Path(arg).resolve()
            if not any(path.is_relative_to(root) for root in roots):
                return "I can't ingest that path: it leads outside the allowed folders."
            paths.append(path)
        report = kb.ingest(paths)
        summary = (
            f"Ingested: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.removed} removed, {len(report.skipped)} skipped."
        )
        problems = "; ".join(f"{Path(p.path).name}: {p.reason}" for p in report.skipped[:5])
        return summary + (f" Skipped: {problems}" if problems else "")

    async def ingest(command: Admin) -> str:
        return await asyncio.to_thread(ingest_now, command)

    async def sync(command: Admin) -> str:
        sources = await asyncio.to_thread(load_sources, kb.settings.sources_path)
        env = dict(environ if environ is not None else os.environ)
        runner = SourceRunner(kb, sources, environ=env, audit=kb.audit, actor="bot")
        results = await asyncio.to_thread(runner.sync_all, command.args, full="full" in command.options)
        return "Synced: " + "; ".join(
            f"{r.name} {r.status} ({r.report.added} added, {r.report.updated} updated, "
            f"{r.report.removed} removed)"
            for r in results
        )

    async def status(_command: Admin) -> str | LiveText:
        stats = await asyncio.to_thread(kb.stats)
        last = stats.last_ingest
        when = "never ingested"
        if last is not None and last.finished_at is not None:
            when = f"last ingest {last.finished_at:%Y-%m-%d %H:%M} UTC ({last.status})"
        knowledge = f"{stats.documents} documents, {stats.chunks} chunks; {when}."
        return knowledge if desk is None else await training_status(desk, knowledge)

    if desk is None:
        return AdminHooks(ingest=ingest, sync=sync, status=status)
    return AdminHooks(ingest=ingest, sync=sync, status=status, **training_hooks(desk))


async def training_status(desk: TrainingDesk, head: str) -> str | LiveText:
    """`head` and a line per run; while runs are queued or running, live until they have all ended."""
    runs = await desk.progress()
    followed = tuple(run.run_id for run in runs if run.live)
    if not followed:
        return _status_text(head, runs)

    async def poll() -> tuple[str, bool]:
        now = await desk.progress(followed)
        return _status_text(head, now), not any(run.live for run in now)

    return LiveText(_status_text(head, runs), poll)


def _status_text(head: str, runs: tuple[RunProgress, ...]) -> str:
    return f"{head}\n" + ("\n".join(run.summary for run in runs) or NO_RUNS)


def training_hooks(desk: TrainingDesk) -> dict[str, AdminHook]:
    """The training verbs, their arguments already checked by bot.commands."""

    async def retrain(command: Admin) -> str:
        options = command.options
        epsilon = float(options["epsilon"]) if "epsilon" in options else None
        epochs = int(options["epochs"]) if "epochs" in options else None
        return await desk.retrain(command.actor, epsilon=epsilon, epochs=epochs, dry_run="dry-run" in options)

    async def budget(_command: Admin) -> str:
        return await desk.budget()

    async def models(_command: Admin) -> str:
        return await desk.models()

    async def rollback(command: Admin) -> str:
        return await desk.rollback(command.actor, int(command.args[0]))

    async def ab(command: Admin) -> str:
        raw = command.args[1]
        share = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
        return await desk.ab(command.actor, int(command.args[0]), share)

    return {"retrain": retrain, "budget": budget, "models": models, "rollback": rollback, "ab": ab}
