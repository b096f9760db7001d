"""Question -> cited answer.

Without a language model the answer is extractive: the sentences of the best passages that are
closest to the question, each followed by the [n] of the source it came from; where a passage
holds a question that restates the asker's (an FAQ entry), the sentences that follow it. When even the
best passage is below `min_score`, the bot abstains and lists the closest documents instead.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from knowledge.embeddings import Embedder, Vectors
from knowledge.types import Answer, Citation, Hit

ABSTAIN_TEXT = "I could not find this in the knowledge base."
# A sentence ends at . ! ? before a space, unless what follows starts in lower case or with a digit
# (bold or not): "ext. 4410", "e.g. a badge", "approx. 5 days" go on.
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?!\**[a-z0-9])|(?<=[。！？])")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_SNIPPET_CHARS = 240
_QUESTION_MARKS = ("?", "？")
# A question in a passage this close to the asker's restates it (an FAQ entry's own question): its
# answer is what follows it. MiniLM puts paraphrased questions at 0.8-0.95, related ones at 0.5-0.7.
ECHO_MIN = 0.8


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
    candidates: list[tuple[int, int, str]] = []  # (citation number, position in its passage, sentence)
    passage: list[int] = []  # which of the top hits each candidate came from
    for rank, hit in enumerate(hits[:3]):
        for position, sentence in enumerate(_sentences(hit.text)):
            candidates.append((number[hit.link], position, sentence))
            passage.append(rank)
    if not candidates:
        chosen: list[tuple[int, int, str]] = []
    else:
        similarity = embedder.encode([s for _, _, s in candidates]) @ query
        chosen = _faq_answer(candidates, passage, similarity, max_sentences) or _closest(
            candidates, similarity, max_sentences
        )
    text = " ".join(f"{sentence} [{n}]" for n, _, sentence in chosen) or f"{_snippet(hits[0].text)} [1]"
    return Answer(text=text, citations=citations, confidence=round(hits[0].score, 4))


def _faq_answer(
    candidates: list[tuple[int, int, str]], passage: list[int], similarity: Vectors, max_sentences: int
) -> list[tuple[int, int, str]]:
    """An FAQ entry: a question in a passage that restates the asker's is followed by its answer.

    The sentences after the best such question, in its own passage, up to the next question; [] when
    no question in the passages restates the asker's (cosine below ECHO_MIN) or nothing follows it.
    """
    echoes = [i for i, c in enumerate(candidates) if _is_question(c[2]) and similarity[i] >= ECHO_MIN]
    if not echoes:
        return []
    best = max(echoes, key=lambda i: float(similarity[i]))
    answer = []
    for i in range(best + 1, len(candidates)):
        if passage[i] != passage[best] or _is_question(candidates[i][2]):
            break
        answer.append(candidates[i])
        if len(answer) == max_sentences:
            break
    return answer


def _closest(
    candidates: list[tuple[int, int, str]], similarity: Vectors, max_sentences: int
) -> list[tuple[int, int, str]]:
    """The sentences closest to the question, in reading order; questions only if nothing else is there."""
    # A question in a passage (an FAQ entry's heading) is the closest sentence to the question and
    # answers nothing: leave questions out while anything else is there.
    keep = [i for i, c in enumerate(candidates) if not _is_question(c[2])] or list(range(len(candidates)))
    scores = similarity[keep]
    # A small preference for the better-ranked passage breaks near-ties sensibly.
    scores = scores - 0.02 * np.array([candidates[i][0] for i in keep], dtype=np.float32)
    best = np.argsort(-scores)[:max_sentences].tolist()
    return sorted((candidates[keep[i]] for i in best), key=lambda c: (c[0], c[1]))


def _is_question(sentence: str) -> bool:
    return sentence.endswith(_QUESTION_MARKS)


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
