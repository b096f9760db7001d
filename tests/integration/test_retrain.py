"""Retraining from chat against a real vLLM server on the CPU, with tiny models built here.

One server per module (a tiny Llama, LoRA enabled). The loop: a signed Slack `admin retrain` queues
a run, the worker trains it (DP, secure mode, ledger) and activates its adapter in vLLM, the next
answer names the new version, a rollback under 8 questions/s brings the base back without one
failed answer, a killed run resumes without counting ε twice, an over-budget retrain is refused.

The student base is first taught one grounded reply to the test question (tests/tiny_llm.py's
`teach_reply`, on the very prompt the product builds for it over the test's documents), so that a
real answer passes the answer's citation check and names the model that wrote it: the base, the
activated adapter, then the base again after the rollback. The adapter, a small DP-trained LoRA
update of that base, keeps the reply.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.server.training import adapter_server
from core import db
from core.llm.server import VLLMServer, default_python
from core.llm.vllm import VLLMClient
from core.settings import Settings, load_settings
from core.training import RoutedLLM
from knowledge.embeddings import Embedder
from knowledge.prompt import SYSTEM_PROMPT, build_prompt
from knowledge.service import KnowledgeBase
from knowledge.types import Question
from privacy.budget import BudgetLedger
from tests.bot.test_slack import PAGES, Harness, slack_harness
from tests.tiny_llm import SENTENCES, build_tiny_llama, teach_reply
from training.runs import RUNNING, SUCCEEDED, RunStore
from training.worker import Worker

pytestmark = pytest.mark.slow
LONG = pytest.mark.timeout(1800)  # the vLLM start, the handbook ingest and a training run

BASE = "tiny-base"
HANDBOOK = Path(__file__).parents[2] / "examples" / "handbook"
RATE = 8.0  # questions per second during activation and rollback
QUESTION = "How do I install the VPN client?"
# Every claim held by the best passage for QUESTION (PAGES' vpn.md): the citation check keeps it.
REPLY = "Install HaldenConnect from the Software Center, then sign in [1]."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ServedTokens:
    """Token counts as the server gives them (vLLM's /tokenize: the model's tokenizer, no special tokens)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    async def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _answer_prompt(model_dir: Path, embedder: Embedder, root: Path) -> list[dict[str, str]]:
    """The messages the product sends for QUESTION over the test's documents (PAGES, then the handbook)."""
    settings = load_settings(data_dir=root / "var")
    engine = db.make_engine(settings)
    db.upgrade(engine)
    docs = root / "docs"  # the harness's folder name: the same document URIs
    docs.mkdir()
    for name, text in PAGES.items():
        (docs / name).write_text(text)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    kb.ingest([docs])
    kb.ingest([HANDBOOK])
    hits = kb.retrieve(Question(QUESTION, user="slack:U0ALICE"))
    engine.dispose()
    prompt = asyncio.run(
        build_prompt(QUESTION, hits, llm=_ServedTokens(model_dir), max_context_tokens=1536)  # type: ignore[arg-type]
    )
    assert "Install HaldenConnect from the Software Center" in prompt.passages[0].text
    return [dict(m) for m in prompt.messages]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    # A tokenizer that knows the reply's words (13 tokens, not 41 bytes and pieces), so that the run's
    # noisy LoRA update has few tokens to flip: the 41-token reply came out garbled ("Install Hall
    # sign in [1].") in 3 trials of 3, this one held in 7 of 7.
    corpus = [*SENTENCES, *PAGES.values(), REPLY, SYSTEM_PROMPT, QUESTION]
    student = build_tiny_llama(root / "student", corpus=corpus)
    teach_reply(student, [_answer_prompt(student, embedder, root / "kb")], REPLY, steps=200)
    return student, build_tiny_llama(root / "teacher", corpus=corpus, seed=1)


@pytest.fixture(scope="module")
def server(models: tuple[Path, Path]) -> Iterator[VLLMServer]:
    try:
        python = default_python()
    except Exception as exc:
        pytest.skip(f"no vLLM environment: {exc}")
    vllm = VLLMServer(models[0], python=python, port=_free_port(), served_name=BASE, max_model_len=2048,
                      max_lora_rank=16, max_loras=4, die_with_parent=True)  # fmt: skip
    vllm.start()
    try:
        vllm.wait_ready(timeout=600)
        yield vllm
    finally:
        vllm.stop()


def _settings(server: VLLMServer, models: tuple[Path, Path], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "llm_url": server.url, "llm_model": BASE, "train_student": str(models[0]),
        "train_teacher": str(models[1]), "train_dir": str(tmp_path / "train"), "train_batch_size": 8,
        "train_epochs": 1, "train_gate_tolerance": 1.0, "train_canary_limit_bits": 50.0,
        "privacy_budget_epsilon": 10.0, "bot_admins": ["slack:U0ADMIN"], **extra,
    }  # fmt: skip


def _worker(settings: Settings, engine: Any) -> Worker:
    worker = Worker(settings, engine, server=adapter_server(settings))
    worker.runs = RunStore(engine, stale_after_s=0.0)  # a killed run is taken over at once here
    return worker


async def _ask_steadily(llm: RoutedLLM, seconds: float, seen: list[str], failures: list[str]) -> int:
    """RATE questions per second for `seconds` through the answers' routed client; every reply counted.

    The tiny models' replies are no usable answers (the bot would answer extractively), so the model
    that served each question is read from the server's own reply.
    """

    async def one(i: int) -> None:
        question = f"How do I install the VPN client? ({i})"
        try:
            reply = await llm.chat([{"role": "user", "content": question}], max_tokens=8)
        except Exception as exc:
            failures.append(f"{i}: {exc!r}")
            return
        seen.append(reply.model)

    tasks, started = [], time.monotonic()
    for i in range(int(seconds * RATE)):
        await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return len(tasks)


async def _served(llm: RoutedLLM) -> str:
    reply = await llm.chat([{"role": "user", "content": "How do I install the VPN client?"}], max_tokens=8)
    return reply.model


async def _answered_by(harness: Harness) -> str:
    """Ask QUESTION as a person does (`/kb`): the model that the recorded answer names."""
    await harness.command(QUESTION, user="U0ALICE")
    reply = harness.slack.calls_to("response_url")[-1]["text"]
    assert "Install HaldenConnect from the Software Center" in reply and "[1]" in reply, reply
    model = harness.events("question")[-1].data["model"]
    assert isinstance(model, str)
    return model


@LONG
async def test_retrain_from_slack_activates_then_rolls_back_under_load(
    server: VLLMServer,
    models: tuple[Path, Path],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    embedder: Embedder,
) -> None:
    overrides = _settings(server, models, tmp_path)
    client = VLLMClient(server.url, total_timeout=120.0, first_token_timeout=60.0)
    async with slack_harness(make_settings, tmp_path, embedder, llm=client, **overrides) as harness:
        settings = make_settings(**{**overrides, "database_url": str(harness.engine.url)})
        await asyncio.to_thread(KnowledgeBase(settings, harness.engine, embedder=embedder).ingest, [HANDBOOK])
        assert await _answered_by(harness) == BASE, "the base answers before any retrain"

        # Bad input first: each a clear reply, nothing queued.
        for text, expected in [("admin retrain --epsilon 0", "greater than 0"),
                               ("admin retrain --epsilon -1", "greater than 0"),
                               ("admin retrain --epochs 100000", "at most"),
                               ("admin retrain --fast", "not --fast"),
                               ("admin retrain --epsilon 50", "more than the privacy budget has left"),
                               ("admin rollback 9", "no model version 9")]:  # fmt: skip
            await harness.command(text, user="U0ADMIN")
            assert expected in harness.slack.calls_to("response_url")[-1]["text"], text
        await harness.command("admin retrain --epsilon 4", user="U0ALICE")
        assert "admins only" in harness.slack.calls_to("response_url")[-1]["text"]

        started = time.monotonic()
        await harness.command("admin retrain --epsilon 4 --epochs 1", user="U0ADMIN")
        assert "Run #1 queued" in harness.slack.calls_to("response_url")[-1]["text"]
        await harness.command("admin retrain --epsilon 4", user="U0ADMIN")  # a second admin at once
        assert "already waiting" in harness.slack.calls_to("response_url")[-1]["text"]

        row = await asyncio.to_thread(_worker(settings, harness.engine).run_once)
        elapsed = time.monotonic() - started
        assert row is not None and row.status == SUCCEEDED, row and row.error
        assert row.report["activation"] == "active as kb-v1", row.report
        print(f"\nretrain -> active: {elapsed:.0f} s ({row.report})")
        assert "kb-v1" in await client.models()

        routed = harness.bot.conversation.answers.kb.llm  # type: ignore[attr-defined]
        assert isinstance(routed, RoutedLLM) and await _served(routed) == "kb-v1"
        assert await _answered_by(harness) == "kb-v1", "the next answer names the activated version"
        await harness.command("admin status", user="U0ADMIN")
        assert "Run #1 succeeded" in harness.slack.calls_to("response_url")[-1]["text"]
        await harness.command("admin models", user="U0ADMIN")
        assert "v1 kb-v1 active" in harness.slack.calls_to("response_url")[-1]["text"]

        # Rollback and re-activation while questions keep coming: none may fail or be dropped.
        seen: list[str] = []
        failures: list[str] = []
        load = asyncio.create_task(_ask_steadily(routed, 6.0, seen, failures))
        await asyncio.sleep(1.5)
        await harness.command("admin rollback 0", user="U0ADMIN")
        assert "Version 0 (tiny-base) is active" in harness.slack.calls_to("response_url")[-1]["text"]
        await asyncio.sleep(1.5)
        await harness.command("admin rollback 1", user="U0ADMIN")
        asked = await load
        print(f"{asked} questions at {RATE:g}/s during a rollback and an activation: {len(seen)} answered, "
              f"{len(failures)} failed; served by {sorted(set(seen))}")  # fmt: skip
        assert failures == [] and len(seen) == asked, failures[:5]
        assert {"kb-v1", BASE} <= set(seen), set(seen)
        await harness.command("admin rollback 0", user="U0ADMIN")
        assert await _served(routed) == BASE
        assert await _answered_by(harness) == BASE, "after the rollback the base answers again"
    await client.aclose()


@LONG
async def test_a_killed_run_resumes_without_spending_twice(
    server: VLLMServer, models: tuple[Path, Path], make_settings: Callable[..., Settings], tmp_path: Path,
    embedder: Embedder,
) -> None:  # fmt: skip
    from core import db

    settings = make_settings(**_settings(server, models, tmp_path, train_epochs=2))
    engine = db.make_engine(settings)
    db.upgrade(engine)
    await asyncio.to_thread(KnowledgeBase(settings, engine, embedder=embedder).ingest, [HANDBOOK])
    from training.desk import Desk

    said = await Desk(settings, engine).retrain("cli:test", epsilon=4.0, epochs=2, dry_run=True)
    assert said.startswith("Dry run (nothing spent)"), said
    assert re.search(
        r"noise/signal [0-9.]+ over \d+ trained parameters, expected utility (good|fair|poor)", said
    )
    assert BudgetLedger.from_settings(settings, engine).entries() == []
    await Desk(settings, engine).retrain("cli:test", epsilon=4.0, epochs=2, dry_run=False)
    worker = _worker(settings, engine)
    progress = worker.runs.progress

    def killed_at_step_3(run_id: int, **update: Any) -> bool:
        if update.get("step") == 3:
            raise KeyboardInterrupt  # like a kill: nothing below catches it, nothing is settled
        return progress(run_id, **update)

    worker.runs.progress = killed_at_step_3  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await asyncio.to_thread(worker.run_once)
    assert worker.runs.get(1).status == RUNNING  # type: ignore[union-attr]
    [held] = BudgetLedger.from_settings(settings, engine).entries()
    assert held.status == "reserved"

    row = await asyncio.to_thread(_worker(settings, engine).run_once)
    assert row is not None and row.status == SUCCEEDED, row and row.error
    [entry] = BudgetLedger.from_settings(settings, engine).entries()
    assert entry.status == "settled" and entry.epsilon_spent <= entry.epsilon_planned + 1e-9
    assert row.attempts == 2
