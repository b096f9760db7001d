"""Question -> cited answer.

Without a language model the answer is extractive: the sentences of the best passages that are
closest to the question, each followed by the [n] of the source it came from. When even the
best passage is below `min_score`, the bot abstains and lists the closest documents instead.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from knowledge.embeddings import Embedder, Vectors
from knowledge.types import Answer, Citation, Hit

ABSTAIN_TEXT = "I could not find this in the knowledge base."
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_SNIPPET_CHARS = 240
_QUESTION_MARKS = ("?", "？")


def cite(hits: list[Hit]) -> list[Citation]:
    """Number the hits' sources 1..n; several chunks of one section share a number."""
    citations: dict[str, Citation] = {}
    for hit in hits:
        if hit.link not in citations:
            citations[hit.link] = Citation(
                number=len(citations) + 1,
                title=hit.title,
                uri=hit.link,
                section=hit.section,
                snippet=_snippet(hit.text),
                score=round(hit.score, 4),
                document_id=hit.document_id,
                chunk_ids=(hit.chunk_id,),
            )
        elif hit.chunk_id not in (cited := citations[hit.link]).chunk_ids:
            citations[hit.link] = replace(cited, chunk_ids=(*cited.chunk_ids, hit.chunk_id))
    return list(citations.values())


def extractive_answer(
    query: Vectors, hits: list[Hit], *, embedder: Embedder, min_score: float, max_sentences: int = 3
) -> Answer:
    """Pick the sentences closest to the question from the top passages, citing each."""
    citations = cite(hits)
    if not hits or hits[0].score < min_score:
        return Answer(
            text=ABSTAIN_TEXT + (" The closest documents are listed below." if hits else ""),
            citations=citations,
            confidence=round(max((h.score for h in hits), default=0.0), 4),
            abstained=True,
        )
    number = {c.uri: c.number for c in citations}
    candidates: list[tuple[int, int, str]] = []  # (citation number, position, sentence)
    for hit in hits[:3]:
        for position, sentence in enumerate(_sentences(hit.text)):
            candidates.append((number[hit.link], position, sentence))
    # A question in a passage (an FAQ entry's heading) is the closest sentence to the question and
    # answers nothing: leave questions out while anything else is there.
    statements = [c for c in candidates if not c[2].endswith(_QUESTION_MARKS)]
    candidates = statements or candidates
    if not candidates:
        chosen: list[tuple[int, int, str]] = []
    else:
        scores = embedder.encode([s for _, _, s in candidates]) @ query
        # A small preference for the better-ranked passage breaks near-ties sensibly.
        scores = scores - 0.02 * np.array([n for n, _, _ in candidates], dtype=np.float32)
        best = sorted(np.argsort(-scores)[:max_sentences].tolist())
        chosen = sorted((candidates[i] for i in best), key=lambda c: (c[0], c[1]))
    text = " ".join(f"{sentence} [{n}]" for n, _, sentence in chosen) or f"{_snippet(hits[0].text)} [1]"
    return Answer(text=text, citations=citations, confidence=round(hits[0].score, 4))


def _sentences(text: str) -> list[str]:
    """Sentences of prose, list items without their markers, and table rows as 'header: value'."""
    out: list[str] = []
    header: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            header = None
            parts = _SENTENCE.split(_LIST_MARK.sub("", stripped))
        elif _TABLE_RULE.match(stripped):
            continue
        else:
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            if header is None:
                header = cells  # a table's first row names its columns
                continue
            pairs = zip(header, cells, strict=False)
            parts = ["; ".join(f"{name}: {value}" if name else value for name, value in pairs if value)]
        out.extend(part.strip() for part in parts if len(part.strip()) >= 12)
    return out


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
