"""The answer pipeline against a real vLLM server on the CPU, serving a tiny Llama built here.

One server per module (it takes ~40 s to start on two cores). The model is overfitted for a few
seconds to answer the product's prompts with one fixed, cited reply, so a real server's output can
be asserted on; a LoRA adapter is overfitted to a different reply and loaded at run time.
The test that kills the server runs last; the fixture restarts it if anything needs it after.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.llm import LLM, LLMBadRequest, Message
from core.llm.local import TransformersLLM
from core.llm.server import VLLMServer, default_python
from core.llm.vllm import VLLMClient
from knowledge import generation
from knowledge.citations import RepetitionStop
from knowledge.embeddings import Embedder, Vectors
from knowledge.generation import FALLBACK_MODEL, generate_answer, stream_answer
from knowledge.prompt import SYSTEM_PROMPT, build_prompt
from knowledge.types import Answer, Hit, Question
from tests.fakes import FakeLLM
from tests.tiny_llm import SENTENCES, build_tiny_llama, teach_reply

pytestmark = pytest.mark.slow

SERVED = "tiny"
# With ignore_eos the tiny model writes ENDLESS_TOKENS, about a minute's work for the server: far
# longer than any stall of the test process, and vLLM sends a slow reader many tokens per event,
# so a few thousand tokens could all be written before the reader's third part.
MAX_MODEL_LEN = 65536
ENDLESS_TOKENS = 60000
KILL_AFTER_PARTS = 3
ADAPTER = "it-desk"
REPLY = "Open the self-service portal and choose Forgot password [1]. The new one needs 14 characters [1]."
EXPECTED = REPLY
ADAPTER_REPLY = "Call the IT desk [2]."
PASSAGES = [
    (
        "Password reset",
        "Self-service",
        # The passage holds every claim of REPLY: the answer's citation check keeps only those.
        "To reset your password open the self-service portal and choose Forgot password. "
        "The new one needs 14 characters.",
    ),
    ("Laptops", "Loss", "Report a lost laptop to the IT service desk at once."),
    ("Vacation policy", "Allowance", "Employees get 25 days of paid vacation per calendar year."),
]
QUESTIONS = [
    "How do I reset my password?",
    "I forgot my password, what now?",
    "Where can I change my password?",
    "What do I do when my password expired?",
    "Comment réinitialiser mon mot de passe ?",
    "How long must a new password be?",
]


def _hits() -> list[Hit]:
    return [
        Hit(
            chunk_id=i,
            score=0.9 - 0.1 * i,
            text=text,
            section=section,
            anchor=section.lower(),
            page=None,
            document_id=f"doc-{i}",
            title=title,
            uri=f"handbook/{title.lower().replace(' ', '-')}.md",
            updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, (title, section, text) in enumerate(PASSAGES)
    ]


def _conversations() -> list[list[dict[str, str]]]:
    """The product's own prompts for the training questions (all passages fit: the counter is irrelevant)."""
    prompts = [
        asyncio.run(build_prompt(q, _hits(), llm=FakeLLM(), max_context_tokens=1536)) for q in QUESTIONS
    ]
    return [[dict(m) for m in prompt.messages] for prompt in prompts]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    model_dir: Path
    adapter_dir: Path
    server: VLLMServer

    @property
    def url(self) -> str:
        return self.server.url

    def ensure_up(self) -> None:
        process = self.server.process
        if process is None or process.poll() is not None:
            self.server.stop()
            self.server.port = _free_port()
            self.server.start()
            self.server.wait_ready(timeout=180)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    python = default_python()  # a clear error (run `make vllm-env`) when the environment is missing
    root = tmp_path_factory.mktemp("vllm")
    corpus = [*SENTENCES, *(p[2] for p in PASSAGES), REPLY, ADAPTER_REPLY, SYSTEM_PROMPT, *QUESTIONS]
    model_dir = build_tiny_llama(
        root / "tiny", corpus=corpus, hidden=128, layers=2, heads=2, max_positions=MAX_MODEL_LEN
    )
    conversations = _conversations()
    # Enough steps for every one of the six prompts to get the whole reply (at 150, one stopped
    # after its first sentence).
    teach_reply(model_dir, conversations, REPLY, steps=250)
    server = VLLMServer(
        model_dir,
        python=python,
        port=_free_port(),
        served_name=SERVED,
        max_model_len=MAX_MODEL_LEN,
        max_lora_rank=8,
        dtype="float32",  # the same numbers as the in-process adapter, for the parity test
        kv_cache_gib=1,
        log_path=root / "vllm.log",
        die_with_parent=True,  # even a test run killed with SIGKILL takes the server with it
    )
    try:
        server.start()
        # The adapter trains while vLLM boots: the two overlap on the machine's cores.
        adapter_dir = teach_reply(
            model_dir, conversations, ADAPTER_REPLY, steps=150, lr=5e-3, lora_out=root / "lora"
        )
        server.wait_ready(timeout=180)
        yield Served(model_dir, adapter_dir, server)
    finally:
        server.stop()


@pytest.fixture
def vllm(served: Served) -> Served:
    served.ensure_up()
    return served


@pytest.fixture
def query(embedder: Embedder) -> Vectors:
    return embedder.encode([QUESTIONS[0]])[0]


async def _answer(llm: VLLMClient, question: str, query: Vectors, embedder: Embedder, **kw: object) -> Answer:
    return await generate_answer(
        Question(question),
        _hits(),
        llm=llm,
        query_vector=query,
        embedder=embedder,
        min_score=0.3,
        **kw,  # type: ignore[arg-type]
    )


async def test_generate_answer_with_citations(vllm: Served, query: Vectors, embedder: Embedder) -> None:
    async with VLLMClient(vllm.url, model=SERVED) as llm:
        answer = await _answer(llm, QUESTIONS[0], query, embedder, max_answer_tokens=64)
    assert answer.model == SERVED and not answer.abstained
    assert answer.text == EXPECTED
    assert [(c.number, c.title) for c in answer.citations] == [(1, "Password reset")]
    assert answer.citations[0].uri == "handbook/password-reset.md#self-service"
    assert 0 < answer.latency_ms["first_token"] <= answer.latency_ms["total"]


async def test_stream_answer(vllm: Served, query: Vectors, embedder: Embedder) -> None:
    deltas: list[str] = []
    final: Answer | None = None
    async with VLLMClient(vllm.url) as llm:  # no default model: the server's own
        async for part in stream_answer(
            Question(QUESTIONS[1]), _hits(), llm=llm, query_vector=query, embedder=embedder, min_score=0.3
        ):
            if isinstance(part, Answer):
                final = part
            else:
                deltas.append(part)
    assert final is not None and final.model == SERVED
    assert len(deltas) > 5 and "".join(deltas) == final.text == EXPECTED
    assert final.latency_ms["first_token"] < final.latency_ms["total"]


async def test_sixteen_concurrent_questions(vllm: Served, query: Vectors, embedder: Embedder) -> None:
    async with VLLMClient(vllm.url, model=SERVED, total_timeout=120) as llm:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(_answer(llm, QUESTIONS[i % len(QUESTIONS)], query, embedder) for i in range(16))
        )
        elapsed = time.perf_counter() - started
    assert [a.model for a in answers] == [SERVED] * 16
    assert all(a.text == EXPECTED and a.citations[0].title == "Password reset" for a in answers), [
        (a.text, a.model) for a in answers
    ]
    assert elapsed < 60


async def test_unknown_model_is_a_bad_request_naming_it(
    vllm: Served, query: Vectors, embedder: Embedder
) -> None:
    async with VLLMClient(vllm.url) as llm:
        with pytest.raises(LLMBadRequest) as caught:
            await llm.chat([{"role": "user", "content": "Hi"}], model="finance-v9")
        answer = await _answer(llm, QUESTIONS[0], query, embedder, model="finance-v9")
    assert "'finance-v9'" in str(caught.value) and f"served models: {SERVED}" in str(caught.value)
    assert answer.model == FALLBACK_MODEL and "[1]" in answer.text


async def test_lora_adapter_loaded_at_run_time_and_chosen_per_request(vllm: Served) -> None:
    prompt = await build_prompt(QUESTIONS[0], _hits(), llm=FakeLLM(), max_context_tokens=1536)
    async with VLLMClient(vllm.url, model=SERVED) as llm:
        if ADAPTER not in await llm.models():
            await llm.load_lora(ADAPTER, str(vllm.adapter_dir))
        assert await llm.models() == [SERVED, ADAPTER]
        base = await llm.chat(prompt.messages, max_tokens=48)
        adapted = await llm.chat(prompt.messages, model=ADAPTER, max_tokens=48)
    assert base.text == REPLY
    assert adapted.model == ADAPTER and adapted.text != base.text
    assert adapted.text == ADAPTER_REPLY


async def test_completions_with_logprobs_for_distillation(vllm: Served) -> None:
    async with VLLMClient(vllm.url, model=SERVED) as llm:
        tokens = await llm.tokenize("Open the self-service portal")
        result = await llm.complete(
            "Open the self-service portal", max_tokens=4, logprobs=3, prompt_logprobs=2
        )
    assert result.completion_tokens == 4 and len(result.logprobs) == 4
    assert all(len(t.top) >= 3 and t.logprob <= 0 for t in result.logprobs)
    # One entry per prompt token; the first has no context, so no logprobs.
    assert result.prompt_tokens == len(tokens) == len(result.prompt_logprobs)
    assert result.prompt_logprobs[0] is None
    assert all(row is not None and len(row) >= 2 for row in result.prompt_logprobs[1:])


async def test_in_process_adapter_matches_vllm(vllm: Served) -> None:
    prompt = await build_prompt(QUESTIONS[2], _hits(), llm=FakeLLM(), max_context_tokens=1536)
    messages: list[Message] = prompt.messages
    local = TransformersLLM(vllm.model_dir, name=SERVED)
    async with VLLMClient(vllm.url, model=SERVED) as remote:
        expected = (await remote.chat(messages, max_tokens=48)).text
        assert await local.count_tokens(REPLY) == await remote.count_tokens(REPLY)
    assert isinstance(local, LLM)
    assert (await local.chat(messages, max_tokens=48)).text == expected == REPLY
    assert "".join([d async for d in local.stream_chat(messages, max_tokens=48)]) == expected

    async def listen() -> str:
        return "".join([d async for d in local.stream_chat(messages, max_tokens=48)])

    # More streams than the default thread pool has threads: none may starve the others.
    assert await asyncio.gather(*(listen() for _ in range(12))) == [expected] * 12
    with pytest.raises(LLMBadRequest, match="'other'"):
        await local.chat(messages, model="other")


async def test_in_process_logprobs_match_vllm(vllm: Served) -> None:
    """The teacher signal is the same whichever backend computes it (training relies on that)."""
    text = "Open the self-service portal"
    local = TransformersLLM(vllm.model_dir, name=SERVED)
    mine = await local.complete(text, max_tokens=3, logprobs=2, prompt_logprobs=2)
    async with VLLMClient(vllm.url, model=SERVED) as remote:
        theirs = await remote.complete(text, max_tokens=3, logprobs=2, prompt_logprobs=2)
    assert mine.text == theirs.text
    assert [t.token for t in mine.logprobs] == [t.token for t in theirs.logprobs]
    assert [t.logprob for t in mine.logprobs] == pytest.approx([t.logprob for t in theirs.logprobs], abs=1e-3)
    assert len(mine.prompt_logprobs) == len(theirs.prompt_logprobs)
    for ours, vllms in zip(mine.prompt_logprobs[1:], theirs.prompt_logprobs[1:], strict=True):
        assert ours is not None and vllms is not None
        assert set(ours) == set(vllms)
        assert [ours[k] for k in vllms] == pytest.approx(list(vllms.values()), abs=1e-3)


async def test_server_killed_mid_stream_still_answers(
    vllm: Served,
    query: Vectors,
    embedder: Embedder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs last: it kills the module's server (the fixture brings it back if a later test needs it).

    The kill waits for an event (the first streamed parts), never for a duration. ignore_eos makes
    the generation run to max_tokens, thousands of tokens, so it cannot finish before the kill lands
    however long a loaded machine keeps this process from reading the stream. The tiny model says
    its reply again and again after the taught one, and the repetition stop would end that stream
    as a finished answer wherever the kill lands late, so this test turns the stop off: what it
    checks is the cut stream, and the stop has tests of its own.
    """
    monkeypatch.setattr(generation, "RepetitionStop", _NeverStops)
    parts: list[str | Answer] = []
    # Timeouts far beyond any stall of a loaded machine: the only way this stream ends is the kill.
    async with VLLMClient(
        vllm.url,
        model=SERVED,
        retries=0,
        first_token_timeout=600,
        total_timeout=1200,
        extra_body={"ignore_eos": True},
    ) as llm:
        async for part in stream_answer(
            Question(QUESTIONS[0]),
            _hits(),
            llm=llm,
            query_vector=query,
            embedder=embedder,
            min_score=0.3,
            max_answer_tokens=ENDLESS_TOKENS,
        ):
            parts.append(part)
            if len(parts) == KILL_AFTER_PARTS:
                vllm.server.kill()  # returns once the process group is gone
    final = parts[-1]
    assert isinstance(final, Answer) and final.model == FALLBACK_MODEL
    assert final.citations[0].title == "Password reset" and "[1]" in final.text
    # The fallback's reason is the cut stream, not a finished answer judged unusable.
    assert "ended the answer stream early" in caplog.text
    deltas = [p for p in parts if isinstance(p, str)]
    assert KILL_AFTER_PARTS <= len(deltas) < ENDLESS_TOKENS


class _NeverStops(RepetitionStop):
    def check(self, text: str) -> int | None:
        return None
