"""Heading-aware, token-budgeted chunking.

Each section of a document is split on its own, so a chunk never straddles two headings and
always knows the section path, anchor and page its citation points to. Paragraphs are packed
into chunks of at most `max_tokens` tokens (counted with the embedding model's tokenizer); a
paragraph that is too long is split at sentences, and a sentence that is too long at words.
Consecutive chunks of a section share about `overlap` tokens of trailing sentences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from knowledge.types import Chunk, Document, Section

TokenCounter = Callable[[str], int]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


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
