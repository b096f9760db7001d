"""Answers to "what's new": the documents the asker may read that changed in a window, dated and cited.

"what changed in the last 7 days", "compliance news of the last three days", "since October",
"上周有什么更新": a time phrase (see `knowledge.timefilter`) with words about change, or a time
phrase alone, asks for a list, not for a passage. Without a topic the list is every readable
document updated in the window, newest first; with one ("compliance", "IT") it is the documents
in the window that retrieval finds for the topic, best first. Each entry is one citation (the
document's first passage), so the surfaces link it as they link any answer.

Access is checked as retrieval checks it: the catalog's mask over the asker's groups picks the
candidates, and each document's ACL is read again from the database with its passage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from knowledge.catalog import Filters
from knowledge.lexical import is_chinese
from knowledge.retrieval import Retriever
from knowledge.timefilter import MAX_LOOKBACK_DAYS, TimeScope, merge, parse_time_scope
from knowledge.types import Answer, Citation, Hit, Question
from privacy.access import can_read

LISTING_MODEL = "whats-new"  # Answer.model of a listing: no model and no passage extraction wrote it
_BATCH = 500  # chunk rows read per round while collecting the newest documents

# Words that ask about change rather than name a topic.
_INTENT = re.compile(
    r"(?i:\b(?:what(?:'s|’s|\s+is|\s+has|\s+have|\s+was|\s+were)?(?:\s+been)?\s+(?:new|changed|updated|added)"
    r"|news|updates?|updated|changes?|changed|new|latest|recent|modified|published)\b)"
    r"|有什么(?:新的?|更新|变化|变更|改动)|更新了?|变化|变更|改动|新闻|动态|新增"
)
_FILLER = re.compile(
    r"(?i:\b(?:what|which|any|anything|is|are|was|were|has|have|been|did|do|does|the|a|an|in|of|for|about"
    r"|on|to|there|documents?|docs?|pages?|show|list|tell|me|us|please|get|got)\b)"
    r"|有什么|有哪些|哪些|什么|的|了|吗|呢|请|列出|告诉我|文档|有"
)
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]+|[\u3400-\u9fff]{2,}")


@dataclass(frozen=True, slots=True)
class Listing:
    """A "what's new" question read: its window and the topic it is limited to ("" for none)."""

    scope: TimeScope
    topic: str


def read_listing(text: str, *, now: datetime) -> Listing | None:
    """The listing `text` asks for, or None when it is not a time-scoped question about change."""
    scope = parse_time_scope(text, now=now)
    if scope is None:
        return None
    if scope.rest and _INTENT.search(scope.rest) is None:
        return None  # "the hotel limit in the travel policy this year": a question, not a listing
    topic = _FILLER.sub(" ", _INTENT.sub(" ", scope.rest))
    return Listing(scope, re.sub(r"\s+", " ", topic).strip(" ,;:?？。，！!'’\"-"))


def whats_new(
    retriever: Callable[[], Retriever],
    question: Question,
    *,
    now: datetime,
    filters: Filters | None = None,
    limit: int = 10,
    min_score: float = 0.4,
) -> Answer | None:
    """The dated list of changed documents `question` asks for, or None when it asks for none.

    `retriever` is called only for a listing: other questions cost a few pattern searches."""
    listing = read_listing(question.text, now=now)
    if listing is None:
        return None
    searcher = retriever()
    window = merge(filters, listing.scope.filters)
    if listing.topic:
        hits = _on_topic(searcher, question, listing.topic, window, limit, min_score)
    else:
        hits = _newest(searcher, question.groups, window, limit)
    chinese = is_chinese(question.text)
    return Answer(
        text=_text(listing, hits, chinese=chinese),
        citations=[_citation(number, hit) for number, hit in enumerate(hits, start=1)],
        confidence=1.0 if hits else 0.0,
        model=LISTING_MODEL,
    )


def _newest(retriever: Retriever, groups: tuple[str, ...], window: Filters, limit: int) -> list[Hit]:
    """The `limit` most recently updated readable documents in `window`, one hit (its first chunk) each."""
    catalog = retriever.catalog
    allowed = catalog.allowed(groups, window)
    mask = np.ones(catalog.size, dtype=bool) if allowed is None else allowed.mask
    ids, updated = catalog.ids[mask], catalog.updated[mask]
    order = np.lexsort((ids, -updated))  # newest first; a document's chunks in id order
    documents: dict[str, Hit] = {}
    for start in range(0, len(order), _BATCH):
        batch = [(int(ids[i]), 0.0) for i in order[start : start + _BATCH]]  # no score: ordered by date
        for hit, acl in retriever.store.hits(batch):
            if hit.document_id not in documents and can_read(groups, acl):
                documents[hit.document_id] = hit
        if len(documents) >= limit:
            break
    return sorted(documents.values(), key=lambda hit: hit.updated_at, reverse=True)[:limit]


def _on_topic(
    retriever: Retriever, question: Question, topic: str, window: Filters, limit: int, min_score: float
) -> list[Hit]:
    """Documents in `window` that retrieval finds for `topic`, best first, one hit each.

    Retrieval always returns its k best; a hit stays only when it names a word of the topic or is
    as close to it as an answer's passage must be (`min_score`), so a quiet week lists nothing."""
    asked = Question(text=topic, user=question.user, groups=question.groups, channel=question.channel)
    terms = [term.casefold() for term in _TERM.findall(topic)]
    documents: dict[str, Hit] = {}
    for hit in retriever.search(asked, limit * 3, filters=window):
        seen = f"{hit.title}\n{hit.section}\n{hit.text}".casefold()
        relevant = hit.score >= min_score or any(_names(seen, term) for term in terms)
        if relevant and hit.document_id not in documents:
            documents[hit.document_id] = hit
    return list(documents.values())[:limit]


def _names(text: str, term: str) -> bool:
    if is_chinese(term):
        return term in text
    return re.search(rf"(?<![a-z0-9]){re.escape(term)}(?![a-z0-9])", text) is not None


def _citation(number: int, hit: Hit) -> Citation:
    snippet = " ".join(hit.text.split())
    return Citation(
        number=number,
        title=hit.title,
        uri=hit.link,
        section=hit.section,
        snippet=snippet[:200] + ("…" if len(snippet) > 200 else ""),
        score=round(hit.score, 4),
        document_id=hit.document_id,
        chunk_ids=(hit.chunk_id,),
    )


def _text(listing: Listing, hits: list[Hit], *, chinese: bool) -> str:
    scope, topic = listing.scope, listing.topic
    start = scope.after.date().isoformat() if scope.after else None
    end = scope.before.date().isoformat() if scope.before else None
    if chinese:
        when = f"{start} 至 {end}" if start and end else f"自 {start} 以来" if start else f"{end} 之前"
        about = f"关于“{topic}”的" if topic else ""
        lines = [f"最多只能回溯 {MAX_LOOKBACK_DAYS} 天（约十年）。"] if scope.clamped else []
        if not hits:
            return "\n".join([*lines, f"{when}，没有你可以查看的{about}文档新增或更新。"])
        lines.append(f"{when}新增或更新的{about}文档（{'按相关度' if topic else '最新在前'}）：")
    else:
        when = (
            f"between {start} and {end}" if start and end else f"since {start}" if start else f"before {end}"
        )
        about = f" about “{topic}”" if topic else ""
        lines = (
            [f"I can look back at most {MAX_LOOKBACK_DAYS} days (about ten years)."] if scope.clamped else []
        )
        if not hits:
            return "\n".join([*lines, f"No document{about} that you can read was added or changed {when}."])
        order = "most relevant first" if topic else "newest first"
        lines.append(f"Documents{about} added or changed {when} ({order}):")
    lines += [
        f"{n}. {hit.updated_at.date().isoformat()} — {hit.title} [{n}]" for n, hit in enumerate(hits, 1)
    ]
    return "\n".join(lines)
