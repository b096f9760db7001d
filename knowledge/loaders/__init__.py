"""Loaders turn a source file into a Document; one module per kind of source.

`load_file` picks the loader by file suffix and converts every problem with the file into a
LoadError that names the file and the reason, so an ingest can report it and go on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from knowledge.errors import LoadError
from knowledge.loaders import markdown, text
from knowledge.loaders.base import FileInfo, read_text
from knowledge.types import Document

Loader = Callable[[FileInfo, str], Document]

LOADERS: dict[str, Loader] = {
    ".md": markdown.load,
    ".markdown": markdown.load,
    ".txt": text.load,
    ".text": text.load,
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load_file(path: Path, *, root: Path, source: str, max_bytes: int) -> Document:
    """Load one file found under `root`; its id is `source:relative/path`."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
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
    content = read_text(path, size=stat.st_size, max_bytes=max_bytes)
    return loader(info, content)
