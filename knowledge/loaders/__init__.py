"""Loaders turn a source file into Documents; one module per kind of source.

`load_file` picks the loader by file suffix and converts every problem with the file into a
LoadError that names the file and the reason, so an ingest can report it and go on. Most files
give one document; a CSV or JSON file gives one per row or record (ids `source:path#row-N`).

Text formats (LOADERS) get the file decoded as UTF-8; binary formats (BINARY_LOADERS) get its
bytes, and HTML is among them so that a page's declared charset is honoured. Every format is held
to the same size limit before it is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from knowledge.errors import LoadError
from knowledge.loaders import csv, docx, html, jsonl, markdown, pdf, text
from knowledge.loaders.base import FileInfo, LoadContext, RecordOptions, read_bytes, read_text
from knowledge.types import Document

log = logging.getLogger(__name__)

Loader = Callable[[FileInfo, str, LoadContext], list[Document]]
"""Makes documents from a file's decoded text."""

BinaryLoader = Callable[[FileInfo, bytes, LoadContext], list[Document]]
"""Makes documents from a file's bytes."""


def _single(load: Callable[[FileInfo, str], Document]) -> Loader:
    """A loader for a format that always gives exactly one document and needs no options."""

    def loader(info: FileInfo, content: str, context: LoadContext) -> list[Document]:
        return [load(info, content)]

    return loader


LOADERS: dict[str, Loader] = {
    ".md": _single(markdown.load),
    ".markdown": _single(markdown.load),
    ".txt": _single(text.load),
    ".text": _single(text.load),
    ".csv": csv.load,
    ".json": jsonl.load_json,
    ".jsonl": jsonl.load_jsonl,
    ".ndjson": jsonl.load_jsonl,
}

BINARY_LOADERS: dict[str, BinaryLoader] = {
    ".html": html.load,
    ".htm": html.load,
    ".pdf": pdf.load,
    ".docx": docx.load,
}


def suffixes() -> list[str]:
    """Every suffix a loader exists for, sorted, e.g. for telling a user what can be ingested."""
    return sorted({*LOADERS, *BINARY_LOADERS})


def supported(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in LOADERS or suffix in BINARY_LOADERS


def load_file(
    path: Path,
    *,
    root: Path,
    source: str,
    max_bytes: int,
    options: RecordOptions | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list[Document]:
    """Load one file found under `root`; document ids are `source:relative/path` (plus `#key` per record).

    `options` says how CSV and JSON records become documents. `on_note` hears about parts of a
    file that were skipped while the rest loaded (a malformed JSONL line, say); by default such
    notes are logged as warnings, prefixed with the path.
    """
    suffix = path.suffix.lower()
    text_loader, binary_loader = LOADERS.get(suffix), BINARY_LOADERS.get(suffix)
    if text_loader is None and binary_loader is None:
        raise LoadError(f"{path}: unsupported file type {path.suffix or '(none)'!r}")
    try:
        stat = path.stat()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    relative = path.relative_to(root).as_posix() if path != root else path.name
    info = FileInfo(
        path=path,
        source=source,
        key=relative,
        uri=f"{source}/{relative}",
        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        size_bytes=stat.st_size,
    )
    notes = on_note or (lambda note: log.warning("%s: %s", path, note))
    context = LoadContext(options=options or RecordOptions(), on_note=notes)
    if text_loader is not None:
        return text_loader(info, read_text(path, size=info.size_bytes, max_bytes=max_bytes), context)
    assert binary_loader is not None  # one of the two, as checked above
    return binary_loader(info, read_bytes(path, size=info.size_bytes, max_bytes=max_bytes), context)
