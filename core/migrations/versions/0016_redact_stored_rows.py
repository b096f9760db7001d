"""Stored titles, headings, anchors and passages redacted again under the current index policy.

Ingest redacted titles and passages but not headings, so a heading holding an IBAN or a token
reached users in a citation's section name and in its link's anchor. Ingest now redacts those
too (knowledge/chunking.py, `redact_document`); this carries the rows already stored over, so
nothing waits for a source to be ingested again, and sources that are gone are cleaned as well.

The policy is the index's, with the configured KB_REDACT_INDEX_KINDS when settings load (the
defaults otherwise); redacting redacted text changes nothing, so the migration may meet rows
that are already clean. A document whose chunks change gets them written again under new ids:
the indexes on disk are checked against the chunk ids at start (count, largest id, sum of ids),
so the changed ids make `kb serve` and `kb ask` rebuild the vector and lexical indexes from the
database instead of serving the old text. Embeddings are kept (the model is not loaded here).
Removed documents kept for restoring are redacted the same way. There is no way back: downgrade
leaves the rows as they are.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_BATCH = 200


def _redactor() -> Callable[[str], str]:
    # A data migration applies the product's redaction policy: it needs privacy/ (imported here,
    # not at the top, so that reading the revision chain loads nothing).
    from privacy.redaction import DEFAULT_INDEX_KINDS, Destination, policy_for

    kinds: Any = DEFAULT_INDEX_KINDS
    try:
        from core.settings import load_settings

        kinds = load_settings().privacy.index_kinds
    except Exception:  # settings that do not load leave the default policy
        kinds = DEFAULT_INDEX_KINDS
    redactor = policy_for(Destination.INDEX, index_kinds=kinds).redactor()
    return lambda text: redactor.redact(text).text if text else text


def upgrade() -> None:
    connection = op.get_bind()
    redact = _redactor()
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
    from knowledge.chunking import fresh_anchor

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


def downgrade() -> None:
    """Redaction cannot be undone: the rows stay redacted."""
