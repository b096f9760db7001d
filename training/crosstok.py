"""A teacher's top-k signal carried over to a student whose tokenizer is another one.

The loss compares the teacher's and the student's next-token distributions position by position,
which needs both to predict the same event over the same ids. With two tokenizers neither holds
as such, so the signal is carried over where it can be, and nowhere else:

- The answer is re-tokenized by the student from the teacher's answer bytes (both tokenizers are
  byte-level, so the text is exactly the same), ending in the student's end-of-turn token where
  the teacher's answer ended in a special token of its own (its eos, or another end such as
  Qwen's <|endoftext|>: both mean the end of turn there, and so do they as candidates).
- A student answer token gets the teacher's row where the two tokenizations agree: the teacher
  has a token starting at the same byte offset, and it is the same token (the same bytes, or both
  the end of turn). There the teacher's row is the distribution over what follows the same
  prefix, the same event the student predicts.
- Within such a row, a teacher candidate is kept when the student's vocabulary has a token of
  exactly its bytes (special tokens by their text, the end of turn by role); the rest of the row's
  mass joins the tail, which the loss's tail entry (training.losses, `sparse="tail"`) keeps as one
  entry on both sides. The two k + 1 entry distributions then describe the same events: each kept
  entry the same next bytes, the tail everything else.
- Every other answer token has no teacher row and is learned from the cross-entropy alone.

This is exact-match vocabulary mapping at shared token boundaries: it never invents a teacher
probability, it only drops what cannot be matched, and `CarryStats` says how much was dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from core.errors import KBError

Unit = bytes | str  # a regular token's bytes; a special token's text; EOS for the end of turn
EOS = "<end of turn>"


class TokenizerMismatch(KBError):
    """Two tokenizers whose tokens cannot be compared (the signal cannot be carried over)."""


def _name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the tokenizer")


@cache
def _byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): printable bytes stand for themselves, the others
    (controls, space, 127-160, 173) for the characters from U+0100 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(kept)
    shifted = 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            chars.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(kept, chars, strict=True)}


class Vocabulary:
    """A tokenizer's tokens as comparable units, both ways (id -> unit, unit -> id)."""

    def __init__(self, tokenizer: Any) -> None:
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        if type(decoder).__name__ != "ByteLevel":
            raise TokenizerMismatch(
                f"{_name(tokenizer)} is not a byte-level BPE tokenizer "
                f"(its decoder is {type(decoder).__name__}): its tokens cannot be matched byte for byte",
                hint="use a student whose tokenizer is byte-level BPE (Qwen, SmolLM2, Llama 3, GPT-2 "
                "families), or one that shares the teacher's tokenizer",
            )
        self.tokenizer = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        special = {int(i): str(t.content) for i, t in tokenizer.added_tokens_decoder.items()}
        alphabet = _byte_decoder()
        self.units: dict[int, Unit] = {}
        for text, i in tokenizer.get_vocab().items():
            if i == self.eos:
                self.units[i] = EOS
            elif i in special:
                self.units[i] = special[i]
            elif all(ch in alphabet for ch in text):
                self.units[i] = bytes(alphabet[ch] for ch in text)
        self.ids: dict[Unit, int] = {}
        for i, unit in sorted(self.units.items()):
            self.ids.setdefault(unit, i)

    def unit(self, token_id: int) -> Unit | None:
        return self.units.get(token_id)

    def same_as(self, other: Vocabulary) -> bool:
        return self.units == other.units


@dataclass(frozen=True)
class Carried:
    """One answer in the student's tokens; `top_ids`/`top_logprobs` one row per token (empty: none)."""

    token_ids: tuple[int, ...]
    top_ids: tuple[tuple[int, ...], ...]
    top_logprobs: tuple[tuple[float, ...], ...]
    teacher_mass: float  # the teacher's top-k mass over the rows that were carried
    kept_mass: float  # of it, what the student's vocabulary could take


@dataclass(frozen=True)
class CarryStats:
    """How much of the teacher's signal reached the student, over a set of answers."""

    answers: int
    tokens: int  # student answer tokens
    aligned: int  # of them, with a teacher row
    kept_mass: float  # the mean share of a carried row's top-k mass that mapped onto student ids

    @property
    def aligned_share(self) -> float:
        return self.aligned / self.tokens if self.tokens else 0.0

    def to_json(self) -> dict[str, float | int]:
        share, kept = round(self.aligned_share, 4), round(self.kept_mass, 4)
        return {"answers": self.answers, "tokens": self.tokens, "aligned": self.aligned,
                "aligned_share": share, "kept_mass": kept}  # fmt: skip


def _spans(vocab: Vocabulary, ids: Iterable[int]) -> tuple[list[tuple[int, Unit]], bytes, int | None]:
    """Each answer token's start offset and unit, the answer's bytes, and the id that ended it.

    An answer ends at its first special token, whatever its name: the end of turn its tokenizer
    appended (chat models have several, such as Qwen's <|im_end|> and <|endoftext|>, and a
    tokenizer converted elsewhere may name the other one as its eos).
    """
    spans: list[tuple[int, Unit]] = []
    text = b""
    for token_id in ids:
        unit = vocab.unit(token_id)
        if unit is None:
            raise TokenizerMismatch(
                f"token id {token_id} has no bytes in {_name(vocab.tokenizer)}",
                hint="the teacher's signal must come from the teacher tokenizer given here",
            )
        if not isinstance(unit, bytes):
            spans.append((len(text), EOS))
            return spans, text, token_id
        spans.append((len(text), unit))
        text += unit
    return spans, text, None


def carry(
    token_ids: Iterable[int],
    top_ids: Iterable[Iterable[int]],
    top_logprobs: Iterable[Iterable[float]],
    teacher: Vocabulary,
    student: Vocabulary,
) -> Carried:
    """One teacher answer and its top-k rows, in the student's tokens (see the module docstring)."""
    rows = [(tuple(i), tuple(lp)) for i, lp in zip(top_ids, top_logprobs, strict=True)]
    spans, text, ending = _spans(teacher, token_ids)
    ends = {teacher.eos} | ({ending} if ending is not None else set())
    if len(rows) < len(spans):
        raise TokenizerMismatch(
            f"the teacher's signal has {len(rows)} rows for {len(spans)} answer tokens",
            hint="recollect the teacher's signals",
        )
    at = {(offset, unit): n for n, (offset, unit) in enumerate(spans)}
    body: list[int] = student.tokenizer(text.decode("utf-8", errors="replace"), add_special_tokens=False)[
        "input_ids"
    ]
    ids = [*body, student.eos] if ending is not None else body
    out_ids: list[tuple[int, ...]] = []
    out_lp: list[tuple[float, ...]] = []
    teacher_mass = kept_mass = 0.0
    offset = 0
    for token_id in ids:
        unit = student.unit(token_id)
        n = at.get((offset, unit)) if unit is not None else None
        if isinstance(unit, bytes):
            offset += len(unit)
        if n is None:
            out_ids.append(())
            out_lp.append(())
            continue
        kept: dict[int, float] = {}
        for candidate, logprob in zip(*rows[n], strict=True):
            mapped = EOS if candidate in ends else teacher.unit(candidate)
            target = student.ids.get(mapped) if mapped is not None else None
            teacher_mass += _exp(logprob)
            if target is not None and target not in kept:
                kept[target] = logprob
                kept_mass += _exp(logprob)
        out_ids.append(tuple(kept))
        out_lp.append(tuple(kept.values()))
    return Carried(tuple(ids), tuple(out_ids), tuple(out_lp), teacher_mass, kept_mass)


def _exp(logprob: float) -> float:
    return math.exp(logprob) if logprob > -1e30 else 0.0


def stats(carried: Iterable[Carried]) -> CarryStats:
    answers = tokens = aligned = 0
    shares: list[float] = []
    for item in carried:
        answers += 1
        tokens += len(item.token_ids)
        aligned += sum(1 for row in item.top_ids if row)
        if item.teacher_mass > 0:
            shares.append(item.kept_mass / item.teacher_mass)
    return CarryStats(answers, tokens, aligned, sum(shares) / len(shares) if shares else 0.0)
