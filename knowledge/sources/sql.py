"""SQL sources: the rows of a query on any SQLAlchemy database, one Document per row.

The user's query is wrapped as a subquery, `SELECT * FROM (query) kb_rows`, so that an
incremental sync can add `WHERE kb_rows.updated >= :kb_since` with a bound parameter (never by
pasting the cursor into the SQL). `>=` rather than `>`: a row committed after a sync with the same
timestamp as the cursor would otherwise be missed for good; the rows at the cursor come again
and are skipped as unchanged by their content hash.

The source database is only read: SQLite files are opened read-only and PostgreSQL transactions
are `READ ONLY`, with the source timeout as connect and statement timeout. Column names in the
mapping are checked against the query's columns before any row is read, so a typo fails the
source at once, naming the column and the columns there are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from knowledge.sources.config import SourceError, SqlSource, expand_env, mask_url
from knowledge.sources.records import RecordMapping, make_document, template_fields
from knowledge.sync import Problem
from knowledge.types import Document

_BATCH = 500
_POSTGRES = {"postgresql", "postgres", "postgresql+psycopg"}


class SqlReader:
    """Reads a SQL source's rows as Documents (and Problems for rows that cannot be).

    `since` is the cursor of the last complete sync (None: read every row). After iterating,
    `complete` says whether every row was read, and `cursor` is the new high-water mark.
    """

    def __init__(
        self,
        source: SqlSource,
        *,
        environ: Mapping[str, str],
        timeout_s: float,
        since: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        self.source, self.timeout_s, self.now = source, timeout_s, now
        self.url = expand_env(source.url, environ, source=source.name, field="url")
        self.since = decode_cursor(since) if since and source.updated_column else None
        self.cursor = since if self.since is not None else None
        self.complete = False
        self.rows = 0
        self._high: Any = self.since

    def documents(self) -> Iterator[Document | Problem]:
        engine = self._engine()
        try:
            try:
                connection = engine.connect()
            except DBAPIError as exc:
                raise self._error("cannot connect to", exc) from exc
            with connection:
                yield from self._read(connection)
            self.complete = True
        finally:
            engine.dispose()

    def _read(self, connection: Connection) -> Iterator[Document | Problem]:
        try:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(text(f"SET LOCAL statement_timeout = {math.ceil(self.timeout_s * 1000)}"))
            columns = list(connection.execute(text(f"{self._select()} WHERE 1 = 0")).keys())
        except DBAPIError as exc:
            raise self._error("the query failed on", exc) from exc
        mapping = self._mapping(columns)
        statement, params = self._select(), {}
        if self.since is not None:
            column = connection.dialect.identifier_preparer.quote(str(mapping.updated))
            statement += f" WHERE kb_rows.{column} >= :kb_since"
            params["kb_since"] = self.since
        try:
            result = connection.execution_options(stream_results=True, yield_per=_BATCH).execute(
                text(statement), params
            )
            for row in result:
                self.rows += 1
                fields = dict(row._mapping)
                if mapping.updated is not None:
                    self._advance(fields.get(mapping.updated))
                yield make_document(mapping, fields, f"{self.source.name}: row {self.rows}")
        except DBAPIError as exc:
            raise self._error("reading the rows failed on", exc) from exc
        self.cursor = encode_cursor(self._high)

    def _select(self) -> str:
        query = self.source.query.strip().rstrip(";").rstrip()
        return f"SELECT * FROM ({query}) kb_rows"

    def _mapping(self, columns: list[str]) -> RecordMapping:
        """The source's columns as the query names them; a column it lacks fails the source."""
        source = self.source

        def column(role: str, wanted: str | None) -> str | None:
            if wanted is None:
                return None
            found = (
                wanted
                if wanted in columns
                else next((c for c in columns if c.lower() == wanted.lower()), None)
            )
            if found is None:
                raise SourceError(
                    f"source {source.name!r}: {role} {wanted!r} is not a column of the query's result "
                    f"(its columns: {', '.join(columns) or 'none'})"
                )
            return found

        for name in template_fields(source.uri_template or ""):
            if name != "id":
                column("uri_template field", name)
        return RecordMapping(
            source=source.name,
            kind="sql",
            id=str(column("id_column", source.id_column)),
            title=column("title_column", source.title_column),
            text=tuple(str(column("text_columns entry", name)) for name in source.text_columns),
            updated=column("updated_column", source.updated_column),
            acl=column("acl_column", source.acl_column),
            tags=column("tags_column", source.tags_column),
            uri=None,
            uri_template=source.uri_template,
            now=self.now,
        )

    def _advance(self, value: Any) -> None:
        if value is None or encode_cursor(value) is None:
            return
        try:
            if self._high is None or value > self._high:
                self._high = value
        except TypeError:  # the column changed type since the last sync: the new kind wins
            self._high = value

    def _engine(self) -> Engine:
        shown = mask_url(self.source.url)
        try:
            url = make_url(self.url)
        except ArgumentError as exc:
            raise SourceError(f"source {self.source.name!r}: {shown} is not a SQLAlchemy URL") from exc
        connect_args: dict[str, Any] = {}
        if url.drivername in _POSTGRES:
            # psycopg 3 is the driver we ship; SQLAlchemy would otherwise look for psycopg2.
            url = url.set(drivername="postgresql+psycopg")
            connect_args["connect_timeout"] = max(1, math.ceil(self.timeout_s))
        elif url.get_backend_name() == "sqlite":
            url, connect_args = self._sqlite_read_only(url), {"timeout": self.timeout_s}
        try:
            return create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except (NoSuchModuleError, ImportError) as exc:
            raise SourceError(
                f"source {self.source.name!r}: no database driver for {url.drivername!r} here "
                "(PostgreSQL and SQLite are built in)"
            ) from exc
        except ArgumentError as exc:
            raise SourceError(f"source {self.source.name!r}: cannot use {shown}: {exc}") from exc

    def _sqlite_read_only(self, url: URL) -> URL:
        """A read-only URI for the file, so that neither a typo creates an empty database nor the
        query writes to it."""
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise SourceError(f"source {self.source.name!r}: an SQLite source needs a file, sqlite:///path")
        path = Path(database).expanduser().resolve()
        if not path.is_file():
            raise SourceError(f"source {self.source.name!r}: no SQLite database at {path}")
        return URL.create("sqlite", database=f"file:{quote(str(path))}", query={"mode": "ro", "uri": "true"})

    def _error(self, doing: str, exc: DBAPIError) -> SourceError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return SourceError(f"source {self.source.name!r}: {doing} {mask_url(self.source.url)}: {reason}")


def encode_cursor(value: Any) -> dict[str, Any] | None:
    """The cursor as JSON that `decode_cursor` turns back into the same kind of value, so that it
    binds as the column's own type (a text column's ISO strings compare as text, a timestamp as a
    timestamp, naive stays naive)."""
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    return None


def decode_cursor(cursor: Mapping[str, Any]) -> Any:
    kind, value = cursor.get("type"), cursor.get("value")
    decoders: dict[Any, Any] = {
        "datetime": datetime.fromisoformat,
        "date": date.fromisoformat,
        "int": int,
        "float": float,
        "decimal": Decimal,
        "str": str,
    }
    if kind not in decoders or value is None:
        return None
    try:
        return decoders[kind](value)
    except (TypeError, ValueError):
        return None  # an unreadable cursor means a full read, never a skipped row
