"""A teacher's signal carried over to a student with another byte-level tokenizer (training.crosstok)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core import db
from core.settings import Settings
from privacy.budget import BudgetLedger
from tests.tiny_llm import SENTENCES, build_tiny_llama, build_tokenizer
from training.batches import example_tensors
from training.crosstok import EOS, TokenizerMismatch, Vocabulary, carry, stats
from training.data import TrainingDataError, tokenize
from training.types import QAExample, TeacherSignal

ANSWER = "Passwords expire every 90 days [1]."


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A teacher tokenizer and a student one with fewer merges and every id moved by two."""
    folder = tmp_path_factory.mktemp("tokenizers")
    teacher = build_tokenizer(SENTENCES, folder / "teacher", vocab_size=600)
    student = build_tokenizer(SENTENCES, folder / "student", vocab_size=300, first_special=["<a>", "<b>"])
    return teacher, student


def teacher_signal(teacher: Any, student: Any, answer: str = ANSWER) -> TeacherSignal:
    """The teacher's answer with rows of 4: its own token (0.7), then a token the student's vocabulary
    lacks (where there is one) and two it has."""
    ids = [*teacher(answer, add_special_tokens=False)["input_ids"], teacher.eos_token_id]
    source, target = Vocabulary(teacher), Vocabulary(student)
    regular = [(i, u) for i, u in sorted(source.units.items()) if isinstance(u, bytes) and len(u) > 2]
    missing = [i for i, u in regular if u not in target.ids][:1]
    shared = [i for i, u in regular if u in target.ids][:3]
    rows, lps = [], []
    for token in ids:
        row = (token, *[i for i in [*missing, *shared] if i != token][:3])
        rows.append(row)
        lps.append(tuple(math.log(p) for p in (0.7, 0.1, 0.05, 0.05)))
    return TeacherSignal("e1", "teacher", answer, tuple(ids), tuple(rows), tuple(lps))


def test_rows_reach_the_student_only_where_both_tokenizers_take_the_same_token(pair: tuple[Any, Any]) -> None:
    teacher, student = pair
    source, target = Vocabulary(teacher), Vocabulary(student)
    signal = teacher_signal(teacher, student)
    moved = carry(signal.token_ids, signal.top_ids, signal.top_logprobs, source, target)
    # The student's own tokens of the same bytes, ending in its own end of turn.
    assert moved.token_ids[-1] == student.eos_token_id != teacher.eos_token_id
    assert student.decode(moved.token_ids[:-1]) == ANSWER
    assert list(moved.token_ids[:-1]) == student(ANSWER, add_special_tokens=False)["input_ids"]
    assert len(moved.top_ids) == len(moved.top_logprobs) == len(moved.token_ids)
    # Where a row was carried, the teacher's token at the same offset is the same token, and each
    # kept candidate is the teacher's candidate of the same bytes, with the teacher's log-probability.
    teacher_at: dict[int, int] = {}
    offset = 0
    for position, token in enumerate(signal.token_ids):
        teacher_at[offset] = position
        unit = source.unit(token)
        offset += len(unit) if isinstance(unit, bytes) else 0
    offset, carried = 0, 0
    for token, row, lps in zip(moved.token_ids, moved.top_ids, moved.top_logprobs, strict=True):
        unit = target.unit(token)
        n = teacher_at.get(offset)
        same = n is not None and source.unit(signal.token_ids[n]) == unit
        assert bool(row) == same, (offset, unit)
        if row:
            carried += 1
            assert n is not None
            by_unit = dict(zip(map(source.unit, signal.top_ids[n]), signal.top_logprobs[n], strict=True))
            assert {target.unit(i): lp for i, lp in zip(row, lps, strict=True)}.items() <= by_unit.items()
            assert row[0] == token and lps[0] == pytest.approx(math.log(0.7))
        offset += len(unit) if isinstance(unit, bytes) else 0
    # The end of turn is the same event for both: its row is carried, mapped by role, not by text.
    assert moved.top_ids[-1][0] == student.eos_token_id and target.unit(student.eos_token_id) == EOS
    # The tokenizers disagree somewhere (the student has fewer merges), so not every token is taught.
    found = stats([moved])
    assert 0 < found.aligned == carried < found.tokens == len(moved.token_ids)
    # Long teacher tokens the student does not have are dropped from the rows: their mass is the tail's.
    assert found.kept_mass == pytest.approx(0.8 / 0.9)  # the missing candidate held 0.1 of 0.9
    assert all(len(row) == 3 for row in moved.top_ids if row)


def test_an_answer_that_ends_in_another_end_token_still_teaches_the_student_to_stop(
    tmp_path: Path, pair: tuple[Any, Any]
) -> None:
    # Qwen's signals may end in <|endoftext|> where its tokenizer's eos is <|im_end|>: a converted
    # tokenizer can name either. The answer ends there all the same, and so must the student's.
    _, student = pair
    teacher = build_tokenizer(
        SENTENCES, tmp_path / "qwen-like", vocab_size=600, first_special=["<|endoftext|>"]
    )
    end = teacher.convert_tokens_to_ids("<|endoftext|>")
    assert end != teacher.eos_token_id
    signal = teacher_signal(teacher, student)
    ids = (*signal.token_ids[:-1], end)
    last = (teacher.eos_token_id, end, *signal.top_ids[-1][2:])
    rows = (*signal.top_ids[:-1], last)
    moved = carry(ids, rows, signal.top_logprobs, Vocabulary(teacher), Vocabulary(student))
    assert moved.token_ids[-1] == student.eos_token_id
    # Both end tokens are the end of turn as candidates too: the row holds the student's eos once,
    # with the first one's log-probability.
    assert moved.top_ids[-1][0] == student.eos_token_id and student.eos_token_id not in moved.top_ids[-1][1:]
    assert moved.top_logprobs[-1][0] == pytest.approx(math.log(0.7))


def test_tokenize_carries_the_signal_over_when_given_the_teacher_tokenizer(pair: tuple[Any, Any]) -> None:
    teacher, student = pair
    example = QAExample("e1", "d", ("Passwords expire every 90 days.",), "When do passwords expire?", ANSWER)
    signal = teacher_signal(teacher, student)
    [moved] = tokenize([example], student, signals={"e1": signal}, teacher_tokenizer=teacher, max_len=2048)
    answer = moved.input_ids[moved.answer_start :]
    assert student.decode(answer[:-1]) == ANSWER and answer[-1] == student.eos_token_id
    assert len(moved.top_ids) == len(answer) and any(moved.top_ids) and not all(moved.top_ids)
    # Untaught answer tokens get no teacher entry (-inf): the loss gives them the cross-entropy only.
    tensors = example_tensors(moved, 2048)
    rows = tensors["top_logprobs"][moved.answer_start - 1 : len(moved.input_ids) - 1]
    taught = [bool(r) for r in moved.top_ids]
    assert [bool(math.isfinite(float(r[0]))) for r in rows] == taught
    # Without the teacher's tokenizer the rows do not fit the student's answer: a clear error.
    with pytest.raises(TrainingDataError, match="share one tokenizer"):
        tokenize([example], student, signals={"e1": signal}, max_len=2048)
    # The same tokenizer on both sides changes nothing.
    same = teacher_signal(student, student)
    plain = tokenize([example], student, signals={"e1": same}, max_len=2048)
    again = tokenize([example], student, signals={"e1": same}, teacher_tokenizer=student, max_len=2048)
    assert again == plain


def test_a_tokenizer_that_is_not_byte_level_is_refused_with_a_reason(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "</s>": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece()
    words = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    with pytest.raises(TokenizerMismatch, match="not a byte-level BPE tokenizer"):
        Vocabulary(words)


def test_a_signal_from_another_tokenizer_than_the_one_named_is_refused(pair: tuple[Any, Any]) -> None:
    teacher, student = pair
    source, target = Vocabulary(teacher), Vocabulary(student)
    signal = teacher_signal(teacher, student)
    too_far = (*signal.token_ids[:-1], len(teacher) + 5, signal.token_ids[-1])
    with pytest.raises(TokenizerMismatch, match="has no bytes"):
        carry(too_far, (*signal.top_ids, (1,)), (*signal.top_logprobs, (0.0,)), source, target)
    with pytest.raises(TokenizerMismatch, match="rows for"):
        carry(signal.token_ids, signal.top_ids[:-2], signal.top_logprobs[:-2], source, target)


def test_a_training_run_distils_a_teacher_of_another_tokenizer_into_the_student(
    pair: tuple[Any, Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from training import run

    teacher, _ = pair
    student = build_tiny_llama(tmp_path / "student", hidden=128, layers=1, heads=2, vocab_size=300)
    teacher.save_pretrained(str(tmp_path / "teacher"))  # a teacher folder: only its tokenizer is read here
    engine = db.make_engine(make_settings(database_url=f"sqlite:///{tmp_path / 'kb.db'}"))
    db.upgrade(engine)
    ledger = BudgetLedger(engine, epsilon=8.0, delta=1e-5)
    spec = run.RunSpec(run_id=5, epsilon=4.0, epochs=1, student=student, teacher=tmp_path / "teacher",
                       out_dir=tmp_path / "run", batch_size=4, max_len=2048, seed=0)  # fmt: skip
    train = [
        QAExample(f"e{n}", f"d{n}", ("Passwords expire every 90 days.",), "When?", ANSWER) for n in range(8)
    ]
    signals = {
        e.example_id: replace(teacher_signal(teacher, teacher), example_id=e.example_id) for e in train
    }
    data = run.Data(train=train, test=[], canary=train[0], dataset_hash="h")
    context = run.RunContext(engine, ledger, registry=None)  # type: ignore[arg-type]

    result = run.distill_student(spec, data, signals, context)

    assert result.steps >= 1 and math.isfinite(result.final_loss)
    assert result.epsilon_spent is not None and 0 < result.epsilon_spent <= 4.0
    assert ledger.state().epsilon_used == pytest.approx(result.epsilon_spent)
