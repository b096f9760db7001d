"""Stored rows redacted again under the current index policy: a data step of `kb db upgrade`.

Ingest redacts titles, headings, anchors and passages; rows stored before it redacted headings
carry them as they were. This step rewrites titles (documents and the change log), sections,
anchors and chunk text, and the chunks kept for restoring, under the index policy. Redacting
redacted text changes nothing, so the step may meet rows that are already clean.

A document whose chunks change gets them written again under new ids: the indexes on disk are
checked against the chunk ids at start (count, largest id, sum of ids), so the changed ids make
`kb serve` and `kb ask` rebuild the vector and lexical indexes from the database. Embeddings are
kept (no model is loaded here).

It runs inside the schema migration that introduced it (core/migrations, revision 0016), which
cannot import this layer itself: `app` hands it over through `core.db.upgrade(data_steps=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from knowledge.chunking import fresh_anchor
from privacy.redaction import Destination, policy_for

STEP = "redact_stored_rows"

_BATCH = 200


def redact_stored_rows(connection: sa.Connection, index_kinds: Sequence[str]) -> None:
    """Every stored title, heading, anchor and passage redacted under the index policy."""
    redact = _redactor(index_kinds)
    meta = sa.MetaData()
    documents = sa.Table("documents", meta, autoload_with=connection)
    changes = sa.Table("document_changes", meta, autoload_with=connection)
    chunks = sa.Table("chunks", meta, autoload_with=connection)
    _titles(connection, documents, redact)
    _titles(connection, changes, redact)
    ids = [row[0] for row in connection.execute(sa.select(documents.c.id).order_by(documents.c.id))]
    for start in range(0, len(ids), _BATCH):
        for document_id in ids[start : start + _BATCH]:
            _chunks(connection, chunks, chunks.c.document_id, document_id, redact)
    if sa.inspect(connection).has_table("removed_chunks"):
        removed = sa.Table("removed_chunks", meta, autoload_with=connection)
        kept = [row[0] for row in connection.execute(sa.select(removed.c.removed_id).distinct())]
        for removed_id in kept:
            _chunks(connection, removed, removed.c.removed_id, removed_id, redact)


def _titles(connection: sa.Connection, table: sa.Table, redact: Callable[[str], str]) -> None:
    for key, title in connection.execute(sa.select(table.c.id, table.c.title)).all():
        if (clean := redact(title)) != title:
            connection.execute(sa.update(table).where(table.c.id == key).values(title=clean))


def _chunks(
    connection: sa.Connection,
    table: sa.Table,
    owner: sa.Column[Any],
    key: object,
    redact: Callable[[str], str],
) -> None:
    """One document's chunks redacted; written again under new ids when anything changed."""
    rows = [
        dict(row._mapping)
        for row in connection.execute(sa.select(table).where(owner == key).order_by(table.c.id))
    ]
    taken = {row["anchor"] for row in rows}
    anchors: dict[tuple[str, str], str] = {}
    changed = False
    for row in rows:
        headings = [redact(part) for part in row["section"].split(" > ")] if row["section"] else []
        section = " > ".join(headings)
        anchor = row["anchor"]
        if anchor and (section != row["section"] or redact(anchor) != anchor):
            place = (row["section"], anchor)  # a section's chunks keep one anchor
            if place not in anchors:
                anchors[place] = fresh_anchor(headings[-1] if headings else redact(anchor), taken)
            anchor = anchors[place]
        text = redact(row["text"])
        if (text, section, anchor) != (row["text"], row["section"], row["anchor"]):
            changed = True
        row.update(text=text, section=section, anchor=anchor)
    if not changed:
        return
    # Inserted before the old rows go, so the new ids are past every id in the table (SQLite would
    # otherwise hand the same ids out again, and the indexes could not tell the rows changed).
    old_ids = [row.pop("id") for row in rows]
    connection.execute(sa.insert(table), rows)
    connection.execute(sa.delete(table).where(table.c.id.in_(old_ids)))


def _redactor(index_kinds: Sequence[str]) -> Callable[[str], str]:
    redactor = policy_for(Destination.INDEX, index_kinds=list(index_kinds)).redactor()
    return lambda text: redactor.redact(text).text if text else text
