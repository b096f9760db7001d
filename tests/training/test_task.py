"""The templated reading-comprehension task: answers are spans of the passages, canaries are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import answer_ids, format_prompt, prompt_ids
from training.task import (
    ATTRIBUTES,
    CANARY_DIGITS,
    OFFICES,
    FactTask,
    build_tokenizer,
    make_canaries,
    question_domain,
    random_secrets,
    vocabulary,
)


def _words(text: str) -> list[str]:
    return text.split()


def _is_span(answer: str, passage: str) -> bool:
    a, p = _words(answer), _words(passage)
    return any(p[i : i + len(a)] == a for i in range(len(p) - len(a) + 1))


def test_the_same_seed_draws_the_same_examples_and_another_seed_others() -> None:
    assert FactTask(seed=3).examples(20) == FactTask(seed=3).examples(20)
    assert FactTask(seed=3).examples(20) != FactTask(seed=4).examples(20)


def test_every_answer_is_a_word_span_of_exactly_the_passage_about_the_asked_office() -> None:
    for example in FactTask(seed=0).examples(500):
        office = next(w for w in _words(example.question) if w in OFFICES)
        holders = [p for p in example.context if _is_span(example.answer, p) and office in _words(p)]
        assert holders, example
        assert example.origin == "synthetic" and example.document_id == example.example_id


def test_distractors_repeat_the_asked_kind_of_fact_for_another_office() -> None:
    examples = FactTask(seed=1, facts=4, distractor_p=1.0).examples(50)
    assert all(len(e.context) == 5 for e in examples)
    assert all(len(e.context) == 4 for e in FactTask(seed=1, facts=4, distractor_p=0.0).examples(50))


def test_templates_cover_it_hr_and_finance_with_several_wordings() -> None:
    assert {a.domain for a in ATTRIBUTES} == {"it", "hr", "finance"}
    assert sum(len(a.facts) for a in ATTRIBUTES) >= 30
    assert sum(len(a.questions) for a in ATTRIBUTES) >= 24
    with pytest.raises(ValueError, match="facts must be"):
        FactTask(facts=0)


def test_domains_limit_the_kinds_of_fact_in_passages_and_questions() -> None:
    finance_words = {w for a in ATTRIBUTES if a.domain == "finance" for t in a.facts for w in _words(t)}
    finance_words -= {w for a in ATTRIBUTES if a.domain != "finance" for t in a.facts for w in _words(t)}
    assert finance_words
    examples = FactTask(seed=2, domains=("it", "hr")).examples(400)
    assert {question_domain(e.question) for e in examples} == {"it", "hr"}
    assert not any(finance_words & set(_words(p)) for e in examples for p in e.context)
    everything = FactTask(seed=2).examples(400)
    assert {question_domain(e.question) for e in everything} == {"it", "hr", "finance"}
    assert FactTask(seed=2, domains=None).examples(20) == FactTask(seed=2).examples(20)
    with pytest.raises(ValueError, match="unknown domains"):
        FactTask(domains=("legal",))
    with pytest.raises(ValueError, match="facts must be between 1 and 4"):
        FactTask(domains=("it",), facts=5)


def test_question_domain_reads_only_the_task_s_own_questions() -> None:
    assert question_domain("what is the vpn gateway for helsinki") == "it"
    assert question_domain("what is the vpn gateway for atlantis") is None
    assert question_domain("what is the vpn gateway for helsinki today") is None
    assert question_domain("") is None


def test_canary_secrets_are_in_no_passage_and_have_the_canary_format() -> None:
    canaries = make_canaries(8)
    assert len({c.secret for c in canaries}) == 8
    for canary in canaries:
        assert canary.example.answer == canary.secret
        assert len(canary.secret.split()) == CANARY_DIGITS
        assert not any(_is_span(canary.secret, p) for p in canary.example.context)
    assert make_canaries(8) == canaries


def test_random_secrets_are_distinct_and_leave_out_the_excluded() -> None:
    secret = make_canaries(1)[0].secret
    candidates = random_secrets(2000, exclude=[secret])
    assert len(set(candidates)) == 2000 and secret not in candidates
    with pytest.raises(ValueError, match="only 100 secrets"):
        random_secrets(101, digits=2)


def test_the_word_level_tokenizer_covers_every_word_and_round_trips(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path / "tok")
    assert len(tokenizer) == len(vocabulary()) + 4
    for example in [*FactTask(seed=2).examples(200), *(c.example for c in make_canaries(3))]:
        ids = prompt_ids(tokenizer, example)
        assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == format_prompt(example)
        answer = answer_ids(tokenizer, example.answer)
        assert answer[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(answer, skip_special_tokens=True) == example.answer
