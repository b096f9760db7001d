"""Engine factory, sessions and migrations.

SQLite (a file under `KB_DATA_DIR`, WAL mode, foreign keys on) is the embedded default;
PostgreSQL is used when `KB_DATABASE_URL` says so. The schema is owned by Alembic: `kb db upgrade`
applies the migrations, and commands that need the schema call :func:`require_migrated` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core.errors import DatabaseError, NotMigratedError
from core.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(settings: Settings) -> Engine:
    """An engine for the configured database; creates the SQLite file's folder when needed."""
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "core/migrations/versions has no migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    # Alembic's own reader pulls in its whole migration runtime; `kb status` only needs the row
    # (one linear history: one row in alembic_version, or no table yet).
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            row = connection.execute(text("select version_num from alembic_version")).first()
            return None if row is None else str(row[0])
    except OperationalError as exc:
        raise _unreachable(engine, exc) from exc


DataStep = Callable[[Connection], None]


def upgrade(
    engine: Engine, revision: str = "head", *, data_steps: Mapping[str, DataStep] | None = None
) -> tuple[str | None, str | None]:
    """Apply migrations up to `revision`; returns (before, after).

    `data_steps` are the named data migrations that need a layer above `core` (the redaction
    policy, say): a migration looks its step up by name and runs it in the same transaction.
    `kb db upgrade` provides them (app/commands/db.py).
    """
    before = current_revision(engine)
    config = _alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            config.attributes["data_steps"] = dict(data_steps or {})
            from alembic import command

            command.upgrade(config, revision)
    except OperationalError as exc:
        raise _unreachable(engine, exc) from exc
    return before, current_revision(engine)


def require_migrated(engine: Engine) -> None:
    """Raise NotMigratedError unless the database is at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}, not {head}"
        raise NotMigratedError(
            f"the database {engine.url.render_as_string(hide_password=True)} {state}",
            hint="run `kb db upgrade` first",
        )


def _unreachable(engine: Engine, exc: OperationalError) -> DatabaseError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return DatabaseError(
        f"cannot use the database {engine.url.render_as_string(hide_password=True)}: {reason}",
        hint="check KB_DATABASE_URL and that the server is running",
    )
