"""The distillation data set: (context passages, question) -> answer examples built from the knowledge base.

Read top to bottom:

1. `generated_examples`: the teacher writes a question and its answer for chunks sampled from the KB
   (through the `core.llm.LLM` protocol); an answer must be a span of its chunk, or it is dropped.
2. `feedback_examples`: real questions whose answers got a thumbs-up (`behaviour_events`), with the
   stored answer as target and the cited chunks as context.
3. Every text passes `privacy.redaction` before it is kept (`redact_example`).
4. `paraphrase`: the teacher rewrites each question, so the student sees more than one wording.
5. `split_by_document`: train, validation and test never share a document.
6. `dataset_hash`: one digest of the examples, recorded against the privacy budget.
7. `tokenize`: QAExample (+ TeacherSignal) -> TrainExample with `answer_start`.

Every example is rendered by `format_prompt`: the bot's own answer prompt (knowledge.prompt) through
the model's chat template, so the student learns on what it is asked with in production.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.errors import KBError
from core.llm import LLM, LLMError, Message
from knowledge.prompt import grounded_messages
from privacy.redaction import Redactor
from training.types import QAExample, TeacherSignal, TrainExample

if TYPE_CHECKING:
    from sqlalchemy import Engine


class TrainingDataError(KBError):
    """The distillation data set cannot be built (too few examples, a model that answers nonsense)."""


QUESTION_PROMPT = (
    "Write one question an employee could ask that the passage below answers, and its short answer "
    "(a number, a name, a date or a few words) copied word for word from the passage.\n"
    "Reply in exactly two lines:\nQ: <question>\nA: <answer>\n\nPassage:\n{passage}"
)
PARAPHRASE_PROMPT = (
    "Rewrite the question below with other words, keeping its meaning. Reply with the question only.\n\n"
    "Question: {question}"
)
_QA = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s*$\s*^\s*A:\s*(?P<a>.+?)\s*$", re.MULTILINE)


def prompt_messages(example: QAExample) -> list[Message]:
    """The bot's own answer prompt (knowledge.prompt): numbered passages, `[n]` citations, abstention."""
    return grounded_messages(example.question, example.context)


def format_prompt(example: QAExample, tokenizer: Any) -> str:
    """What teacher and student are shown, through the model's chat template; the answer follows it."""
    try:
        messages = prompt_messages(example)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except ValueError as exc:  # a tokenizer without a chat template
        raise TrainingDataError(
            f"the tokenizer cannot render the bot's chat prompt: {exc}",
            hint="use an instruct model (its tokenizer carries a chat template)",
        ) from exc
    return str(text)


@dataclass(frozen=True)
class Chunk:
    """A KB chunk as the data builder needs it (id, document, text)."""

    chunk_id: int
    document_id: str
    text: str


def sample_chunks(engine: Engine, n: int, *, seed: int = 0, min_chars: int = 80) -> list[Chunk]:
    """Up to `n` chunks drawn at random (reproducibly) from the KB, skipping very short ones."""
    from sqlmodel import Session, col, select

    from core.models import ChunkRow

    with Session(engine) as session:
        rows = session.exec(
            select(ChunkRow.id, ChunkRow.document_id, ChunkRow.text).order_by(col(ChunkRow.id))
        )
        chunks = [Chunk(int(i or 0), d, t) for i, d, t in rows if len(t.strip()) >= min_chars]
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def redact_example(example: QAExample, redactor: Redactor) -> QAExample:
    """The example with personal data replaced in every text (context, question, answer, accept)."""
    return replace(
        example,
        context=tuple(redactor.redact(p).text for p in example.context),
        question=redactor.redact(example.question).text,
        answer=redactor.redact(example.answer).text,
        accept=tuple(redactor.redact(a).text for a in example.accept),
    )


def parse_question(reply: str, passage: str) -> tuple[str, str] | None:
    """(question, answer) from a teacher's reply to QUESTION_PROMPT; None when malformed or ungrounded.

    The answer must be a span of the passage, or the student would learn to invent answers.
    """
    match = _QA.search(reply)
    if match is None:
        return None
    question, answer = match["q"].strip(), match["a"].strip().rstrip(".")
    if not answer or answer.casefold() not in passage.casefold():
        return None
    return question, answer


async def generated_examples(
    llm: LLM, chunks: Sequence[Chunk], redactor: Redactor, *, model: str | None = None, max_tokens: int = 96
) -> list[QAExample]:
    """One teacher-written question per chunk; replies that are malformed or not grounded are dropped.

    Chunks are redacted before the teacher sees them, so no personal data reaches it either.
    """
    out: list[QAExample] = []
    for chunk in chunks:
        passage = redactor.redact(chunk.text).text
        prompt = QUESTION_PROMPT.format(passage=passage)
        reply = await llm.chat([{"role": "user", "content": prompt}], model=model, max_tokens=max_tokens)
        parsed = parse_question(reply.text, passage)
        if parsed is None:
            continue
        question, answer = parsed
        example = QAExample(
            example_id=f"gen-{chunk.chunk_id}",
            document_id=chunk.document_id,
            context=(passage,),
            question=question,
            answer=answer,
            origin="generated",
        )
        out.append(redact_example(example, redactor))
    return out


async def paraphrase(
    llm: LLM,
    examples: Sequence[QAExample],
    redactor: Redactor,
    *,
    model: str | None = None,
    per_example: int = 1,
) -> list[QAExample]:
    """The teacher's rewordings of each question (same context and answer), redacted like the rest.

    A failing call or an empty or unchanged reply adds nothing for that example; the data set is
    still usable without augmentation.
    """
    out: list[QAExample] = []
    for example in examples:
        seen = {example.question.casefold().strip()}
        for i in range(per_example):
            prompt = PARAPHRASE_PROMPT.format(question=example.question)
            try:
                reply = await llm.chat(
                    [{"role": "user", "content": prompt}],
                    model=model,
                    max_tokens=64,
                    temperature=0.7 if i else 0.0,
                )
            except LLMError:
                continue
            text = reply.text.strip().splitlines()[0].strip() if reply.text.strip() else ""
            if not text or text.casefold() in seen:
                continue
            seen.add(text.casefold())
            out.append(
                replace(
                    example,
                    example_id=f"{example.example_id}-para{i}",
                    question=redactor.redact(text).text,
                    origin="paraphrase",
                )
            )
    return out


@dataclass(frozen=True)
class Split:
    train: list[QAExample]
    validation: list[QAExample]
    test: list[QAExample]


def split_by_document(
    examples: Iterable[QAExample], *, validation: float = 0.1, test: float = 0.1, seed: int = 0
) -> Split:
    """Train/validation/test by document: every example of one document lands in the same part.

    The assignment hashes the document id with the seed, so adding documents never moves old ones.
    """
    parts: dict[str, list[QAExample]] = {"train": [], "validation": [], "test": []}
    for example in examples:
        digest = hashlib.sha256(f"{seed}:{example.document_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        part = "test" if u < test else "validation" if u < test + validation else "train"
        parts[part].append(example)
    return Split(parts["train"], parts["validation"], parts["test"])


def dataset_hash(examples: Iterable[QAExample]) -> str:
    """A digest of the examples' content, independent of their order: what the budget ledger records."""
    lines = sorted(
        json.dumps([e.example_id, e.document_id, list(e.context), e.question, e.answer], ensure_ascii=False)
        for e in examples
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The answer's token ids as they follow the prompt, ending in the end-of-turn token."""
    ids: list[int] = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"]
    return [*ids, int(tokenizer.eos_token_id)]


def prompt_ids(tokenizer: Any, example: QAExample) -> list[int]:
    """The chat prompt's token ids, with the start token once: from the template, else the tokenizer's.

    A text prompt sent to vLLM is tokenized with the tokenizer's special tokens, so a template that
    writes no start token gets it there too; one that writes it must not get a second.
    """
    text = format_prompt(example, tokenizer)
    bos = tokenizer.bos_token
    ids: list[int] = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
    return ids


def fitted_prompt(tokenizer: Any, example: QAExample, room: int) -> list[int]:
    """The prompt in at most `room` tokens: the last passages go first, then the first one is cut.

    The system rules, the question and the answer cue always stay: they are what the bot sends too.
    """
    ids = prompt_ids(tokenizer, example)
    context = list(example.context)
    while len(ids) > room and len(context) > 1:
        context.pop()
        ids = prompt_ids(tokenizer, replace(example, context=tuple(context)))
    while len(ids) > room and context and len(context[0]) > 40:
        keep = int(len(context[0]) * min(0.9, room / len(ids)))
        context = [context[0][:keep].rsplit(" ", 1)[0] + " …"]
        ids = prompt_ids(tokenizer, replace(example, context=tuple(context)))
    if len(ids) > room:
        raise TrainingDataError(
            f"example {example.example_id!r} does not fit in {room} prompt tokens even without context",
            hint="raise max_len or shorten the question",
        )
    return ids


def tokenize(
    examples: Sequence[QAExample],
    tokenizer: Any,
    *,
    signals: Mapping[str, TeacherSignal] | None = None,
    max_len: int = 256,
    require_signals: bool = False,
    teacher_tokenizer: Any = None,
) -> list[TrainExample]:
    """Token ids for the student, with the teacher's top-k rows at the answer tokens when given.

    With a signal, the answer is the one the teacher's rows describe (`signal.token_ids`); without,
    the reference answer (cross-entropy only). Long prompts lose their last passages first, never the
    question or the answer. A `teacher_tokenizer` other than the student's carries each signal over
    to the student's tokens (training.crosstok); without it the two must be one tokenizer.
    """
    carry = _carrier(teacher_tokenizer, tokenizer) if signals else None
    out: list[TrainExample] = []
    for example in examples:
        signal = signals.get(example.example_id) if signals is not None else None
        if signal is None and require_signals:
            raise TrainingDataError(
                f"no teacher signal for example {example.example_id!r}",
                hint="collect teacher signals for every training example first (training.teacher)",
            )
        if signal is None and not example.answer.strip():
            raise TrainingDataError(
                f"example {example.example_id!r} has no answer and no teacher signal",
                hint="let the teacher answer it first (training.teacher.collect_signals, mode='generate')",
            )
        if signal is not None and carry is not None:
            signal = carry(signal)
        elif signal is not None and signal.answer.strip() and not _reads_as(tokenizer, signal):
            raise TrainingDataError(
                f"the teacher's answer to {example.example_id!r} does not read the same in the student's "
                "tokenizer: the signal comes from another tokenizer",
                hint="the teacher and the student must share one tokenizer, or give the teacher's "
                "tokenizer (teacher_tokenizer) to carry the signal over",
            )
        answer = list(signal.token_ids) if signal is not None else answer_ids(tokenizer, example.answer)
        prompt = fitted_prompt(tokenizer, example, max_len - len(answer))
        top_ids: tuple[tuple[int, ...], ...] = ()
        top_logprobs: tuple[tuple[float, ...], ...] = ()
        if signal is not None and signal.top_ids:
            top_ids, top_logprobs = signal.top_ids, signal.top_logprobs
            if len(top_ids) != len(answer):
                raise TrainingDataError(
                    f"teacher signal of {example.example_id!r}: {len(top_ids)} rows for {len(answer)} tokens",
                    hint="the teacher and the student must share one tokenizer; recollect the signals",
                )
        out.append(
            TrainExample(
                input_ids=tuple(prompt + answer),
                answer_start=len(prompt),
                top_ids=top_ids,
                top_logprobs=top_logprobs,
            )
        )
    return out


def _reads_as(tokenizer: Any, signal: TeacherSignal) -> bool:
    """Whether the signal's token ids spell its answer in `tokenizer` (the special tokens left out)."""
    text: str = tokenizer.decode(list(signal.token_ids), skip_special_tokens=True)
    return text.strip() == signal.answer.strip()


def _carrier(teacher: Any, student: Any) -> Callable[[TeacherSignal], TeacherSignal] | None:
    """The step that puts a teacher signal into the student's tokens; None when they share a vocabulary."""
    if teacher is None or teacher is student:
        return None
    from training import crosstok

    source, target = crosstok.Vocabulary(teacher), crosstok.Vocabulary(student)
    if source.same_as(target):
        return None

    def carry(signal: TeacherSignal) -> TeacherSignal:
        moved = crosstok.carry(signal.token_ids, signal.top_ids, signal.top_logprobs, source, target)
        return replace(
            signal, token_ids=moved.token_ids, top_ids=moved.top_ids, top_logprobs=moved.top_logprobs
        )

    return carry
