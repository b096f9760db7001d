"""What every file loader shares: reading text safely, and GitHub-style heading anchors.

Also what the binary and structured loaders share: reading bytes under the size limit, the
options for record formats (CSV, JSON) and the channel for notes about partly readable files.
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
from knowledge.types import Document, Section

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


# --- Records: CSV rows and JSON objects --------------------------------------------------------------

_TITLE_NAMES = ("title", "name", "subject")
_KEY_NAMES = ("id",)
_ACL_NAMES = ("acl_groups",)
_TAG_NAMES = ("tags", "keywords")
_DATE_NAMES = ("updated_at", "updated", "last_updated", "modified")


@dataclass(frozen=True, slots=True)
class Record:
    """One CSV row or JSON object, its values as text, and where it is (for ids, anchors, notes).

    `number` makes the `#row-N` id; `place` ("line 7", "item 3") tells a person where to look.
    """

    number: int
    place: str
    fields: dict[str, str]
    anchor: str = ""


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """Which field plays which part in a file's records; decided once per file."""

    title: str | None
    key: str | None
    group: str | None
    acl: str | None
    tags: str | None
    updated: str | None

    @property
    def metadata(self) -> frozenset[str]:
        """Fields that become document metadata rather than text."""
        return frozenset(name for name in (self.acl, self.tags, self.updated) if name)


def _loose(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def pick_field(names: list[str], wanted: str | None, guesses: tuple[str, ...] = ()) -> str | None:
    """The field `wanted` names (exactly, else ignoring case and spacing), else the first guess present."""
    loose: dict[str, str] = {}
    for name in names:
        loose.setdefault(_loose(name), name)
    if wanted is not None:
        return wanted if wanted in names else loose.get(_loose(wanted))
    return next((loose[guess] for guess in guesses if guess in loose), None)


def record_layout(
    info: FileInfo, names: list[str], options: RecordOptions, *, title_guesses: tuple[str, ...] = _TITLE_NAMES
) -> RecordLayout:
    """The layout for records with these field names; a field named in the options must exist."""
    for label, wanted in (("title", options.title_field), ("key", options.key_field)):
        if wanted is not None and pick_field(names, wanted) is None:
            raise LoadError(f"{info.path}: no {label} field {wanted!r}; the fields are {', '.join(names)}")
    if options.group_by is not None and pick_field(names, options.group_by) is None:
        raise LoadError(
            f"{info.path}: no field {options.group_by!r} to group by; the fields are {', '.join(names)}"
        )
    return RecordLayout(
        title=pick_field(names, options.title_field, title_guesses),
        key=pick_field(names, options.key_field, _KEY_NAMES),
        group=pick_field(names, options.group_by),
        acl=pick_field(names, None, _ACL_NAMES),
        tags=pick_field(names, None, _TAG_NAMES),
        updated=pick_field(names, None, _DATE_NAMES),
    )


def record_documents(
    info: FileInfo,
    records: list[Record],
    layout: RecordLayout,
    *,
    render: Callable[[Record], str],
    notes: list[str],
) -> list[Document]:
    """Documents from records: one per record, or one per value of the group-by field.

    Ids are `source:path#KEY`, KEY being the key field's value or `row-N`; grouped documents use
    the group's value. Rows of one group that carry different acl_groups go to separate documents,
    so that grouping never shows a row to someone its own ACL leaves out. Problems go to `notes`.
    """
    file_title = title_from_name(info.path)
    ids = _IdAllocator(info, notes)
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[Record, str]]] = {}
    documents: list[Document] = []
    for record in records:
        text = render(record).strip()
        if not text:
            continue
        if layout.group is None:
            documents.append(_one_record(info, record, text, layout, ids, file_title, notes))
            continue
        acl = split_names(record.fields.get(layout.acl, "")) if layout.acl else ()
        groups.setdefault((record.fields.get(layout.group, "").strip(), acl), []).append((record, text))
    acl_variants: dict[str, int] = {}
    for value, _ in groups:
        acl_variants[value] = acl_variants.get(value, 0) + 1
    for (value, acl), rows in groups.items():
        key = value or "(blank)"
        if acl_variants[value] > 1:
            key = f"{key} [{','.join(acl) or 'everyone'}]"
        sections = tuple(
            Section(text=text, headings=(_record_title(record, layout, file_title),), anchor=record.anchor)
            for record, text in rows
        )
        documents.append(
            Document(
                id=ids(key, rows[0][0].place),
                source=info.source,
                uri=info.uri,
                title=value or f"{file_title} (no {layout.group})",
                sections=sections,
                updated_at=max(_record_date(info, r, layout, notes) for r, _ in rows),
                acl_groups=acl,
                tags=tuple(dict.fromkeys(t for r, _ in rows for t in _record_names(r, layout.tags))),
                size_bytes=sum(len(s.text.encode()) for s in sections),
            )
        )
    return documents


def _one_record(
    info: FileInfo,
    record: Record,
    text: str,
    layout: RecordLayout,
    ids: _IdAllocator,
    file_title: str,
    notes: list[str],
) -> Document:
    key = record.fields.get(layout.key, "").strip() if layout.key else ""
    return Document(
        id=ids(key or f"row-{record.number}", record.place),
        source=info.source,
        uri=info.uri,
        title=_record_title(record, layout, file_title),
        sections=(Section(text=text, headings=(file_title,), anchor=record.anchor),),
        updated_at=_record_date(info, record, layout, notes),
        acl_groups=_record_names(record, layout.acl),
        tags=_record_names(record, layout.tags),
        size_bytes=len(text.encode()),
    )


def _record_title(record: Record, layout: RecordLayout, file_title: str) -> str:
    title = record.fields.get(layout.title, "").strip() if layout.title else ""
    return first_line(title) if title else f"{file_title}, row {record.number}"


def _record_names(record: Record, name: str | None) -> tuple[str, ...]:
    return split_names(record.fields.get(name, "")) if name else ()


def _record_date(info: FileInfo, record: Record, layout: RecordLayout, notes: list[str]) -> datetime:
    value = record.fields.get(layout.updated, "").strip() if layout.updated else ""
    if not value:
        return info.modified_at
    parsed = parse_date(value)
    if parsed is None:
        notes.append(
            f"{record.place}: {layout.updated} {value[:40]!r} is not a date; the file's time is used"
        )
        return info.modified_at
    return parsed


class _IdAllocator:
    """Stable document ids for records; a repeated key gets a suffix and a note."""

    def __init__(self, info: FileInfo, notes: list[str]) -> None:
        self._info, self._notes = info, notes
        self._places: dict[str, str] = {}
        self._next: dict[str, int] = {}

    def __call__(self, key: str, place: str) -> str:
        key = " ".join(key.split())
        if key in self._places:
            first, suffix = self._places[key], self._next.get(key, 2)
            while f"{key}-{suffix}" in self._places:
                suffix += 1
            self._next[key] = suffix + 1
            self._notes.append(
                f"{place}: key {key!r} repeats {first}; this record is stored as {key}-{suffix}"
            )
            key = f"{key}-{suffix}"
        self._places[key] = place
        return f"{self._info.document_id}#{key}"


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
