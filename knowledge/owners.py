"""Which source owns a folder's documents.

A document's identity is its source plus its path inside it. A folder source is its resolved
absolute root; a declared SQL or API source is its name. Each source has a short `key` that its
documents' ids (`key:path`) and citation links (`key/path#anchor`) start with: the folder's base
name, made unique (`handbook-2`) when another source already has it, so links stay readable and
two folders of the same name never share documents.

Resolving a folder before an ingest:

- its own root: the source itself; a folder inside a known root: that source, updated in place and
  swept only below the subfolder; known roots inside the folder: left to their sources (nested);
- a `legacy` source (documents stored before roots were kept, keyed by base name) is adopted by
  the first folder of that name whose files are mostly its documents;
- a folder whose files are the documents of a source whose root is gone (moved or renamed) is
  refused with the command that re-points that source, so nothing is duplicated;
- anything else is a new source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import session_scope
from core.models import DocumentRow, DocumentSourceRow, utcnow
from knowledge.errors import KnowledgeError


@dataclass(frozen=True, slots=True)
class Scope:
    """What one folder ingest covers: ids are `key:` + the file's path relative to `root`; only
    documents whose path starts with `prefix` may be swept; `files` excludes nested sources'."""

    key: str
    root: Path
    prefix: str
    files: tuple[Path, ...]
    notes: tuple[str, ...] = field(default=())

    def owns(self, document_id: str) -> bool:
        return document_id.startswith(f"{self.key}:{self.prefix}")


class Refused(KnowledgeError):
    """The folder cannot be ingested as it is (its source moved, say); nothing was written."""


def file_part(document_id: str) -> str:
    """`key:path` of a document id, without a record's `#key` (the file it came from)."""
    return document_id.split("#", 1)[0]


class SourceRegistry:
    """Reads and writes `document_sources`; one row per source that ever held documents."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> list[DocumentSourceRow]:
        with Session(self.engine) as session:
            query = select(DocumentSourceRow).order_by(col(DocumentSourceRow.key))
            return list(session.execute(query).scalars())

    def get(self, key: str) -> DocumentSourceRow | None:
        with Session(self.engine) as session:
            return session.get(DocumentSourceRow, key)

    def key_for_root(self, folder: Path) -> str | None:
        real = str(folder.resolve())
        return next((row.key for row in self.all() if row.root == real), None)

    def resolve(self, folder: Path, files: Sequence[Path]) -> Scope:
        """The scope of an ingest of `folder`; raises Refused.

        `files` are the folder's supported files under its resolved path (not each resolved: a
        link inside the folder keeps its own name).
        """
        real = folder.resolve()
        rows = self.all()
        roots = {Path(row.root): row for row in rows if row.root}
        own = roots.get(real)
        if own is not None:
            return self._nested(Scope(own.key, real, "", tuple(files)), real, roots)
        for parent in real.parents:
            if (row := roots.get(parent)) is not None:
                prefix = f"{real.relative_to(parent).as_posix()}/"
                note = (
                    f"{folder} is inside source {row.key!r} ({parent}): its documents are updated in "
                    f"place, and only those under {prefix} can be removed"
                )
                return Scope(row.key, parent, prefix, tuple(files), (note,))
        scope = self._nested(Scope("", real, "", tuple(files)), real, roots)
        adopted = self._adopt(rows, real, scope)
        if adopted is not None:
            return adopted
        self._refuse_if_moved(rows, real, scope)
        key = self._add(_unique_key(real.name, {row.key for row in rows}), real)
        notes = scope.notes
        if key != real.name:
            notes += (
                f"another source already has the name {real.name!r}: this folder's documents are "
                f"cited as {key}/...",
            )
        return Scope(key, real, "", scope.files, notes)

    def claim_name(self, name: str) -> DocumentSourceRow:
        """The row of a declared (SQL, API) source, added on its first sync."""
        row = self.get(name)
        if row is not None:
            if row.kind == "legacy":
                return self._update(name, kind="named")
            return row
        try:
            with session_scope(self.engine) as session:
                row = DocumentSourceRow(key=name, kind="named", created_at=utcnow())
                session.add(row)
                return row
        except IntegrityError:  # another process claimed it first
            found = self.get(name)
            assert found is not None
            return found

    def move(self, key: str, folder: Path) -> DocumentSourceRow:
        """Re-point a folder source (or give a legacy one its root) after its folder moved."""
        row = self.get(key)
        if row is None:
            known = ", ".join(r.key for r in self.all()) or "none"
            raise KnowledgeError(f"no source {key!r} (known: {known})")
        if row.kind == "named":
            raise KnowledgeError(f"source {key!r} is a declared source, not a folder")
        real = folder.resolve()
        if not real.is_dir():
            raise KnowledgeError(f"no folder at {folder}")
        for other in self.all():
            if other.key == key or not other.root:
                continue
            other_root = Path(other.root)
            if real == other_root or real.is_relative_to(other_root) or other_root.is_relative_to(real):
                raise KnowledgeError(f"{real} overlaps source {other.key!r} ({other_root})")
        return self._update(key, kind="folder", root=str(real))

    def _nested(self, scope: Scope, real: Path, roots: dict[Path, DocumentSourceRow]) -> Scope:
        inner = [(root, row) for root, row in roots.items() if root != real and root.is_relative_to(real)]
        if not inner:
            return scope
        files = tuple(f for f in scope.files if not any(f.is_relative_to(r) for r, _ in inner))
        notes = tuple(
            f"{root} is source {row.key!r} of its own: its files are left to it" for root, row in inner
        )
        return Scope(scope.key, scope.root, scope.prefix, files, scope.notes + notes)

    def _adopt(self, rows: list[DocumentSourceRow], real: Path, scope: Scope) -> Scope | None:
        legacy = {row.key: row for row in rows if row.kind == "legacy"}
        for base in (real, *real.parents):
            if base.name not in legacy or not _matches(self._file_ids(base.name), base, base.name, scope):
                continue
            self._update(base.name, kind="folder", root=str(base))
            prefix = "" if base == real else f"{real.relative_to(base).as_posix()}/"
            note = f"documents of {base.name!r} stored before sources had roots now belong to {base}"
            return Scope(base.name, base, prefix, scope.files, (*scope.notes, note))
        return None

    def _refuse_if_moved(self, rows: list[DocumentSourceRow], real: Path, scope: Scope) -> None:
        for row in rows:
            if row.kind != "folder" or not row.root or Path(row.root).is_dir():
                continue
            if _matches(self._file_ids(row.key), real, row.key, scope):
                raise Refused(
                    f"{real} holds the documents of source {row.key!r}, whose folder {row.root} is "
                    f"gone; nothing was ingested. If the folder moved or was renamed, re-point the "
                    f"source: kb sources move {row.key} {real}"
                )

    def _file_ids(self, key: str) -> set[str]:
        with Session(self.engine) as session:
            query = select(col(DocumentRow.id)).where(col(DocumentRow.source) == key)
            return {file_part(i) for i in session.execute(query).scalars()}

    def _add(self, key: str, real: Path) -> str:
        for attempt in range(20):
            candidate = key if attempt == 0 else f"{key}-{attempt + 1}"
            try:
                with session_scope(self.engine) as session:
                    session.add(
                        DocumentSourceRow(key=candidate, kind="folder", root=str(real), created_at=utcnow())
                    )
                return candidate
            except IntegrityError:  # the name (or this root) was taken meanwhile
                if (known := self.key_for_root(real)) is not None:
                    return known
        raise KnowledgeError(f"could not name a source for {real}")

    def _update(self, key: str, **fields: str) -> DocumentSourceRow:
        with session_scope(self.engine) as session:
            row = session.get(DocumentSourceRow, key)
            assert row is not None
            row.sqlmodel_update(fields)
            session.add(row)
            return row

    def touch(self, key: str) -> None:
        with session_scope(self.engine) as session:
            row = session.get(DocumentSourceRow, key)
            if row is not None:
                row.seen_at = utcnow()
                session.add(row)

    def copies_elsewhere(self, key: str, document_ids: list[str]) -> list[str]:
        """Notes on new documents whose text another source holds too: a file that moved between
        sources (the other source's copy goes, restorable, at that source's next sync)."""
        if not document_ids:
            return []
        notes = []
        with Session(self.engine) as session:
            new = dict(
                session.execute(
                    select(col(DocumentRow.id), col(DocumentRow.text_hash)).where(
                        col(DocumentRow.id).in_(document_ids[:1000])
                    )
                ).all()
            )
            hashes = {h for h in new.values() if h}
            query = select(col(DocumentRow.id), col(DocumentRow.source), col(DocumentRow.text_hash)).where(
                col(DocumentRow.text_hash).in_(hashes), col(DocumentRow.source) != key
            )
            elsewhere = {row[2]: (row[0], row[1]) for row in session.execute(query)} if hashes else {}
        for document_id, text_hash in sorted(new.items()):
            if (other := elsewhere.get(text_hash)) is not None:
                notes.append(
                    f"{document_id} has the same text as {other[0]} of source {other[1]!r}: if it moved, "
                    f"the next ingest of {other[1]!r} removes the old copy (restorable)"
                )
        return notes

    def documents(self) -> dict[str, int]:
        """How many live documents each source key holds."""
        with Session(self.engine) as session:
            query = select(col(DocumentRow.source), func.count()).group_by(col(DocumentRow.source))
            return {row[0]: int(row[1]) for row in session.execute(query)}


def _matches(known: set[str], base: Path, key: str, scope: Scope) -> bool:
    """At least half of the folder's files are documents the source already holds (by path)."""
    if not known or not scope.files:
        return False
    ids = {f"{key}:{f.relative_to(base).as_posix()}" for f in scope.files}
    hits = len(ids & known)
    return hits > 0 and 2 * hits >= len(ids)


def _unique_key(name: str, taken: set[str]) -> str:
    base = (name or "folder").replace(":", "-")[:190]
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
