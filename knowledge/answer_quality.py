"""Answer quality on a labelled set: correctness, citation precision, abstention, invented citations.

Pure scoring: no model, no database, no retrieval. knowledge/answer_runs.py runs the product over
a set for `kb bench answers` and bench/answers.py and hands each answer here. The set format
(bench/sets/README.md) is JSON Lines:

    {"query": "How long is partner leave?", "answers": ["10 working days"],
     "relevant": ["hr/parental-leave.md#halden-partner-leave"], "unanswerable": false}

`answers` are short acceptable strings (any one of them in the answer text makes it correct);
`relevant` are citation links as `kb bench retrieval` reads them: the product's citation uri less
its first path segment (the source folder), with or without the `#anchor`. An unanswerable item
has `"unanswerable": true` and empty `answers` and `relevant`.

>>> item = AnswerItem("How long is partner leave?", ("10 working days",), ("hr/parental-leave.md",))
>>> passages = [CitedPassage(1, "handbook/hr/parental-leave.md#halden-partner-leave", "...")]
>>> score = score_answer(item, "You get **10 working days** [1][3].", passages, abstained=False)
>>> score.correct, score.cited, score.supported, score.invented_citations
(True, 1, 1, 1)
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import KnowledgeError

# A citation marker: [3], [1, 2], [1;2], [source 2]. More than three digits is a year or a code
# ("[2026]"), not a passage number, so it is neither a citation nor an invented one.
_MARKER = re.compile(
    r"\[\s*(?:(?:source|passage|doc(?:ument)?)\s*)?(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]", re.IGNORECASE
)
_NUMBER = re.compile(r"\d+")
# CJK punctuation, ideographs, kana and full-width forms: Chinese and Japanese put no spaces
# between words, so a space next to one of these carries no meaning ("5 天" and "5天" agree).
_CJK = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_BY_CJK = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")
_MARKUP = re.compile(r"[*`]")  # Markdown emphasis and code: "**30** days" states "30 days"
# Typographic quotes and dashes as a model or a document may write them: "Python’s" is "Python's",
# "07:00–19:00" is "07:00-19:00".
_TYPOGRAPHY = str.maketrans("‘’‚‛“”„‟‐‑‒–—−", "''''\"\"\"\"------")


@dataclass(frozen=True, slots=True)
class AnswerItem:
    """One labelled question; `line` is its line in the set file (0 when built in code)."""

    query: str
    answers: tuple[str, ...]
    relevant: tuple[str, ...]
    unanswerable: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True)
class CitedPassage:
    """A numbered passage the answer could cite: `uri` as the product's citation carries it."""

    number: int
    uri: str
    text: str


@dataclass(frozen=True, slots=True)
class AnswerScore:
    """One answer scored against its item; see `score_answer` for the definitions."""

    correct: bool
    abstained: bool
    unanswerable: bool
    cited: int
    supported: int
    invented_citations: int

    @property
    def citation_precision(self) -> float | None:
        return self.supported / self.cited if self.cited else None


@dataclass(frozen=True, slots=True)
class SetScore:
    """Totals over a set; a rate is None when nothing could be counted for it."""

    items: int
    answerable: int
    unanswerable: int
    correct: float | None  # share of answerable items answered correctly
    abstain: float | None  # share of unanswerable items abstained on
    false_abstain: float | None  # share of answerable items abstained on
    citation_precision: float | None  # supporting / cited passages, pooled over answerable items
    cited: int
    supported: int
    invented_citations: int  # total over all items

    def as_dict(self, *, digits: int = 4) -> dict[str, Any]:
        def rate(value: float | None) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "items": self.items,
            "answerable": self.answerable,
            "unanswerable": self.unanswerable,
            "correct": rate(self.correct),
            "abstain": rate(self.abstain),
            "false_abstain": rate(self.false_abstain),
            "citation_precision": rate(self.citation_precision),
            "cited": self.cited,
            "supported": self.supported,
            "invented_citations": self.invented_citations,
        }


def normalise(text: str) -> str:
    """The form both sides of a match take: NFKC (full-width digits and punctuation become ASCII),
    case folded, typographic quotes and dashes made ASCII, Markdown `*` and backticks dropped,
    whitespace runs made one space, and no space next to a CJK character."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_TYPOGRAPHY)
    text = _MARKUP.sub("", text)
    return _SPACE_BY_CJK.sub("", " ".join(text.split()))


def holds_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether one of the acceptable strings appears in `text` (both normalised)."""
    haystack = normalise(text)
    return any(needle and needle in haystack for needle in (normalise(a) for a in answers))


def citation_markers(text: str) -> list[int]:
    """Every passage number the text cites, in order, repeats kept: "[1][2, 3] [1]" -> [1, 2, 3, 1]."""
    numbers: list[int] = []
    for match in _MARKER.finditer(unicodedata.normalize("NFKC", text)):
        numbers.extend(int(n) for n in _NUMBER.findall(match.group(1)))
    return numbers


def link_matches(link: str, entry: str) -> bool:
    """A citation link counts for a label entry: the same section, or the same page for an entry
    without '#'. The link's first path segment (the source folder) is dropped first; the rule is
    the one `kb bench retrieval` applies (knowledge/evaluation.py), so one label file serves both."""
    uri = link.split("/", 1)[1] if "/" in link else link
    return uri == entry if "#" in entry else uri.split("#", 1)[0] == entry


def score_answer(
    item: AnswerItem, text: str, passages: Sequence[CitedPassage], *, abstained: bool
) -> AnswerScore:
    """Score one answer.

    - correct: for an answerable item, the answer did not abstain and its text holds an acceptable
      string (`holds_answer`); for an unanswerable item, the answer abstained.
    - cited: the distinct passages whose number the text cites with a [n] marker (a passage that
      was shown but never cited does not count).
    - supported: of the cited passages, those that hold the answer: the passage's uri matches a
      `relevant` entry (`link_matches`), or its text holds an acceptable string. Only counted for
      answerable items; on an unanswerable item nothing can support an answer, which the abstention
      figure already measures, so `cited` and `supported` are 0 there.
    - invented_citations: markers (every occurrence) whose number is no passage's number.
    """
    by_number = {passage.number: passage for passage in passages}
    markers = citation_markers(text)
    invented = sum(1 for number in markers if number not in by_number)
    if item.unanswerable:
        return AnswerScore(abstained, abstained, True, 0, 0, invented)
    cited = [by_number[number] for number in dict.fromkeys(markers) if number in by_number]
    supported = sum(1 for passage in cited if _supports(passage, item))
    correct = not abstained and holds_answer(text, item.answers)
    return AnswerScore(correct, abstained, False, len(cited), supported, invented)


def _supports(passage: CitedPassage, item: AnswerItem) -> bool:
    if any(link_matches(passage.uri, entry) for entry in item.relevant):
        return True
    return holds_answer(passage.text, item.answers)


def aggregate(scores: Iterable[AnswerScore]) -> SetScore:
    """Rates over a set: correct and false_abstain over answerable items, abstain over unanswerable
    ones, citation precision micro-averaged (all supported over all cited passages of answerable
    items, so an answer citing five passages weighs five times one citing one)."""
    scores = list(scores)
    answerable = [s for s in scores if not s.unanswerable]
    unanswerable = [s for s in scores if s.unanswerable]
    cited = sum(s.cited for s in answerable)
    supported = sum(s.supported for s in answerable)
    return SetScore(
        items=len(scores),
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        correct=_share(sum(s.correct for s in answerable), len(answerable)),
        abstain=_share(sum(s.abstained for s in unanswerable), len(unanswerable)),
        false_abstain=_share(sum(s.abstained for s in answerable), len(answerable)),
        citation_precision=_share(supported, cited),
        cited=cited,
        supported=supported,
        invented_citations=sum(s.invented_citations for s in scores),
    )


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def load_answer_set(path: Path) -> list[AnswerItem]:
    """Read a labelled answer set; a bad line is an error that names the file and its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(f"cannot read the answer set {path}: {exc}") from exc
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(parse_item(json.loads(line), line=number))
        except (json.JSONDecodeError, ValueError) as exc:
            raise KnowledgeError(f"{path}, line {number}: not a labelled answer ({exc})") from exc
    if not items:
        raise KnowledgeError(f"{path} has no labelled questions")
    return items


def parse_item(raw: object, *, line: int = 0) -> AnswerItem:
    """One decoded JSON object -> AnswerItem; ValueError says which field is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")
    query = raw.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be non-empty text")
    unanswerable = raw.get("unanswerable", False)
    if not isinstance(unanswerable, bool):
        raise ValueError("'unanswerable' must be true or false")
    answers = _strings(raw.get("answers", []), "answers")
    relevant = _strings(raw.get("relevant", []), "relevant")
    if unanswerable and (answers or relevant):
        raise ValueError("an unanswerable question has empty 'answers' and 'relevant'")
    if not unanswerable and not answers:
        raise ValueError("an answerable question needs at least one acceptable string in 'answers'")
    return AnswerItem(query, answers, relevant, unanswerable, line)


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"'{name}' must be a list of non-empty strings")
    return tuple(value)


def unknown_links(items: Iterable[AnswerItem], known: Iterable[str]) -> list[tuple[AnswerItem, str]]:
    """Labels whose link matches none of `known` (the product's citation links, source folder
    first, e.g. from the store), so a set written for another corpus or link form is caught before
    it scores 0 without a word."""
    exact = {link.split("/", 1)[1] if "/" in link else link for link in known}
    pages = {uri.split("#", 1)[0] for uri in exact}
    missing = []
    for item in items:
        for entry in item.relevant:
            if entry not in (exact if "#" in entry else pages):
                missing.append((item, entry))
    return missing
