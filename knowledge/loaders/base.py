"""What every file loader shares: reading text safely, and GitHub-style heading anchors."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from knowledge.errors import LoadError

_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: Path
    source: str
    key: str
    uri: str
    modified_at: datetime
    size_bytes: int

    @property
    def document_id(self) -> str:
        return f"{self.source}:{self.key}"


def read_text(path: Path, *, size: int, max_bytes: int) -> str:
    """The file's text, or a LoadError saying exactly why it is not usable text."""
    if size > max_bytes:
        raise LoadError(
            f"{path}: file is {size:,} bytes, over the limit of {max_bytes:,} (KB_MAX_FILE_BYTES)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise LoadError(f"{path}: binary file, not text (contains NUL bytes)")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 and ingest it again"
        ) from exc
    if not content.strip():
        raise LoadError(f"{path}: empty file, nothing to index")
    return content


def slugify(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slugify("Resetting via the portal (self-service)")
    'resetting-via-the-portal-self-service'
    """
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class AnchorAllocator:
    """Gives repeated headings the suffixes GitHub uses: intro, intro-1, intro-2."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, heading: str) -> str:
        base = slugify(heading)
        count = self._seen.get(base, 0)
        self._seen[base] = count + 1
        return base if count == 0 else f"{base}-{count}"
