"""Heading-aware, token-budgeted chunking.

Each section of a document is split on its own, so a chunk never straddles two headings and
always knows the section path, anchor and page its citation points to. Paragraphs are packed
into chunks of at most `max_tokens` tokens (counted with the embedding model's tokenizer); a
paragraph that is too long is split at sentences, and a sentence that is too long at words.
Consecutive chunks of a section share about `overlap` tokens of trailing sentences.

`redact_document` applies the index's redaction policy to everything of a document that a citation
shows: title, text, the heading path (a citation's `section`) and the anchor (its link).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace

from knowledge.types import Chunk, Document, Section

TokenCounter = Callable[[str], int]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def redact_document(document: Document, redact: Callable[[str], str]) -> Document:
    """`document` with its title, headings, anchors and text passed through `redact`.

    An anchor is made from its heading ("iban-de89-3704-…"), so when redaction changes a heading, or
    finds something in the anchor itself, the anchor is made again from the redacted heading
    ("payment-details-iban"): a citation's link must not carry what its section name lost.
    Redacting a redacted document changes nothing, so stored rows can be redacted again safely.
    """
    taken = {section.anchor for section in document.sections}
    sections = []
    for section in document.sections:
        headings = tuple(redact(heading) for heading in section.headings)
        anchor = section.anchor
        if headings != section.headings or redact(anchor) != anchor:
            anchor = fresh_anchor(headings[-1] if headings else redact(anchor), taken)
        sections.append(replace(section, text=redact(section.text), headings=headings, anchor=anchor))
    return replace(document, title=redact(document.title), sections=tuple(sections))


def fresh_anchor(heading: str, taken: set[str]) -> str:
    """An anchor for `heading` that is not in `taken` (and is then added to it)."""
    from knowledge.loaders.base import slugify  # here: the loaders load on the first ingest

    base = slugify(heading).strip("-") or "section"
    anchor, number = base, 0
    while anchor in taken:
        number += 1
        anchor = f"{base}-{number}"
    taken.add(anchor)
    return anchor


def chunk_document(
    document: Document, *, count_tokens: TokenCounter, max_tokens: int, overlap: int
) -> list[Chunk]:
    """Split every section of `document` into chunks that fit the budget."""
    chunks: list[Chunk] = []
    for section in document.sections:
        for text in _chunk_section(
            section, count_tokens=count_tokens, max_tokens=max_tokens, overlap=overlap
        ):
            chunks.append(
                Chunk(
                    document_id=document.id,
                    ordinal=len(chunks),
                    text=text,
                    section=section.path,
                    anchor=section.anchor,
                    page=section.page,
                    token_count=count_tokens(text),
                )
            )
    return chunks


def _chunk_section(
    section: Section, *, count_tokens: TokenCounter, max_tokens: int, overlap: int
) -> Iterator[str]:
    pieces = list(_pieces(section.text, count_tokens=count_tokens, max_tokens=max_tokens))
    current: list[tuple[str, int]] = []
    size = 0
    for piece, tokens in pieces:
        if current and size + tokens > max_tokens:
            yield _join(current)
            current = _tail(current, overlap=overlap, room=max_tokens - tokens)
            size = sum(t for _, t in current)
        current.append((piece, tokens))
        size += tokens
    if current:
        yield _join(current)


def _pieces(text: str, *, count_tokens: TokenCounter, max_tokens: int) -> Iterator[tuple[str, int]]:
    """Paragraphs that fit, else their sentences, else word windows; each with its token count."""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = count_tokens(paragraph)
        if tokens <= max_tokens:
            yield paragraph + "\n\n", tokens
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if not sentence:
                continue
            tokens = count_tokens(sentence)
            if tokens <= max_tokens:
                yield sentence + " ", tokens
            else:
                yield from _word_windows(sentence, count_tokens=count_tokens, max_tokens=max_tokens)


def _word_windows(text: str, *, count_tokens: TokenCounter, max_tokens: int) -> Iterator[tuple[str, int]]:
    # WordPiece splits on whitespace first, so per-word counts add up; this keeps a huge
    # sentence linear. Text without spaces (e.g. Chinese) is cut by characters instead.
    spaced = " " in text.strip()
    units = text.split() if spaced else list(text)
    joiner = " " if spaced else ""
    window: list[str] = []
    size = 0
    for unit in units:
        tokens = max(count_tokens(unit), 1)
        if window and size + tokens > max_tokens:
            yield joiner.join(window) + " ", size
            window, size = [], 0
        window.append(unit)
        size += tokens
    if window:
        yield joiner.join(window) + " ", size


def _tail(pieces: list[tuple[str, int]], *, overlap: int, room: int) -> list[tuple[str, int]]:
    """The trailing pieces worth at most `overlap` tokens, to repeat at the next chunk's start."""
    tail: list[tuple[str, int]] = []
    size = 0
    for piece, tokens in reversed(pieces):
        if size + tokens > min(overlap, room):
            break
        tail.insert(0, (piece, tokens))
        size += tokens
    return tail


def _join(pieces: list[tuple[str, int]]) -> str:
    return "".join(piece for piece, _ in pieces).strip()
