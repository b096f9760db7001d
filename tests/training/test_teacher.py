"""Teacher signals: top-k at every answer token from a served or local teacher, cached, failing clearly."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from core.llm import Completion, LLMUnavailable, TokenLogprob
from core.llm.local import TransformersLLM
from tests.fakes import FakeLLM
from tests.training.tiny_task import FactTask, build_tokenizer
from training.data import answer_ids, tokenize
from training.evaluate import greedy_answers
from training.teacher import (
    SignalCache,
    TeacherError,
    TeacherServer,
    collect_signals,
    from_generation,
    from_reference,
    local_signals,
)

K = 4


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (head_dim 64, as vLLM's CPU attention needs) with the task's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("teacher")
    tokenizer = build_tokenizer(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked distributions: no near-ties for vLLM and torch to break apart
    model.save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def tokenizer(teacher_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(teacher_dir))


def _local_model(teacher_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32).eval()


EXAMPLES = FactTask(seed=3).examples(4)


def _flat(rows: tuple[tuple[float, ...], ...]) -> list[float]:
    return [value for row in rows for value in row]


def _truncate_last_line(root: Path) -> None:
    [path] = root.glob("*.jsonl")
    path.write_text(path.read_text()[:-40])


async def test_reference_signals_from_a_served_teacher_match_the_teacher_run_locally(
    teacher_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    llm = TransformersLLM(teacher_dir, name="teacher", threads=1)
    try:
        signals = await collect_signals(llm, EXAMPLES, tokenizer, k=K, cache=SignalCache(tmp_path))
    finally:
        await llm.aclose()
    local = local_signals(_local_model(teacher_dir), tokenizer, EXAMPLES, k=K)
    for example in EXAMPLES:
        served, mine = signals[example.example_id], local[example.example_id]
        assert served.token_ids == tuple(answer_ids(tokenizer, example.answer)) == mine.token_ids
        assert served.top_ids == mine.top_ids and len(served.top_ids[0]) == K
        assert _flat(served.top_logprobs) == pytest.approx(_flat(mine.top_logprobs), abs=1e-4)
        assert all(list(row) == sorted(row, reverse=True) for row in served.top_logprobs)
    rows = tokenize(EXAMPLES, tokenizer, signals=signals, require_signals=True)
    assert [len(r.top_ids) for r in rows] == [len(r.input_ids) - r.answer_start for r in rows]


async def test_a_rerun_reads_the_cache_and_never_asks_the_teacher_again(
    teacher_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    llm = TransformersLLM(teacher_dir, name="teacher", threads=1)
    try:
        first = await collect_signals(llm, EXAMPLES[:2], tokenizer, k=K, cache=SignalCache(tmp_path))
    finally:
        await llm.aclose()
    down = FakeLLM(name="teacher")
    down.enqueue(*(LLMUnavailable("down") for _ in range(4)))
    again = await collect_signals(down, EXAMPLES[:2], tokenizer, k=K, cache=SignalCache(tmp_path))
    assert down.calls == [] and again.keys() == first.keys()
    for key, signal in first.items():
        assert again[key].top_ids == signal.top_ids and again[key].token_ids == signal.token_ids
        assert _flat(again[key].top_logprobs) == pytest.approx(_flat(signal.top_logprobs), abs=1e-5)
    # A line cut short by a crash loses that example only.
    _truncate_last_line(tmp_path)
    cache = SignalCache(tmp_path)
    assert cache.get("teacher", "reference", K, EXAMPLES[0]) is not None
    assert cache.get("teacher", "reference", K, EXAMPLES[1]) is None
    assert cache.get("teacher", "reference", K + 1, EXAMPLES[0]) is None, "k is part of the key"


async def test_a_down_teacher_or_one_without_logprobs_fails_with_a_clear_message(tokenizer: Any) -> None:
    down = FakeLLM(name="teacher")
    down.enqueue(LLMUnavailable("connection refused"))
    with pytest.raises(TeacherError, match="failed on example") as caught:
        await collect_signals(down, EXAMPLES[:1], tokenizer, k=K)
    assert caught.value.hint is not None and "vLLM" in caught.value.hint
    mute = FakeLLM(name="teacher", default="5")
    with pytest.raises(TeacherError, match="no prompt log-probabilities"):
        await collect_signals(mute, EXAMPLES[:1], tokenizer, k=K)
    with pytest.raises(TeacherError, match="no log-probabilities"):
        await collect_signals(mute, EXAMPLES[:1], tokenizer, k=K, mode="generate")


def test_a_teacher_with_another_tokenizer_is_refused(tokenizer: Any) -> None:
    example = EXAMPLES[0]
    completion = Completion(text="", model="t", prompt_logprobs=(None, {5: -0.1}, {6: -0.2}))
    with pytest.raises(TeacherError, match="prompt tokens where the student"):
        from_reference(completion, example, tokenizer, model="t", k=K)
    odd = Completion(text="x", model="t", logprobs=(TokenLogprob("zzz qqq", -0.1, {}),))
    with pytest.raises(TeacherError, match="not one token"):
        from_generation(odd, example, tokenizer, model="t", k=K)


def test_generated_answers_map_token_texts_and_ids_and_always_end_in_eos(tokenizer: Any) -> None:
    vocab = tokenizer.get_vocab()
    eos = tokenizer.eos_token_id
    items = (
        TokenLogprob(" anna", -0.1, {" anna": -0.1, "ben": -2.5}),
        TokenLogprob(f"token_id:{vocab['berg']}", -0.2, {f"token_id:{vocab['berg']}": -0.2}),
    )
    signal = from_generation(
        Completion(text=" anna berg", model="t", logprobs=items), EXAMPLES[0], tokenizer, model="t", k=K
    )
    assert signal.answer == "anna berg"
    assert signal.token_ids == (vocab["anna"], vocab["berg"], eos)
    assert signal.top_ids == ((vocab["anna"], vocab["ben"]), (vocab["berg"],), (eos,))


def test_local_teacher_can_save_full_logits(teacher_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    import numpy as np

    signals = local_signals(_local_model(teacher_dir), tokenizer, EXAMPLES[:2], k=K, full_logits_dir=tmp_path)
    for example in EXAMPLES[:2]:
        signal = signals[example.example_id]
        assert signal.full_logits_path is not None
        logits = np.load(signal.full_logits_path)
        assert logits.shape == (len(signal.token_ids), len(tokenizer))
        assert list(np.argsort(-logits, axis=-1)[:, 0]) == [row[0] for row in signal.top_ids]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_real_vllm_teacher_gives_the_local_teachers_top_k_and_answers(
    teacher_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    from core.llm.server import default_python
    from core.llm.vllm import VLLMClient

    python = default_python()  # a clear error (run `make vllm-env`) when the environment is missing
    examples = FactTask(seed=4).examples(6)
    server = TeacherServer(
        teacher_dir, python=python, port=_free_port(), served_name="teacher", dtype="float32", kv_cache_gib=1,
        log_path=tmp_path / "vllm.log", die_with_parent=True,
    )  # fmt: skip

    async def ask() -> tuple[dict[str, Any], dict[str, Any]]:
        async with VLLMClient(
            server.url, model="teacher", total_timeout=120, extra_body={"return_tokens_as_token_ids": True}
        ) as client:
            ref = await collect_signals(client, examples, tokenizer, k=K, concurrency=6)
            gen = await collect_signals(client, examples, tokenizer, k=K, mode="generate", max_tokens=6)
            return ref, gen

    with server:
        server.wait_ready(timeout=300)
        reference, generated = asyncio.run(ask())
    model = _local_model(teacher_dir)
    local = local_signals(model, tokenizer, examples, k=K)
    for example in examples:
        assert reference[example.example_id].top_ids == local[example.example_id].top_ids
        assert _flat(reference[example.example_id].top_logprobs) == pytest.approx(
            _flat(local[example.example_id].top_logprobs), abs=2e-3
        )
    answers = greedy_answers(model, tokenizer, examples, max_new_tokens=6)
    assert [generated[e.example_id].answer for e in examples] == answers
