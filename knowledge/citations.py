"""Post-processing of a model's answer: [n] markers token by token (so streaming and batch agree),
the check that each cited passage holds the words it is cited for, and the stop on runaway repetition.

The model saw passages numbered 1..k. In its answer, a marker that points at one of them is kept
and renumbered by order of first use (the first source cited becomes [1]); a marker that points
elsewhere ([7] of 5), a citation-shaped scrap ([a], [?], []) or an unclosed one ([3 at the end) is
dropped, and the whitespace around it tidied. Other bracketed text ("[see below]") stays as it is.

>>> rewriter = CitationRewriter(valid={1, 2, 3})
>>> rewriter.feed("Reset it online [3], or call IT [9]. It takes a day [3][1].") + rewriter.finish()
'Reset it online [1], or call IT. It takes a day [1][2].'
>>> rewriter.order
[3, 1]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from knowledge.lexical import CJK, STOP_WORDS, tokenize

_NUMBERS = re.compile(r"\s*(?:(?:source|passage|doc(?:ument)?)\s*)?(\d+(?:\s*[,;]\s*\d+)*)\s*", re.IGNORECASE)
_NUMERIC_PREFIX = re.compile(r"\s*(?:(?:source|passage|doc(?:ument)?)\s*)?[\d\s,;]*", re.IGNORECASE)
_WORDS = ("source", "passage", "document")
_SCRAP = re.compile(r"\S{0,3}")  # [a], [n], [?], [], [1a]: marker-shaped, meaning nothing
_MARKER = re.compile(r"\[\d+\]")
_YEARLIKE = re.compile(r"\d{4}")  # "[2024 budget]" is text, not a broken citation
_CLOSES_TIGHT = frozenset(".,;:!?)")
_MAX_MARKER_CHARS = 64


class CitationRewriter:
    """Feeds on model output in any pieces; returns the text that is safe to show so far.

    `order` lists the original passage numbers in the order they were first cited: new number
    i + 1 is passage `order[i]`.
    """

    def __init__(self, valid: Collection[int]) -> None:
        self.valid = frozenset(valid)
        self.order: list[int] = []
        self._bracket: str | None = None  # a possible marker, held back until it closes or cannot be one
        self._space = ""  # whitespace held back: it may sit before a marker that is dropped
        self._dropped = False
        self._started = False

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            self._char(char, out)
        return "".join(out)

    def finish(self) -> str:
        """The end of the answer: an unclosed marker is dropped, trailing whitespace too."""
        out: list[str] = []
        if self._bracket is not None:
            pending, self._bracket = self._bracket, None
            self._abandon(pending, out)
        self._space = ""
        return "".join(out)

    def _char(self, char: str, out: list[str]) -> None:
        if self._bracket is None:
            if char == "[":
                self._bracket = "["
            elif char.isspace():
                if self._started:
                    self._space += char
            else:
                self._plain(char, out)
            return
        if char == "]":
            content, self._bracket = self._bracket[1:], None
            self._close(content, out)
            return
        candidate = self._bracket + char
        if char not in "[\n" and len(candidate) <= _MAX_MARKER_CHARS and _could_be_marker(candidate[1:]):
            self._bracket = candidate
            return
        pending, self._bracket = self._bracket, None
        self._abandon(pending, out, lookahead=char)
        self._char(char, out)

    def _abandon(self, pending: str, out: list[str], *, lookahead: str = "") -> None:
        """`pending` turned out not to be a marker: an unclosed number ("[3 and") goes, the rest is text."""
        head = min(_numeric_head(pending[1:] + lookahead), len(pending) - 1)
        if head:
            self._dropped = True
            for char in pending[1 + head :]:
                self._char(char, out)
        else:
            for char in pending:
                self._plain(char, out)

    def _close(self, content: str, out: list[str]) -> None:
        numbers = _NUMBERS.fullmatch(content)
        if numbers:
            kept = []
            for number in (int(n) for n in re.split(r"\s*[,;]\s*", numbers.group(1).strip())):
                if number in self.valid and number not in kept:
                    kept.append(number)
            if kept:
                self._flush_space(out, before="[")
                for number in kept:
                    if number not in self.order:
                        self.order.append(number)
                    out.append(f"[{self.order.index(number) + 1}]")
                self._started = True
                return
            self._dropped = True
        elif _SCRAP.fullmatch(content):
            self._dropped = True
        else:
            for char in f"[{content}]":
                self._plain(char, out)

    def _plain(self, char: str, out: list[str]) -> None:
        self._flush_space(out, before=char)
        self._started = True
        out.append(char)

    def _flush_space(self, out: list[str], *, before: str) -> None:
        space, self._space = self._space, ""
        if space and self._dropped:
            # "word [7]." -> "word."; "word [7] more" -> "word more"; a paragraph break stays one.
            space = "" if before in _CLOSES_TIGHT else (space.lstrip(" \t") if "\n" in space else " ")
        out.append(space)
        self._dropped = False


def _numeric_head(content: str) -> int:
    """Length of the citation-like number list `content` starts with (0 if none; years are not one)."""
    match = _NUMERIC_PREFIX.match(content)
    if not match or not any(c.isdigit() for c in match.group()) or _YEARLIKE.search(match.group()):
        return 0
    return match.end()


def _could_be_marker(content: str) -> bool:
    """Whether more characters could still make `[content` a citation or a scrap worth dropping."""
    if _SCRAP.fullmatch(content):
        return True
    if _NUMERIC_PREFIX.fullmatch(content):
        return not _YEARLIKE.search(content)
    word = content.strip().lower()
    return any(full.startswith(word) for full in _WORDS)


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text)


def looks_like_garbage(text: str) -> bool:
    """Output no one should be shown: nearly no letters, broken characters, or one word on repeat."""
    body = strip_markers(text).strip()
    letters = sum(char.isalnum() for char in body)
    if letters < 2 or letters < 0.3 * len(body):
        return True
    if body.count("\ufffd") > 0.05 * len(body):
        return True
    words = body.split()
    return len(words) >= 12 and len(set(words)) <= 0.2 * len(words)


# A claim is held by a passage when this share of its own terms (those not already in the question)
# are in the passage, and every number it states is there too.
SUPPORT_MIN = 0.5
_MARKER_RUN = re.compile(
    r"(?:\s*\[\s*(?:(?:source|passage|doc(?:ument)?)\s*)?\d+(?:\s*[,;]\s*\d+)*\s*\])+", re.IGNORECASE
)
_DIGITS = re.compile(r"\d+(?:[.,:]\d+)*")
# Words that only lead in to a citation ("According to [1], ...", "根据[1]，..."): a marker after
# them is the next claim's source, and they are no claim of their own.
_LEAD_IN = re.compile(
    r"(?:^|[.!?。！？;；]\s*)(?:as\s+(?:stated|described|shown|noted|explained)\s+in|according\s+to|as\s+per"
    r"|per|see(?:\s+also)?|in|from|source|sources|根据第?|依据第?|按照第?|据|参见|参考|见|如|来源)"
    r"\s*[:：]?\s*$",
    re.IGNORECASE,
)
_WRITTEN = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class CheckedCitations:
    """An answer's markers checked against the passages: the text with repairs, and what was done."""

    text: str
    kept: int  # markers whose passage holds the words they follow
    repaired: int  # markers re-numbered to the passage that holds the words
    unsupported: int  # markers after words that no passage holds (their text is not grounded)


@dataclass(frozen=True, slots=True)
class _Source:
    """One claim's passage numbers after the check, and whether they were kept, repaired or lost."""

    numbers: tuple[int, ...]
    kept: int = 0
    repaired: int = 0
    unsupported: int = 0


def check_citations(text: str, passages: Mapping[int, str], question: str = "") -> CheckedCitations:
    """Check the claims of a model's answer (markers numbered as in the prompt) against the passages.

    A claim is the text a marker run follows, since the previous one; text after the last marker
    (or a whole answer without any) is a claim too. Its passage must hold its words (`support`);
    if not, the marker is re-numbered to the passage that holds them best, and an uncited claim
    gets that passage's number. A claim that no passage holds is counted as unsupported and left
    uncited; markers of numbers that no passage has are removed as invented. A marker after a
    lead-in ("According to [1], X") is X's source, checked against X's words; the lead-in is no claim.
    """
    asked = set(tokenize(question))
    out: list[str] = []
    kept = repaired = unsupported = 0
    position = 0
    runs = [*_MARKER_RUN.finditer(text), None]
    for index, match in enumerate(runs):
        claim = text[position : match.start() if match else len(text)]
        cited = [int(n) for n in re.findall(r"\d+", match.group())] if match else []
        if match is not None and _LEAD_IN.search(claim):
            # The claim this marker stands for comes after it, up to the next marker.
            after = text[match.end() : (following.start() if (following := runs[index + 1]) else len(text))]
            checked = _source(after, cited, passages, asked)
        else:
            checked = _source(claim, cited, passages, asked)
            unsupported += checked.unsupported  # a lead-in's claim is counted once, as itself
        good = checked.numbers
        kept, repaired = kept + checked.kept, repaired + checked.repaired
        markers = "".join(f"[{n}]" for n in good)
        if match is None and markers:  # an uncited last claim: its number before the full stop
            body = claim.rstrip()
            stop = len(body.rstrip(".。!！?？")) if body else 0
            out.append(f"{body[:stop]} {markers}{body[stop:]}" if stop else claim)
        else:
            lead = match.group()[: len(match.group()) - len(match.group().lstrip())] if match else ""
            out.append(claim + (lead + markers if markers else ""))
        position = match.end() if match else len(text)
    return CheckedCitations("".join(out), kept, repaired, unsupported)


def _source(claim: str, cited: list[int], passages: Mapping[int, str], asked: set[str]) -> _Source:
    """A claim's markers: those cited whose passage holds it, else the passage that holds it best
    (repaired), else none (unsupported). A claim of nothing of its own keeps none."""
    scores = {n: support(claim, body, asked) for n, body in passages.items()}
    claims = _claims(claim, asked)  # a marker after no claim of its own ("[1] It is...") goes
    good = tuple(n for n in dict.fromkeys(cited) if claims and scores.get(n, 0.0) >= SUPPORT_MIN)
    if good or not claims:
        return _Source(good, kept=len(good))
    best = max(scores, key=lambda n: scores[n], default=None)
    if best is not None and scores[best] >= SUPPORT_MIN:
        return _Source((best,), repaired=1)
    return _Source((), unsupported=1)


def restates(text: str, question: str, headings: Sequence[str] = ()) -> bool:
    """Whether an answer says nothing beyond the question and the passages' headings.

    Small models sometimes answer with the question again, or with the line that names a passage's
    source ("Laptop request and replacement — Replacement cycle [1]"): cited, so it passes the
    citation check, but it answers nothing.

    Words are compared as written, not as index terms: an answer "`__name__`" to "Which attribute
    holds a module's name?", or "reversed()" to a question about reverse order, says something the
    question did not, though stemming and dropped underscores make their index terms the same.
    """
    said = _written_words(strip_markers(text))
    known = _written_words(question).union(*(_written_words(h) for h in headings))
    return bool(said) and said <= known


def _written_words(text: str) -> set[str]:
    """A text's words as written (lower case, stop words left out); Chinese as single characters."""
    words: set[str] = set()
    for word in _WRITTEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if CJK.search(word):
            words.update(c for c in word if c not in STOP_WORDS)
        elif word not in STOP_WORDS:
            words.add(word)
    return words


def _claims(text: str, asked: set[str]) -> bool:
    """Whether text says anything of its own: a number, or a term the question did not bring."""
    plain = strip_markers(text)
    return bool(_DIGITS.search(plain)) or any(t not in asked for t in tokenize(plain))


def support(claim: str, passage: str, asked: set[str] | frozenset[str] = frozenset()) -> float:
    """Share of the claim's terms (less the question's own) that `passage` holds; 0 when the claim
    states a number the passage does not."""
    plain = unicodedata.normalize("NFKC", strip_markers(claim))
    body = unicodedata.normalize("NFKC", passage)
    if any(number not in body for number in _DIGITS.findall(plain)):
        return 0.0
    terms = list(dict.fromkeys(tokenize(plain)))
    if not terms:
        return 1.0
    held = set(tokenize(body))
    return sum(t in held for t in terms) / len(terms)


class RepetitionStop:
    """Notices runaway repetition in an answer being written, so the caller can stop the model.

    Runaway is a sentence said a second time, or the text's tail one short unit over and over
    ("1, 1, 1, 1, ..."). `check` returns how much of the text to keep (up to the first copy's end),
    or None while the text is fine.
    """

    def __init__(self, *, max_unit: int = 64, copies: int = 4, min_run: int = 24) -> None:
        self.max_unit, self.copies, self.min_run = max_unit, copies, min_run

    def check(self, text: str) -> int | None:
        return self._repeated_sentence(text) or self._repeated_unit(text)

    def _repeated_sentence(self, text: str) -> int | None:
        seen: set[str] = set()
        for match in _SENTENCE_END.finditer(text):
            sentence = " ".join(strip_markers(match.group()).split()).casefold().rstrip(".!?。！？")
            if len(sentence) < 8:
                continue
            if sentence in seen:
                return len(text[: match.start()].rstrip())
            seen.add(sentence)
        return None

    def _repeated_unit(self, text: str) -> int | None:
        for unit in range(1, self.max_unit + 1):
            span = max(unit * self.copies, self.min_run)
            if len(text) < span + unit:
                break
            tail = text[-span:]
            if tail == (tail[-unit:] * (span // unit + 1))[-span:]:
                start = len(text) - span
                while start >= unit and text[start - unit : start] == text[start : start + unit]:
                    start -= unit
                return start + unit
        return None


_SENTENCE_END = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+|\n|$)")
