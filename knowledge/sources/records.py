"""One row (SQL) or record (API) -> one Document, by a mapping of which field plays which part.

Ids are `source:KEY` (KEY: the id field's value), so an update of the row updates the document.
A record without an id, or without any text, cannot become a document: it comes back as a
Problem that names where it is, and the rest of the source goes on.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from core.models import as_utc
from knowledge.loaders.base import first_line, parse_date, split_names
from knowledge.sources.config import SourceError
from knowledge.sync import Problem
from knowledge.types import Document, Section

_MAX_ID = 512  # documents.id is VARCHAR(512)
_MAX_URI = 1024
_EPOCH_MS = 100_000_000_000  # numbers above this are milliseconds, not seconds


@dataclass(frozen=True, slots=True)
class RecordMapping:
    """Which field (column, or dotted JSON path) is the id, title, text, time, ACL, tags and link."""

    source: str
    kind: str  # "sql" or "api": the scheme of default links, and the word for a field in messages
    id: str
    title: str | None
    text: tuple[str, ...]
    updated: str | None
    acl: str | None
    tags: str | None
    uri: str | None
    uri_template: str | None
    now: datetime  # a record without a time of its own gets the sync's

    @property
    def names(self) -> list[str]:
        named = (self.id, self.title, *self.text, self.updated, self.acl, self.tags, self.uri)
        return list(dict.fromkeys(name for name in named if name))

    @property
    def field_word(self) -> str:
        return "column" if self.kind == "sql" else "field"


def template_fields(template: str) -> list[str]:
    """The names a `str.format` template refers to: `crm://tickets/{id}` -> ['id']."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise SourceError(f"uri_template {template!r} is not a valid template: {exc}") from exc


def make_document(mapping: RecordMapping, fields: Mapping[str, Any], place: str) -> Document | Problem:
    """The record's document, or a Problem saying why it has none."""
    raw_key = fields.get(mapping.id)
    key = " ".join(text(raw_key).split()) if raw_key is not None else ""
    if not key:
        return Problem(place, f"no value in the id {mapping.field_word} {mapping.id!r}; skipped")
    document_id = f"{mapping.source}:{key}"
    if len(document_id) > _MAX_ID:
        return Problem(place, f"id {key[:40]!r}… is longer than {_MAX_ID} characters; skipped")
    where = f"{place} (id {key})"
    body = _body(mapping, fields)
    if not body:
        return Problem(where, f"no text in {', '.join(mapping.text)}; skipped")
    title_value = text(fields.get(mapping.title)).strip() if mapping.title else ""
    uri = _uri(mapping, fields, key)
    if len(uri) > _MAX_URI:
        return Problem(where, f"link is longer than {_MAX_URI} characters; skipped")
    return Document(
        id=document_id,
        source=mapping.source,
        uri=uri,
        title=first_line(title_value) if title_value else f"{mapping.source} {key}",
        sections=(Section(text=body),),
        updated_at=(parse_updated(fields.get(mapping.updated)) if mapping.updated else None) or mapping.now,
        acl_groups=names(fields.get(mapping.acl)) if mapping.acl else (),
        tags=names(fields.get(mapping.tags)) if mapping.tags else (),
        size_bytes=len(body.encode()),
    )


def _body(mapping: RecordMapping, fields: Mapping[str, Any]) -> str:
    values = [(name, text(fields.get(name)).strip()) for name in mapping.text]
    values = [(name, value) for name, value in values if value]
    if len(values) == 1:
        return values[0][1]
    # Several fields: their names tell the reader (and the embedding) which is which.
    return "\n\n".join(f"{name}: {value}" for name, value in values)


def _uri(mapping: RecordMapping, fields: Mapping[str, Any], key: str) -> str:
    if mapping.uri:
        link = fields.get(mapping.uri)
        if isinstance(link, str) and link.strip():
            return link.strip()
    if mapping.uri_template:
        values = {name: quote(text(value), safe="") for name, value in fields.items()}
        values["id"] = quote(key, safe="")
        try:
            return mapping.uri_template.format_map(values)
        except (KeyError, IndexError, ValueError) as exc:
            raise SourceError(
                f"source {mapping.source!r}: uri_template {mapping.uri_template!r} cannot be filled: {exc}"
            ) from exc
    return f"{mapping.kind}://{mapping.source}/{quote(key, safe='')}"


def text(value: Any) -> str:
    """A field's value as document text: strings as they are, numbers plainly, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return ""  # binary columns carry nothing to read
    return json.dumps(value, ensure_ascii=False, default=str)


def names(value: Any) -> tuple[str, ...]:
    """Group or tag names from a list (JSON, PostgreSQL arrays) or a comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(dict.fromkeys(str(v).strip() for v in value if v is not None and str(v).strip()))
    return split_names(text(value))


def parse_updated(value: Any) -> datetime | None:
    """A record's change time as an aware datetime: from a datetime, a date, epoch seconds or
    milliseconds, or an ISO 8601 string; None when there is none or it cannot be read."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        seconds = float(value)
        if abs(seconds) > _EPOCH_MS:
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        return parse_date(value)
    return None
