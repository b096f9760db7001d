"""The distillation data set: grounded teacher questions, liked real questions, redaction, splits, tokens."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from bot.store import BotStore
from bot.types import Incoming
from core.llm import LLMUnavailable
from core.models import BehaviourEventRow, ChunkRow, DocumentChangeRow, DocumentRow, utcnow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.prompt import SYSTEM_PROMPT
from knowledge.service import KnowledgeBase
from knowledge.types import Question
from privacy.redaction import Redactor
from tests.fakes import FakeLLM
from tests.training.tiny_task import FactTask, build_tokenizer
from training.data import (
    Chunk,
    TrainingDataError,
    dataset_hash,
    format_prompt,
    generated_examples,
    paraphrase,
    prompt_ids,
    sample_chunks,
    split_by_document,
    tokenize,
)
from training.feedback import feedback_examples
from training.types import QAExample, TeacherSignal

EMAIL = "jane.doe@example.com"
CITATION = {"number": 1, "uri": "handbook/vpn.md#access", "section": "Access"}


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


def _question(session: Session, text: str, data: dict[str, Any], *, votes: tuple[int, ...] = (1,)) -> int:
    """A question event as BotStore.record_question writes it, and its feedback votes."""
    now = utcnow()
    question = BehaviourEventRow(kind="question", platform="web", user_id="u1", text=text, at=now, data=data)
    session.add(question)
    session.flush()
    assert question.id is not None
    for value in votes:
        session.add(
            BehaviourEventRow(
                kind="feedback", platform="web", user_id="u1", question_id=question.id,
                data={"value": value}, at=now,
            )
        )  # fmt: skip
    return question.id


def _document(session: Session, document_id: str, text: str) -> dict[str, Any]:
    """A document with one chunk in section "Access"; what a citation of it stores."""
    now, uri = utcnow(), document_id.replace(":", "/")
    session.add(
        DocumentRow(
            id=document_id, source="handbook", uri=uri, title=uri, content_hash="h", updated_at=now,
            ingested_at=now,
        )
    )  # fmt: skip
    session.flush()
    chunk = ChunkRow(
        document_id=document_id, ordinal=0, text=text, section="Access", token_count=9, embedding=b""
    )
    session.add(chunk)
    session.flush()
    return {"document_id": document_id, "chunk_ids": [chunk.id]}


def _seed_kb(engine: Engine) -> tuple[int, int]:
    """The VPN page with one chunk; a liked and a disliked question citing it: (their ids)."""
    with Session(engine) as session:
        vpn = _document(session, "handbook:vpn.md", f"Use the VPN gateway gw7; ask {EMAIL}.")
        cited = {**CITATION, **vpn}
        answer = {"answer": f"Use gw7 [1][2]. Ask {EMAIL} [1].", "citations": [cited]}
        liked = _question(session, "how do I reach the vpn?", answer, votes=(1, 1, -1))
        disliked = _question(session, "vpn again?", answer, votes=(-1,))
        session.commit()
    return liked, disliked


def test_liked_questions_become_examples_with_their_stored_answer_and_cited_chunks(migrated: Engine) -> None:
    liked, disliked = _seed_kb(migrated)
    result = feedback_examples(migrated, Redactor())
    assert len(result.examples) == 1 and disliked not in result.skipped, "the disliked question is left out"
    example = result.examples[0]
    assert example.example_id == f"feedback-{liked}" and example.question == "how do I reach the vpn?"
    assert example.answer == "Use gw7. Ask [EMAIL].", (
        "citation markers go: the training prompt numbers nothing"
    )
    assert example.document_id == "handbook:vpn.md" and example.origin == "feedback"
    assert example.context == ("Use the VPN gateway gw7; ask [EMAIL].",)


def test_questions_whose_context_is_gone_or_useless_are_skipped_with_a_reason(migrated: Engine) -> None:
    liked, _ = _seed_kb(migrated)
    answer = {"answer": "Use gw7 [1]."}
    with Session(migrated) as session:
        gone = {**CITATION, "document_id": "handbook:gone.md", "chunk_ids": [999]}
        deleted = _question(session, "q deleted", {**answer, "citations": [gone]})
        missing = {**CITATION, "document_id": "handbook:vpn.md", "chunk_ids": [12345]}
        lost = _question(session, "q lost", {**answer, "citations": [missing]})
        wifi = _document(session, "handbook:wifi.md", "The guest wifi password changes every Monday.")
        changed = _question(session, "q changed", {**answer, "citations": [{**CITATION, **wifi}]})
        session.add(
            DocumentChangeRow(
                document_id="handbook:wifi.md", kind="updated", title="wifi", uri="handbook/wifi.md",
                content_hash="h2", changed_at=utcnow() + timedelta(seconds=1),
            )
        )  # fmt: skip
        live = session.exec(select(ChunkRow.id).where(ChunkRow.document_id == "handbook:vpn.md")).first()
        fresh = {**CITATION, "document_id": "handbook:vpn.md", "chunk_ids": [live]}
        abstained = _question(session, "q abstained", {**answer, "abstained": True, "citations": [fresh]})
        refused = _question(session, "", {"answer": "", "refused": True, "citations": []})
        listed = [fresh, {**gone, "number": 2}]  # [2] is listed as a source, never quoted
        partly = _question(session, "q partly", {**answer, "citations": listed})
        relied = _question(session, "q relied", {"answer": "See [2].", "citations": listed})
        legacy = _question(session, "q legacy", {"citations": [CITATION]})  # written before answers were kept
        session.commit()
    result = feedback_examples(migrated, Redactor())
    reasons = {key: reason.split(" ")[1:4] for key, reason in result.skipped.items()}
    assert reasons == {
        deleted: ["cited", "document", "was"],
        relied: ["cited", "document", "was"],
        lost: ["cited", "passages", "are"],
        changed: ["cited", "document", "changed"],
        abstained: ["answer", "abstained:", "nothing"],
        refused: ["question", "text", "was"],
        legacy: ["before", "the", "bot"],
    }
    assert "handbook:wifi.md" in result.skipped[changed] and "handbook:gone.md" in result.skipped[deleted]
    examples = {e.example_id: e for e in result.examples}
    assert set(examples) == {f"feedback-{partly}", f"feedback-{liked}"}
    assert examples[f"feedback-{partly}"].context == ("Use the VPN gateway gw7; ask [EMAIL].",)


async def test_a_liked_bot_answer_trains_until_its_document_changes_or_goes(
    settings: Settings, migrated: Engine, embedder: Embedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text("# Parking\n\nThe car park behind building C opens at 6:00 every day.\n")
    page = docs / "vpn.md"
    page.write_text(
        "---\ntitle: VPN\n---\n# VPN\n\n## Access\n\nConnect to the gateway gw7 with HaldenConnect. "
        f"When it fails, write to {EMAIL} and wait for an answer.\n"
    )
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert kb.ingest([docs]).ok
    answer = await kb.ask_async(Question("How do I connect to the VPN?"))
    assert not answer.abstained and answer.citations[0].chunk_ids
    store = BotStore(migrated)
    asked = Incoming("slack", "U1", f"How do I connect to the VPN? I am {EMAIL}", channel="C1")
    question_id = store.record_question(asked, answer)
    store.record_feedback(replace(asked, text=""), question_id, value=1)
    [example] = feedback_examples(migrated, Redactor()).examples
    assert example.document_id == answer.citations[0].document_id == "docs:vpn.md"
    assert "gw7" in example.context[0] and "gw7" in example.answer and "[1]" not in example.answer
    assert all(EMAIL not in text for text in (*example.context, example.question, example.answer))
    page.write_text(page.read_text().replace("gw7", "gw8"))
    assert kb.ingest([docs]).ok
    result = feedback_examples(migrated, Redactor())
    assert result.examples == [] and "docs:vpn.md" in result.skipped[question_id]
    assert "changed since the answer" in result.skipped[question_id]
    page.unlink()
    assert kb.ingest([docs]).ok
    assert "deleted" in feedback_examples(migrated, Redactor()).skipped[question_id]
    store.close()


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
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert list(plain.input_ids[plain.answer_start :]) == answer and plain.top_ids == ()
    assert list(plain.input_ids[: plain.answer_start]) == prompt_ids(tokenizer, example)
    # The bot's prompt: its system rules, the numbered passages, then the question.
    rendered = format_prompt(example, tokenizer)
    assert rendered.startswith(SYSTEM_PROMPT) and f"[1] {example.context[0]}" in rendered
    assert rendered.rstrip().endswith(f"Question: {example.question} answer :")
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


def test_long_prompts_lose_their_last_passages_first_never_the_rules_or_the_question(tokenizer: Any) -> None:
    example = FactTask(seed=0, facts=6).example("d")
    [full] = tokenize([example], tokenizer)
    two = replace(example, context=example.context[:2])
    room = len(prompt_ids(tokenizer, two)) + 1
    answer = len(full.input_ids) - full.answer_start
    [short] = tokenize([example], tokenizer, max_len=room + answer)
    assert list(short.input_ids[: short.answer_start]) == prompt_ids(tokenizer, two)
    assert short.input_ids[short.answer_start :] == full.input_ids[full.answer_start :]
    bare = len(prompt_ids(tokenizer, replace(example, context=())))
    with pytest.raises(TrainingDataError, match="does not fit"):
        tokenize([example], tokenizer, max_len=bare - 1 + answer)


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
