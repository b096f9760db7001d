"""The distillation data set: grounded teacher questions, liked real questions, redaction, splits, tokens."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from core.llm import LLMUnavailable
from core.models import BehaviourEventRow, ChunkRow, DocumentRow, utcnow
from privacy.redaction import Redactor
from tests.fakes import FakeLLM
from training.data import (
    Chunk,
    TrainingDataError,
    dataset_hash,
    feedback_examples,
    format_prompt,
    generated_examples,
    paraphrase,
    sample_chunks,
    split_by_document,
    tokenize,
)
from training.task import FactTask, build_tokenizer
from training.types import QAExample, TeacherSignal

EMAIL = "jane.doe@example.com"
CITATION = {"uri": "handbook/vpn.md#access", "section": "Access"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


async def test_teacher_questions_are_kept_only_when_grounded_and_never_see_personal_data() -> None:
    llm = FakeLLM()
    llm.enqueue(
        "Q: Who resets passwords?\nA: the IT desk",
        "Q: How long is the vacation?\nA: 40 days",  # not in the passage: invented
        "Sure! Here is a question.",  # malformed
    )
    chunks = [
        Chunk(1, "it:passwords", f"Passwords are reset by the IT desk; write to {EMAIL} if it fails."),
        Chunk(2, "hr:vacation", "Employees get 25 days of paid vacation per calendar year."),
        Chunk(3, "hr:sick", "Report a sick day to your manager before 9 am."),
    ]
    examples = await generated_examples(llm, chunks, Redactor())
    assert [(e.document_id, e.question, e.answer, e.origin) for e in examples] == [
        ("it:passwords", "Who resets passwords?", "the IT desk", "generated")
    ]
    assert EMAIL not in examples[0].context[0] and "[EMAIL]" in examples[0].context[0]
    assert all(EMAIL not in call.text for call in llm.calls)
    assert len(llm.calls) == 3


async def test_paraphrases_keep_context_and_answer_and_skip_failures_and_copies() -> None:
    base = QAExample("e1", "d1", ("the sky is blue",), "what color is the sky", "blue")
    llm = FakeLLM()
    llm.enqueue("Which colour does the sky have?", "what color is the sky", LLMUnavailable("down"))
    out = await paraphrase(
        llm, [base, replace(base, example_id="e2"), replace(base, example_id="e3")], Redactor()
    )
    assert [(e.example_id, e.question, e.origin) for e in out] == [
        ("e1-para0", "Which colour does the sky have?", "paraphrase")
    ]
    assert out[0].context == base.context and out[0].answer == base.answer and out[0].document_id == "d1"


def _seed_kb(engine: Engine) -> None:
    now = utcnow()
    with Session(engine) as session:
        session.add(
            DocumentRow(
                id="handbook:vpn.md", source="handbook", uri="handbook/vpn.md", title="VPN", content_hash="h",
                updated_at=now, ingested_at=now,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            ChunkRow(
                document_id="handbook:vpn.md", ordinal=0, text=f"Use the VPN gateway gw7; ask {EMAIL}.",
                section="Access", token_count=9, embedding=b"",
            )
        )  # fmt: skip
        for i, (text, value) in enumerate([("how do I reach the vpn?", 1), ("vpn again?", -1)]):
            question = BehaviourEventRow(
                kind="question", platform="web", user_id="u1", text=text, at=now,
                data={"answer": f"Use gw7 [{i}]", "citations": [CITATION]},
            )  # fmt: skip
            session.add(question)
            session.flush()
            session.add(
                BehaviourEventRow(
                    kind="feedback", platform="web", user_id="u1", question_id=question.id,
                    data={"value": value}, at=now,
                )
            )  # fmt: skip
        session.commit()


def test_liked_questions_become_examples_with_their_cited_passages(migrated: Engine) -> None:
    _seed_kb(migrated)
    examples = feedback_examples(migrated, Redactor())
    assert len(examples) == 1, "the disliked question is left out"
    example = examples[0]
    assert example.question == "how do I reach the vpn?" and example.answer == "Use gw7 [0]"
    assert example.document_id == "handbook:vpn.md" and example.origin == "feedback"
    assert example.context == ("Use the VPN gateway gw7; ask [EMAIL].",)


def test_split_by_document_never_shares_a_document_and_is_stable_when_documents_are_added() -> None:
    task = FactTask(seed=0)
    examples = [replace(e, document_id=f"doc-{i % 300}") for i, e in enumerate(task.examples(1200))]
    split = split_by_document(examples, validation=0.1, test=0.2)
    parts = [{e.document_id for e in part} for part in (split.train, split.validation, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert 30 < len(parts[2]) < 90 and sum(map(len, (split.train, split.validation, split.test))) == 1200
    more = split_by_document(
        [*examples, *FactTask(seed=9).examples(100, prefix="new")], validation=0.1, test=0.2
    )
    assert {e.example_id for e in split.test} <= {e.example_id for e in more.test}


def test_dataset_hash_ignores_order_and_sees_any_change() -> None:
    examples = FactTask(seed=0).examples(50)
    assert dataset_hash(examples) == dataset_hash(list(reversed(examples)))
    assert dataset_hash(examples) != dataset_hash([*examples[:-1], replace(examples[-1], answer="other")])
    assert dataset_hash(examples) != dataset_hash(examples[:-1])


def test_tokenize_marks_the_answer_and_aligns_teacher_rows(tokenizer: Any) -> None:
    example = FactTask(seed=0).example("d")
    [plain] = tokenize([example], tokenizer)
    answer = tokenizer(" " + example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert list(plain.input_ids[plain.answer_start :]) == answer and plain.top_ids == ()
    assert tokenizer.decode(plain.input_ids[: plain.answer_start], skip_special_tokens=True) == format_prompt(
        example
    )
    rows = tuple((t, 5) for t in answer)
    signal = TeacherSignal(
        example.example_id, "t", example.answer, tuple(answer), rows, tuple((0.0, -9.0) for _ in answer)
    )
    [taught] = tokenize([example], tokenizer, signals={example.example_id: signal})
    assert taught.top_ids == rows and len(taught.top_logprobs) == len(answer)
    broken = replace(signal, top_ids=rows[:-1], top_logprobs=signal.top_logprobs[:-1])
    with pytest.raises(TrainingDataError, match="rows for"):
        tokenize([example], tokenizer, signals={example.example_id: broken})
    with pytest.raises(TrainingDataError, match="no teacher signal"):
        tokenize([example], tokenizer, signals={}, require_signals=True)
    with pytest.raises(TrainingDataError, match="no answer"):
        tokenize([replace(example, answer="")], tokenizer)


def test_long_prompts_lose_passages_from_the_front_never_the_question(tokenizer: Any) -> None:
    example = FactTask(seed=0, facts=6).example("d")
    [full] = tokenize([example], tokenizer)
    [short] = tokenize([example], tokenizer, max_len=40)
    assert len(short.input_ids) == 40 and short.input_ids[0] == tokenizer.bos_token_id
    assert short.input_ids[-12:] == full.input_ids[-12:]
    with pytest.raises(TrainingDataError, match="does not fit"):
        tokenize([example], tokenizer, max_len=5)


def test_sampled_chunks_are_reproducible_and_skip_short_ones(migrated: Engine) -> None:
    _seed_kb(migrated)
    with Session(migrated) as session:
        for i in range(5):
            text = f"Passage {i} of the VPN page, long enough to ask a question about it: gateway gw{i}."
            session.add(
                ChunkRow(
                    document_id="handbook:vpn.md", ordinal=i + 1, text=text, token_count=20, embedding=b""
                )
            )
        session.add(
            ChunkRow(
                document_id="handbook:vpn.md", ordinal=9, text="Too short.", token_count=2, embedding=b""
            )
        )
        session.commit()
    first = sample_chunks(migrated, 3, seed=1, min_chars=60)
    assert first == sample_chunks(migrated, 3, seed=1, min_chars=60) and len(first) == 3
    assert all(len(c.text) >= 60 and c.document_id == "handbook:vpn.md" for c in first)
    assert len(sample_chunks(migrated, 100, min_chars=60)) == 5
