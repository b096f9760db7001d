"""One Settings object, built once at start and passed down, grouped by area.

Values come from keyword arguments, then `KB_*` environment variables, then a `.env` file in the
working directory, then the defaults. Nothing in the product reads `os.environ` elsewhere.

Each area is a frozen group (`settings.retrieval.top_k`, `settings.push.digest_hour`); each field
keeps the variable it always had (`KB_TOP_K`, `KB_PUSH_DIGEST_HOUR`). Keyword arguments use the
variable's name without `KB_`, so code and tests say what an operator would set:

>>> s = Settings(data_dir="/tmp/kb", top_k=3)
>>> s.database_url, s.retrieval.top_k
('sqlite:////tmp/kb/kb.db', 3)
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.errors import ConfigError
from core.settings.groups import (
    GROUPS,
    BotSettings,
    EmbeddingSettings,
    IngestSettings,
    LLMSettings,
    PrivacySettings,
    PushSettings,
    RetrievalSettings,
    ServerSettings,
    SlackSettings,
    SourcesSettings,
    TeamsSettings,
    TrainingSettings,
)

__all__ = [
    "ENV_PREFIX",
    "BotSettings",
    "EmbeddingSettings",
    "IngestSettings",
    "LLMSettings",
    "PrivacySettings",
    "PushSettings",
    "RetrievalSettings",
    "ServerSettings",
    "Settings",
    "SlackSettings",
    "SourcesSettings",
    "TeamsSettings",
    "TrainingSettings",
    "load_settings",
    "variable_name",
]

ENV_PREFIX = "KB_"

_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_POSTGRES_DRIVERS = {"postgresql", "postgresql+psycopg", "postgres"}


class Settings(BaseModel):
    """Every knob of the service, by area. See README.md for what each variable is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default=Path("var"), description="Where the SQLite file and indexes live.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    embedding: EmbeddingSettings
    ingest: IngestSettings
    retrieval: RetrievalSettings
    server: ServerSettings
    llm: LLMSettings
    privacy: PrivacySettings
    slack: SlackSettings
    teams: TeamsSettings
    bot: BotSettings
    sources: SourcesSettings
    push: PushSettings
    training: TrainingSettings

    def __init__(self, **values: Any) -> None:
        super().__init__(**_gather(values))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(
                "not a database URL; expected sqlite:///path/to/kb.db or postgresql://user@host:5432/db"
            ) from exc
        if url.drivername in _SQLITE_DRIVERS:
            return value
        if url.drivername in _POSTGRES_DRIVERS:
            if not url.database:
                raise ValueError("a PostgreSQL URL must name a database, e.g. postgresql://user@host/kb")
            # psycopg 3 is the driver we ship; SQLAlchemy would otherwise look for psycopg2.
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        raise ValueError(f"unsupported database {url.drivername!r}; use sqlite:/// or postgresql://")

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def sources_path(self) -> Path:
        """The sources file: KB_SOURCES_FILE, else sources.yaml under the data folder."""
        return self.sources.file or self.data_dir / "sources.yaml"

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).drivername in _SQLITE_DRIVERS

    def database_url_for_display(self) -> str:
        """The database URL with any password masked, safe for logs and status output."""
        return make_url(self.database_url).render_as_string(hide_password=True)

    def replace(self, **values: Any) -> Settings:
        """A copy with some values changed, named as in the environment: `s.replace(top_k=3)`."""
        return Settings(**{**self.flat(), **values})

    def flat(self) -> dict[str, Any]:
        """Every value under its variable's name without `KB_` (what `Settings(**...)` takes)."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _TOP_LEVEL}
        for group_name in GROUPS:
            values.update(getattr(self, group_name).model_dump(by_alias=True))
        return values


_TOP_LEVEL = ("data_dir", "database_url", "log_level")


@cache
def _variables() -> dict[str, tuple[str, str]]:
    """Variable name (without `KB_`, lower case) -> (group, field)."""
    table: dict[str, tuple[str, str]] = {}
    for group_name, group in GROUPS.items():
        for field_name, info in group.model_fields.items():
            name = info.alias or field_name
            if name in table or name in _TOP_LEVEL:
                raise AssertionError(f"two settings read KB_{name.upper()}")
            table[name] = (group_name, field_name)
    return table


def variable_name(group: str, field: str) -> str:
    """The environment variable of one field: `variable_name("push", "digest_hour")`."""
    for name, place in _variables().items():
        if place == (group, field):
            return f"{ENV_PREFIX}{name.upper()}"
    raise KeyError(f"{group}.{field}")


class _EnvironmentBase(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )


@cache
def _environment_model() -> type[BaseSettings]:
    """A flat settings class with one field per variable: reads and checks the environment."""
    fields: dict[str, Any] = {}
    for name in _TOP_LEVEL:
        info = Settings.model_fields[name]
        # Read as text: Settings' own validators normalise and check these (log level case, URL).
        fields[name] = (Path if name == "data_dir" else str, Field(default=info.default))
    for name, (group_name, field_name) in _variables().items():
        info = copy.copy(GROUPS[group_name].model_fields[field_name])
        info.alias = info.validation_alias = info.serialization_alias = None
        info.alias_priority = None
        fields[name] = (info.annotation, info)
    return create_model("Environment", __base__=_EnvironmentBase, **fields)


def _gather(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments + environment + .env + defaults, sorted into groups."""
    given_groups = {name: values.pop(name) for name in list(values) if name in GROUPS}
    unknown = sorted(set(values) - set(_variables()) - set(_TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"unknown setting(s): {', '.join(unknown)}",
            hint="settings are named as their KB_* variables, without the prefix, e.g. top_k for KB_TOP_K",
        )
    environment = _environment_model()(**values).model_dump()
    grouped: dict[str, Any] = {name: environment[name] for name in _TOP_LEVEL}
    if not grouped["database_url"]:
        grouped["database_url"] = f"sqlite:///{Path(grouped['data_dir']) / 'kb.db'}"
    for group_name in GROUPS:
        grouped[group_name] = {}
    for name, (group_name, field_name) in _variables().items():
        grouped[group_name][field_name] = environment[name]
    grouped.update(given_groups)
    return grouped


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    if len(loc) >= 2 and loc[0] in GROUPS:
        try:
            name = variable_name(loc[0], loc[1])
        except KeyError:
            name = "settings"
    elif loc and loc[0] in GROUPS:
        name = f"settings ({loc[0]})"
    elif loc:
        name = f"{ENV_PREFIX}{loc[0].upper()}"
    else:
        name = "settings"
    return f"{name}: {error['msg'].removeprefix('Value error, ')}"


def load_settings(**overrides: Any) -> Settings:
    """Build the Settings, turning validation errors into one ConfigError that names each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            "invalid configuration: " + "; ".join(_describe(error) for error in exc.errors()),
            hint="fix the environment variable or the .env file and try again",
        ) from exc
