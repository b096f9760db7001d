"""Records (CSV rows, JSON objects) into documents: which field plays which part, and the ids.

The record formats share more than the other loaders: a layout decided once per file (title, key,
group-by, ACL, tags and date fields, from the options or by guessing from the field names), one
document per record or per group, and stable ids whose repeats get a suffix and a note. It lives
apart from `base`, which holds what every loader shares, so that each stays small enough to read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from knowledge.errors import LoadError
from knowledge.loaders.base import (
    FileInfo,
    RecordOptions,
    first_line,
    parse_date,
    split_names,
    title_from_name,
)
from knowledge.types import Document, Section

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
