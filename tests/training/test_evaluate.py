"""Evaluation: SQuAD-style scores, greedy answers, speed, and canary exposure that tells memorizers apart."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import FakeLLM
from tests.training.tiny_task import build_tokenizer, make_canaries, random_secrets
from training.data import answer_ids, prompt_ids
from training.evaluate import (
    agreement,
    answer_correct,
    canary_exposure,
    chance_exposure,
    exact_match,
    exposure,
    greedy_answers,
    score,
    token_f1,
    tokens_per_second,
)

CANDIDATES = 500


def test_exact_match_and_f1_normalize_case_spaces_and_punctuation() -> None:
    assert exact_match("Anna  Berg.", "anna berg") == 1.0
    assert exact_match("anna", "anna berg") == 0.0
    assert token_f1("anna", "anna berg") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("x", "y") == 0.0
    assert score(["a", "b c"], ["a", "b"]) == pytest.approx(type(score([], []))(0.5, (1 + 2 / 3) / 2, 2))
    assert agreement(["1 2", "x"], ["1 2", "y"]) == 0.5
    with pytest.raises(ValueError, match="one prediction"):
        score(["a"], [])


def test_exposure_is_log2_candidates_minus_log2_rank() -> None:
    assert exposure(-1.0, [-5.0, -6.0, -7.0]) == 2.0
    assert exposure(-8.0, [-5.0, -6.0, -7.0]) == 0.0
    assert exposure(-5.0, [-5.0, -9.0, -9.0]) == 1.0  # a tie counts against the secret
    ranks = [
        exposure(-float(r), [-float(c) for c in range(1, 100) if c != r] + [-100.0]) for r in range(1, 101)
    ]
    assert chance_exposure(99) == pytest.approx(sum(ranks) / len(ranks))
    assert chance_exposure(10_000) == pytest.approx(1.44, abs=0.01)


def _tiny(tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _memorize(model: Any, tokenizer: Any, examples: list[Any], steps: int = 120) -> None:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    rows = []
    for example in examples:
        prompt, answer = prompt_ids(tokenizer, example), answer_ids(tokenizer, example.answer)
        rows.append((torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])))
    model.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_exposure_separates_a_model_that_memorized_the_canary_from_one_that_did_not(tokenizer: Any) -> None:
    canaries = make_canaries(3)
    memorizer, innocent = _tiny(tokenizer, 0), _tiny(tokenizer, 0)
    _memorize(memorizer, tokenizer, [canaries[0].example])
    _memorize(innocent, tokenizer, [c.example for c in canaries[1:]])  # same kind of data, not this secret

    candidates = random_secrets(CANDIDATES, seed=5, exclude=[canaries[0].secret])
    remembered = canary_exposure(memorizer, tokenizer, canaries[0].example, candidates)
    unseen = canary_exposure(innocent, tokenizer, canaries[0].example, candidates)
    ceiling = exposure(0.0, [-1.0] * CANDIDATES)
    assert remembered == pytest.approx(ceiling)  # ranked first among 501
    assert unseen < ceiling - 4, "more than 16 candidates beat the secret in a model that never saw it"
    assert greedy_answers(memorizer, tokenizer, [canaries[0].example]) == [canaries[0].secret]
    assert greedy_answers(innocent, tokenizer, [canaries[0].example]) != [canaries[0].secret]


def test_greedy_answers_in_batches_match_one_at_a_time(tokenizer: Any) -> None:
    canaries = make_canaries(4)
    model = _tiny(tokenizer, 1)
    _memorize(model, tokenizer, [c.example for c in canaries], steps=40)
    examples = [c.example for c in canaries]
    batched = greedy_answers(model, tokenizer, examples, batch_size=4)
    assert batched == [greedy_answers(model, tokenizer, [e])[0] for e in examples]
    assert all(answer.split() for answer in batched)


def test_canary_candidates_must_have_the_secret_length(tokenizer: Any) -> None:
    canary = make_canaries(1)[0]
    with pytest.raises(ValueError, match="same number of tokens"):
        canary_exposure(_tiny(tokenizer, 0), tokenizer, canary.example, ["1 2"])


async def test_tokens_per_second_keeps_every_prompt_in_flight_once() -> None:
    llm = FakeLLM(default="ok", delay_s=0.0)
    rate = await tokens_per_second(llm, [f"p{i}" for i in range(20)], concurrency=8, max_tokens=4)
    assert rate == 0.0  # the fake reports no completion tokens
    assert sorted(call.prompt or "" for call in llm.calls) == sorted(f"p{i}" for i in range(20))


def test_a_reply_is_right_as_the_product_judges_answers() -> None:
    from knowledge.prompt import NOT_FOUND
    from training.types import QAExample

    spanned = QAExample(
        "q", "d", ("Employees get 30 days.",), "How many days?", "30 days [1]", accept=("30 days",)
    )
    assert answer_correct("You get 30 days of leave [1].", spanned) == 1.0
    assert answer_correct("You get 25 days [1].", spanned) == 0.0
    assert answer_correct(NOT_FOUND, spanned) == 0.0  # abstaining where the passages answer is wrong
    other = QAExample("q", "d", ("VPN setup.",), "How many days?", NOT_FOUND)
    assert answer_correct(NOT_FOUND, other) == 1.0 and answer_correct("30 days [1]", other) == 0.0
    templated = QAExample("q", "d", ("x",), "What?", "the vpn needs a token")
    assert answer_correct("the vpn needs a token", templated) == 1.0
    assert 0 < answer_correct("a token", templated) < 1  # token F1 where no short answer is known
