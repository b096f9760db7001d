"""Plain text: one section, titled by the file name."""

from __future__ import annotations

from knowledge.loaders.base import FileInfo
from knowledge.types import Document, Section


def load(info: FileInfo, content: str) -> Document:
    title = info.path.stem.replace("-", " ").replace("_", " ").strip().capitalize() or info.path.name
    return Document(
        id=info.document_id,
        source=info.source,
        uri=info.uri,
        title=title,
        sections=(Section(text=content.strip()),),
        updated_at=info.modified_at,
        size_bytes=info.size_bytes,
    )
