"""Shared fixtures: every test gets a clean environment, its own working directory and database."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from core import db
from core.settings import Settings, load_settings
from knowledge.embeddings import Embedder, get_embedder

REPO = Path(__file__).resolve().parent.parent
HANDBOOK = REPO / "examples" / "handbook"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KB_* variable and no .env from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("KB_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required on 127.0.0.1:5432 (trust auth, database test): {exc.orig}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A fresh schema in the `test` database, dropped afterwards; the URL puts it first on search_path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'create schema "{schema}"'))
    yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'drop schema "{schema}" cascade'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'kb.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        # Tests write behaviour events at made-up times, future ones too, and fold them at once: no
        # settle time (tests/push/test_profiles.py tests it).
        return load_settings(data_dir=tmp_path / "var", **{"push_event_settle_s": 0.0, **overrides})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    db.upgrade(engine)
    return engine


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder(None)


@pytest.fixture
def small_handbook(tmp_path: Path) -> Path:
    """A folder named `handbook` of the sample's shape, smaller: its README, `it` and `contacts`.

    For tests that ingest a handbook several times to check what happens to folders and sources
    (or to questions over them), not what the pages say: embedding the whole sample for each made
    those tests a sixth of the suite's time.
    """
    target = tmp_path / "handbook"
    target.mkdir()
    shutil.copy(HANDBOOK / "README.md", target / "README.md")
    for folder in ("it", "contacts"):
        shutil.copytree(HANDBOOK / folder, target / folder)
    return target


# Every log record of the whole run goes to one file, which is checked for secrets at the end:
# the product must never log a secret, whatever a test feeds it.
_LOG_FILE = Path(os.environ.get("TMPDIR", "/tmp")) / f"kb-test-logs-{os.getpid()}.log"
# Secret values that tests hand to the product (settings, documents, questions).
SECRETS_USED_IN_TESTS = (
    "xoxb-very-secret-value",
    "xoxb-from-dotenv",
    "hunter2",
    "sk-proj-4f9XbQ7rT2mK8vN3pL6wZ1yC5hJ0dA9e",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    handler = logging.FileHandler(_LOG_FILE, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.set_name("kb-secret-check")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "kb-secret-check":
            handler.flush()
    if not _LOG_FILE.exists():
        return
    text = _LOG_FILE.read_text(encoding="utf-8", errors="replace")
    found = [secret for secret in SECRETS_USED_IN_TESTS if secret in text]
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nSECRETS IN LOGS: {len(found)} secret values were logged during the run (see {_LOG_FILE})")
    else:
        print(f"\nlog check: {len(text.splitlines())} log lines, no secret values")
