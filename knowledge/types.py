"""Small platform-neutral types that flow through ingest, retrieval and answers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path; `anchor` deep-links to it inside the document."""

    text: str
    headings: tuple[str, ...] = ()
    anchor: str = ""
    page: int | None = None

    @property
    def path(self) -> str:
        return " > ".join(self.headings)


@dataclass(frozen=True, slots=True)
class Document:
    """A source document as a loader produced it, before chunking.

    `id` is stable across runs (source + key), so a re-ingest updates instead of duplicating.
    """

    id: str
    source: str
    uri: str
    title: str
    sections: tuple[Section, ...]
    updated_at: datetime
    acl_groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    size_bytes: int = 0

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)

    @property
    def content_hash(self) -> str:
        """Changes when anything that ends up in the index or in a citation changes."""
        digest = hashlib.sha256()
        for part in (self.title, self.uri, ",".join(sorted(self.acl_groups)), ",".join(sorted(self.tags))):
            digest.update(part.encode())
            digest.update(b"\0")
        for section in self.sections:
            digest.update(f"{section.path}\0{section.anchor}\0{section.page}\0{section.text}\0".encode())
        return digest.hexdigest()

    @property
    def text_hash(self) -> str:
        """Changes only when what a reader reads changes (headings and text), not tags, ACL or links:
        push tells people about a changed document by this one."""
        digest = hashlib.sha256()
        for section in self.sections:
            digest.update(f"{section.path}\0{section.text}\0".encode())
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A token-budgeted passage of a document, carrying what a citation needs."""

    document_id: str
    ordinal: int
    text: str
    section: str
    anchor: str
    page: int | None
    token_count: int


@dataclass(frozen=True, slots=True)
class Question:
    """Who asks what, where. Groups decide which documents the answer may draw on."""

    text: str
    user: str = "local"
    groups: tuple[str, ...] = ()
    channel: str | None = None
    thread: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with its document's metadata and its similarity score."""

    chunk_id: int
    score: float
    text: str
    section: str
    anchor: str
    page: int | None
    document_id: str
    title: str
    uri: str
    updated_at: datetime
    # Why the ingest scan distrusts this passage ("" when clean): text that addresses a model or
    # hides instructions. It is quoted data, never something to follow.
    flag: str = ""

    @property
    def link(self) -> str:
        return f"{self.uri}#{self.anchor}" if self.anchor else self.uri


@dataclass(frozen=True, slots=True)
class Citation:
    """A numbered source of an answer; `document_id` and `chunk_ids` say which passages it stands for
    (the bot stores them with the question, so training can read the liked answer's context back)."""

    number: int
    title: str
    uri: str
    section: str
    snippet: str
    score: float
    document_id: str = ""
    chunk_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class Answer:
    """What the bot says back: text with [n] markers, and the sources those numbers point to."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    confidence: float = 0.0
    abstained: bool = False
    model: str = "extractive"
    latency_ms: dict[str, float] = field(default_factory=dict)
    refused: bool = False  # the input guard turned the question away
    notices: list[str] = field(default_factory=list)  # guard warnings and redactions, in plain words


Part = TypeVar("Part")
# An answer as it is written: text deltas, then exactly one final Answer.
AnswerParts = AsyncGenerator[str | Answer, None]


async def last_part(parts: AsyncIterator[object], kind: type[Part]) -> Part:
    """A stream of events collected whole: its last part, which must be a `kind`.

    Every answer path is written once, as a stream (text deltas or drafts, then one final Answer or
    reply); a caller that wants only the final result reads the stream through this.
    """
    last: object = None
    try:
        async for part in parts:
            last = part
    finally:  # a cancelled caller leaves no generator open (a no-op on one that finished)
        if isinstance(parts, AsyncGenerator):
            await parts.aclose()
    if not isinstance(last, kind):
        raise AssertionError(f"the stream ended with {type(last).__name__}, not {kind.__name__}")
    return last
