"""`/sources/<document id>#anchor`: the stored text of a document, one section per anchor.

A citation in the web chat links here, so a reader lands on the passage the answer drew on. The
page is built from the chunks in the database (the text the answer was made from, after ingest's
redaction), with the overlap consecutive chunks share removed. Everything from the document is
escaped on the server, and the page's own script (static/source.js) renders the Markdown of each
section with the same escaping renderer as the chat. Whoever may not read the document (its ACL
groups and the user's share none) gets 403; a document that is not there, 404.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from html import escape

from aiohttp import web
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.models import ChunkRow, DocumentRow, as_utc
from privacy.access import can_read

MIN_OVERLAP_CHARS = 8


@dataclass(slots=True)
class SourceSection:
    heading: str
    anchor: str
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourceView:
    document_id: str
    title: str
    uri: str
    updated_at: str
    acl_groups: tuple[str, ...]
    sections: tuple[SourceSection, ...]


def load_source(engine: Engine, document_id: str) -> SourceView | None:
    """The document's sections with their text, or None when there is no such document."""
    with Session(engine) as session:
        row = session.get(DocumentRow, document_id)
        if row is None:
            return None
        chunks = session.execute(
            select(col(ChunkRow.section), col(ChunkRow.anchor), col(ChunkRow.text))
            .where(col(ChunkRow.document_id) == document_id)
            .order_by(col(ChunkRow.ordinal))
        ).all()
        sections: list[SourceSection] = []
        for heading, anchor, text in chunks:
            last = sections[-1] if sections else None
            if last is not None and (last.heading, last.anchor) == (heading, anchor):
                last.texts.append(without_overlap(last.texts[-1], text))
            else:
                sections.append(SourceSection(heading, anchor, [text]))
        return SourceView(
            row.id, row.title, row.uri, as_utc(row.updated_at).strftime("%Y-%m-%d"),
            tuple(row.acl_groups), tuple(sections),
        )  # fmt: skip


def without_overlap(previous: str, text: str) -> str:
    """`text` less the start it repeats from the end of `previous` (chunks of a section overlap)."""
    longest = min(len(previous), len(text))
    for size in range(longest, MIN_OVERLAP_CHARS - 1, -1):
        if (size == len(text) or text[size].isspace()) and previous.endswith(text[:size]):
            return text[size:].lstrip()
    return text


def render_source(view: SourceView) -> str:
    """The source page: every value escaped, one `<section id=anchor>` per section."""
    seen: set[str] = set()
    parts = []
    for section in view.sections:
        anchor = section.anchor if section.anchor and section.anchor not in seen else ""
        seen.add(anchor)
        id_attr = f' id="{escape(anchor)}"' if anchor else ""
        heading = f"<h2>{escape(section.heading)}</h2>" if section.heading else ""
        body = "\n\n".join(section.texts)
        text = f'<div class="md">{escape(body)}</div>'
        parts.append(f'<section class="src-section"{id_attr}>{heading}{text}</section>')
    restricted = f" · restricted to {escape(', '.join(view.acl_groups))}" if view.acl_groups else ""
    return _page(
        view.title,
        f'<p class="meta">{escape(view.uri)} · updated {escape(view.updated_at)}{restricted}</p>'
        + "\n".join(parts),
    )


def _page(title: str, body: str, *, script: bool = True) -> str:
    tail = '<script src="/static/md.js"></script><script src="/static/source.js"></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/app.css"></head>'
        f'<body class="source-page"><nav class="source-nav"><a href="/">← Back to the chat</a></nav>'
        f"<main><h1>{escape(title)}</h1>{body}</main>{tail}</body></html>"
    )


def error_page(status: int, message: str) -> web.Response:
    title = {403: "Not allowed", 404: "Not found"}.get(status, "Error")
    body = f'<p class="error">{escape(message)}</p>'
    return web.Response(status=status, text=_page(title, body, script=False), content_type="text/html")


async def show_source(
    request: web.Request, engine: Engine, document_id: str, groups: tuple[str, ...]
) -> web.Response:
    view = await asyncio.to_thread(load_source, engine, document_id)
    if view is None:
        return error_page(404, "There is no such document; it may have been removed since the answer.")
    if not can_read(groups, view.acl_groups):
        return error_page(403, "You may not read this document: it is restricted to groups you are not in.")
    return web.Response(text=render_source(view), content_type="text/html")
