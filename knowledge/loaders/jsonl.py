"""JSON and JSON Lines: each object is a record and becomes a document, as CSV rows do.

A `.json` file holds one object or a list of objects; a `.jsonl` file holds one object per line.
A record's text is its title field (title, name, subject or question) followed by its body fields
(body, text, content, description or answer); a record with no body field is written as
`key: value` lines of all its plain values instead. `RecordOptions.text_fields` replaces that
choice. Ids end in the `id` field's value, else in `#row-N` (N: the line of a JSONL file, the
position in a JSON list). A malformed line, or an item that is not an object, is noted and
skipped; a file without a single usable record is refused.
"""

from __future__ import annotations

import json
from typing import Any

from knowledge.errors import LoadError
from knowledge.loaders.base import FileInfo, LoadContext, send_notes
from knowledge.loaders.records import Record, RecordLayout, pick_field, record_documents, record_layout
from knowledge.types import Document

_TITLE_NAMES = ("title", "name", "subject", "question")
_BODY_NAMES = ("body", "text", "content", "description", "answer")


def load_json(info: FileInfo, content: str, context: LoadContext) -> list[Document]:
    """Documents from a JSON file holding one object or a list of objects."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise LoadError(
            f"{info.path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise LoadError(f"{info.path}: JSON nested too deeply to read") from exc
    except ValueError as exc:  # e.g. an integer longer than Python converts (4,300 digits)
        raise LoadError(f"{info.path}: unreadable JSON ({exc})") from exc
    items = data if isinstance(data, list) else [data]
    records: list[Record] = []
    notes: list[str] = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            _add(records, notes, Record(number, f"item {number}", _fields(item)), item)
        else:
            notes.append(f"item {number}: {_kind(item)}, not an object; skipped")
    return _documents(info, records, notes, context, reason="no JSON object in the file")


def load_jsonl(info: FileInfo, content: str, context: LoadContext) -> list[Document]:
    """Documents from a JSON Lines file, one object per line."""
    records: list[Record] = []
    notes: list[str] = []
    # Split on "\n" only: str.splitlines would also split inside strings at U+2028 and friends.
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            notes.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno}); skipped")
            continue
        except RecursionError:
            notes.append(f"line {number}: JSON nested too deeply to read; skipped")
            continue
        except ValueError as exc:
            notes.append(f"line {number}: unreadable JSON ({exc}); skipped")
            continue
        if isinstance(item, dict):
            _add(records, notes, Record(number, f"line {number}", _fields(item)), item)
        else:
            notes.append(f"line {number}: {_kind(item)}, not an object; skipped")
    reason = "no valid JSON object on any line"
    if notes:
        reason += f" ({notes[0]})"
    return _documents(info, records, notes, context, reason=reason)


def _documents(
    info: FileInfo, records: list[Record], notes: list[str], context: LoadContext, *, reason: str
) -> list[Document]:
    if not records:
        raise LoadError(f"{info.path}: {reason}, nothing to index")
    names = list(dict.fromkeys(name for record in records for name in record.fields))
    layout = record_layout(info, names, context.options, title_guesses=_TITLE_NAMES)
    wanted = _text_fields(info, names, context.options.text_fields)

    def render(record: Record) -> str:
        return _render(record, layout, wanted)

    documents = record_documents(info, records, layout, render=render, notes=notes)
    send_notes(context, notes)
    if not documents:
        raise LoadError(f"{info.path}: no record has any text, nothing to index")
    return documents


def _add(records: list[Record], notes: list[str], record: Record, item: dict[str, Any]) -> None:
    """Keep the record unless it has ACL groups that are not plain names: better unseen than public."""
    acl = pick_field(list(item), None, ("acl_groups",))
    if acl is not None and acl not in record.fields and item[acl] is not None:
        notes.append(f"{record.place}: {acl} must be a name or a list of names; record skipped")
        return
    records.append(record)


def _fields(item: dict[str, Any]) -> dict[str, str]:
    """The object's plain values as text; nested objects are structure, not prose, and are left out."""
    fields: dict[str, str] = {}
    for key, value in item.items():
        if isinstance(value, list) and all(_is_plain(v) for v in value):
            fields[key] = ", ".join(_text(v) for v in value if v is not None)
        elif _is_plain(value) and value is not None:
            fields[key] = _text(value)
    return fields


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _text(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "null"


def _text_fields(info: FileInfo, names: list[str], wanted: tuple[str, ...]) -> list[str] | None:
    if not wanted:
        return None
    fields = []
    for name in wanted:
        found = pick_field(names, name)
        if found is None:
            raise LoadError(f"{info.path}: no record has a text field {name!r}; fields: {', '.join(names)}")
        fields.append(found)
    return fields


def _render(record: Record, layout: RecordLayout, wanted: list[str] | None) -> str:
    values = record.fields
    if wanted is not None:
        return "\n\n".join(values[name] for name in wanted if values.get(name, "").strip())
    names = list(values)
    body = [name for guess in _BODY_NAMES if (name := pick_field(names, None, (guess,))) is not None]
    if not body:
        skip = layout.metadata
        return "\n".join(f"{name}: {value}" for name, value in values.items() if name not in skip and value)
    title = values.get(layout.title, "") if layout.title else ""
    parts = [title, *(values[name] for name in body)]
    return "\n\n".join(part.strip() for part in parts if part.strip())
