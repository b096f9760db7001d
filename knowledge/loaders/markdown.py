"""Markdown: YAML front matter for metadata, ATX headings (`#`..`######`) as sections.

Front matter keys: `title`, `tags`, `acl_groups` (lists or comma-separated strings) and
`updated` (a date). Headings inside fenced code blocks are text, not sections.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import yaml

from knowledge.errors import LoadError
from knowledge.loaders.base import AnchorAllocator, FileInfo
from knowledge.types import Document, Section

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")


def load(info: FileInfo, content: str) -> Document:
    meta, body = _split_front_matter(info, content)
    sections, first_h1 = _sections(body)
    title = str(meta.get("title") or first_h1 or info.path.stem.replace("-", " ").capitalize())
    if first_h1 and first_h1 == title:
        sections = [_drop_top_heading(section, title) for section in sections]
    if not any(section.text for section in sections):
        raise LoadError(f"{info.path}: no text besides headings and front matter, nothing to index")
    return Document(
        id=info.document_id,
        source=info.source,
        uri=info.uri,
        title=title,
        sections=tuple(section for section in sections if section.text),
        updated_at=_updated_at(info, meta.get("updated")),
        acl_groups=_string_list(info, "acl_groups", meta.get("acl_groups")),
        tags=_string_list(info, "tags", meta.get("tags")),
        size_bytes=info.size_bytes,
    )


def _split_front_matter(info: FileInfo, content: str) -> tuple[dict[str, Any], str]:
    if not content.startswith("---"):
        return {}, content
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)", content, re.DOTALL)
    if match is None:
        raise LoadError(f"{info.path}: front matter opened with '---' is never closed")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise LoadError(f"{info.path}: invalid YAML front matter ({exc.__class__.__name__})") from exc
    if not isinstance(meta, dict):
        raise LoadError(f"{info.path}: front matter must be a mapping of keys to values")
    return meta, content[match.end() :]


def _sections(body: str) -> tuple[list[Section], str | None]:
    anchors = AnchorAllocator()
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    anchor = ""
    lines: list[str] = []
    fence: str | None = None
    first_h1: str | None = None

    def flush() -> None:
        text = "\n".join(lines).strip()
        sections.append(Section(text=text, headings=tuple(h for _, h in stack), anchor=anchor))
        lines.clear()

    for line in body.splitlines():
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
        heading = None if fence or fence_match else _HEADING.match(line)
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, name = len(heading.group(1)), heading.group(2).strip()
        if level == 1 and first_h1 is None:
            first_h1 = name
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        anchor = anchors(name)
    flush()
    return sections, first_h1


def _drop_top_heading(section: Section, title: str) -> Section:
    """The H1 that repeats the title adds nothing to a citation's section path."""
    if not section.headings or section.headings[0] != title:
        return section
    headings = section.headings[1:]
    return Section(text=section.text, headings=headings, anchor=section.anchor, page=section.page)


def _updated_at(info: FileInfo, value: Any) -> datetime:
    if value is None:
        return info.modified_at
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise LoadError(f"{info.path}: front matter 'updated' is not a date: {str(value)[:40]!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _string_list(info: FileInfo, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str | int) for item in value):
        raise LoadError(f"{info.path}: front matter {key!r} must be a list of names")
    return tuple(dict.fromkeys(str(item).strip() for item in value if str(item).strip()))
