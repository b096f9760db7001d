"""What every file loader shares: reading text safely, and GitHub-style heading anchors.

Also what the binary and structured loaders share: reading bytes under the size limit, the
options for record formats (CSV, JSON) and the channel for notes about partly readable files.
How records become documents (field layout, grouping, ids) is in `knowledge.loaders.records`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from knowledge.errors import LoadError
from knowledge.types import Section

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


# --- Additions for the binary and structured formats (PDF, DOCX, HTML, CSV, JSON) -----------------

log = logging.getLogger("knowledge.loaders")


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """How a table (CSV) or a list of records (JSON, JSONL) becomes documents.

    By default each row or record is a document of its own. `group_by` names a column whose equal
    values gather rows into one document (one section per row); `title_field`, `key_field` and
    `text_fields` replace the guesses (title/name/subject, id, all fields).

    >>> RecordOptions(group_by="department", title_field="service")
    RecordOptions(group_by='department', title_field='service', key_field=None, text_fields=())
    """

    group_by: str | None = None
    title_field: str | None = None
    key_field: str | None = None
    text_fields: tuple[str, ...] = ()


def _log_note(message: str) -> None:
    log.warning("%s", message)


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a loader is told besides the file: record options, and where to send notes.

    A note is something a person should know about a file that still loaded, e.g. a JSONL line
    that was skipped; the ingest report shows it next to the file.
    """

    options: RecordOptions = field(default_factory=RecordOptions)
    on_note: Callable[[str], None] = _log_note


def read_bytes(path: Path, *, size: int, max_bytes: int) -> bytes:
    """The raw content of a binary file, under the same size limit as text files."""
    if size > max_bytes:
        raise LoadError(
            f"{path}: file is {size:,} bytes, over the limit of {max_bytes:,} (KB_MAX_FILE_BYTES)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not data.strip():
        raise LoadError(f"{path}: empty file, nothing to index")
    return data


def split_names(value: str) -> tuple[str, ...]:
    """Names from a comma- or semicolon-separated list, trimmed, without blanks or repeats.

    >>> split_names("hr, managers;hr")
    ('hr', 'managers')
    """
    parts = (part.strip() for part in re.split(r"[,;]", value))
    return tuple(dict.fromkeys(part for part in parts if part))


def parse_date(value: str) -> datetime | None:
    """An ISO 8601 date or date-time as an aware datetime (UTC when no zone is given), or None."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def title_from_name(path: Path) -> str:
    """The title a file gets when its content names none: `phone-directory.csv` -> 'Phone directory'."""
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize() or path.name


def first_line(text: str, *, limit: int = 120) -> str:
    """The first non-blank line, shortened at a word boundary, for titles taken from body text."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:-") + "…"


def send_notes(context: LoadContext, notes: list[str], *, limit: int = 10) -> None:
    """Pass notes on, the first `limit` of them one by one and the rest as a count."""
    for note in notes[:limit]:
        context.on_note(note)
    if len(notes) > limit:
        context.on_note(f"{len(notes) - limit} more problems like these")


def drop_top_heading(section: Section, title: str) -> Section:
    """The top heading that repeats the document's title adds nothing to a citation's section path."""
    if not section.headings or section.headings[0] != title:
        return section
    return Section(text=section.text, headings=section.headings[1:], anchor=section.anchor, page=section.page)


@contextmanager
def quiet_library(path: Path, logger: str) -> Iterator[None]:
    """Route a parsing library's warnings and log records to our debug log, tagged with the file.

    Parsers warn about damage they work around; a loader's answer is the document (with notes)
    or a LoadError, and the warnings would otherwise be errors under pytest and noise in `kb`.
    """
    library = logging.getLogger(logger)
    collector = _Collector()
    propagate = library.propagate
    library.addHandler(collector)
    library.propagate = False
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        library.removeHandler(collector)
        library.propagate = propagate
        for message in [*collector.messages, *(str(w.message) for w in caught)][:20]:
            log.debug("%s: %s: %s", path, logger, message)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
