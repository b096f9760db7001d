"""The sources file: which sources feed the knowledge base, validated, with secrets kept out of it.

A YAML file (`KB_SOURCES_FILE`, default `<KB_DATA_DIR>/sources.yaml`) lists the sources; each has
a unique `name` and a `kind`:

```yaml
sources:
  - name: handbook
    kind: files
    path: ../examples/handbook      # relative to this file
    acl_groups: [staff]             # for documents that name no groups themselves
  - name: tickets
    kind: sql
    url: postgresql://kb_reader:${CRM_DB_PASSWORD}@crm-db/crm   # ${NAME}: from the environment
    query: SELECT id, subject, body, team, updated_at FROM tickets WHERE NOT spam
    id_column: id
    title_column: subject
    text_columns: [body]
    updated_column: updated_at      # incremental: only rows changed since the last sync
    acl_column: team
    uri_template: crm://tickets/{id}
  - name: wiki
    kind: api
    url: https://wiki.example.com/api/pages
    items_path: data.items
    next_path: links.next           # or page_param: page + page_size: 100
    auth_header: Authorization
    auth_env: WIKI_TOKEN            # the header's value comes from this variable, never the file
    text_fields: [body]
    updated_field: updated_at
    url_field: html_url
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from knowledge.errors import KnowledgeError
from knowledge.types import Document

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_PARAM = re.compile(r"pass|secret|token|key|sig|auth|credential|session", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SourceError(KnowledgeError):
    """A declared source could not be read; the sync reports it by name and goes on with the others."""


class SourceConfigError(KnowledgeError):
    """The sources file, or a source given on the command line, is invalid."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(pattern=NAME_PATTERN, description="Unique; documents of sql/api sources carry it.")
    acl_groups: tuple[str, ...] = Field(default=(), description="For documents that name no groups.")
    tags: tuple[str, ...] = Field(default=(), description="For documents that carry no tags.")


class FilesSource(_Source):
    """A folder of documents, read by the file loaders (Markdown, PDF, DOCX, HTML, CSV, JSON...)."""

    kind: Literal["files"]
    path: Path


class SqlSource(_Source):
    """Rows of a query on any SQLAlchemy database; one document per row."""

    kind: Literal["sql"]
    url: str = Field(min_length=1, description="SQLAlchemy URL; ${NAME} is read from the environment.")
    query: str = Field(min_length=1)
    id_column: str = Field(min_length=1)
    title_column: str | None = None
    text_columns: tuple[str, ...] = Field(min_length=1)
    updated_column: str | None = None
    acl_column: str | None = None
    tags_column: str | None = None
    uri_template: str | None = Field(default=None, description="e.g. crm://tickets/{id}; any column too.")

    @model_validator(mode="after")
    def _check(self) -> SqlSource:
        if not _SCHEME.match(self.url):
            raise ValueError("url: not a database URL; expected e.g. postgresql://user@host/db")
        return self


class ApiSource(_Source):
    """Records of an HTTP JSON API, page by page; one document per record."""

    kind: Literal["api"]
    url: str = Field(min_length=1)
    items_path: str = Field(default="", description="Dotted path to the list, e.g. data.items; empty: top.")
    next_path: str | None = Field(default=None, description="Dotted path to the next page's URL.")
    page_param: str | None = Field(default=None, description="Query parameter numbering the pages.")
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    page_size_param: str = "page_size"
    first_page: int = Field(default=1, ge=0)
    max_pages: int = Field(default=1000, ge=1, le=1_000_000)
    auth_header: str | None = Field(default=None, description="Header name, e.g. Authorization.")
    auth_env: str | None = Field(default=None, description="Environment variable holding its value.")
    id_field: str = "id"
    title_field: str = "title"
    text_fields: tuple[str, ...] = Field(default=("body",), min_length=1)
    updated_field: str | None = None
    url_field: str | None = None
    acl_field: str | None = None
    tags_field: str | None = None
    retries: int = Field(default=2, ge=0, le=10, description="Retries after a 5xx, a timeout or a reset.")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="First retry's wait; doubles after.")

    @model_validator(mode="after")
    def _check(self) -> ApiSource:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url: not an http(s) URL with a host")
        if self.next_path and self.page_param:
            raise ValueError("next_path and page_param: paginate by one of them, not both")
        if self.page_size is not None and not self.page_param:
            raise ValueError("page_size needs page_param (the query parameter that numbers the pages)")
        if bool(self.auth_header) != bool(self.auth_env):
            raise ValueError("auth_header and auth_env go together: the header's name, and the variable")
        if self.auth_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.auth_env):
            raise ValueError("auth_env: the name of an environment variable, not its value")
        return self


AnySource = FilesSource | SqlSource | ApiSource
Source = Annotated[AnySource, Field(discriminator="kind")]
_SOURCE: TypeAdapter[AnySource] = TypeAdapter(Source)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourcesFile:
    """The declared sources and the file they came from (relative paths are relative to it)."""

    path: Path
    sources: tuple[AnySource, ...] = ()

    @property
    def names(self) -> list[str]:
        return [source.name for source in self.sources]

    def get(self, name: str) -> AnySource:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(self.names) or "none"
        raise SourceConfigError(
            f"no source named {name!r} in {self.path} (declared: {known})", hint="see `kb sources list`"
        )

    def folder(self, source: FilesSource) -> Path:
        path = source.path.expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def document_source(self, source: AnySource) -> str:
        """The `source` its documents carry before its first sync: a files source's folder name
        (the registry may give it another, see SourceRunner.document_source), else its name."""
        if isinstance(source, FilesSource):
            return self.folder(source).resolve().name
        return source.name

    def with_source(self, source: AnySource) -> SourcesFile:
        if source.name in self.names:
            raise SourceConfigError(
                f"a source named {source.name!r} is already declared in {self.path}",
                hint="pick another name, or `kb sources remove` the old one first",
            )
        result = SourcesFile(self.path, (*self.sources, source))
        result.check_unique()
        return result

    def without(self, name: str) -> SourcesFile:
        self.get(name)
        return SourcesFile(self.path, tuple(s for s in self.sources if s.name != name))

    def check_unique(self) -> None:
        """Two sources must not own the same documents: names are unique, and no files source's
        folder is, or lies inside, another's (a sync of one would sweep the other's files)."""
        names: set[str] = set()
        folders: dict[Path, str] = {}
        for source in self.sources:
            if source.name in names:
                raise SourceConfigError(f"{self.path}: source {source.name!r}: name is declared twice")
            names.add(source.name)
            if not isinstance(source, FilesSource):
                continue
            folder = self.folder(source).resolve()
            for other, owner in folders.items():
                if folder == other or folder.is_relative_to(other) or other.is_relative_to(folder):
                    raise SourceConfigError(
                        f"{self.path}: source {source.name!r}: its folder {folder} overlaps the folder "
                        f"{other} of source {owner!r}",
                        hint="declare the outer folder once (its subfolders are part of it)",
                    )
            folders[folder] = source.name

    def save(self) -> None:
        """Write the file atomically; comments in a hand-written file are not kept."""
        data = {"sources": [source_dict(source) for source in self.sources]}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self.path)


def source_dict(source: AnySource) -> dict[str, Any]:
    """The source as the file holds it: name and kind first, defaults left out."""
    data = source.model_dump(mode="json", exclude_defaults=True)
    return {"name": data.pop("name"), "kind": data.pop("kind"), **data}


def load_sources(path: Path) -> SourcesFile:
    """Read and validate the sources file; a missing file declares no sources."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SourcesFile(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceConfigError(f"cannot read the sources file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise SourceConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if data is None:
        return SourcesFile(path)
    if not isinstance(data, dict):
        raise SourceConfigError(f"{path}: expected a mapping with a `sources:` list at the top")
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise SourceConfigError(_explain(exc, data.get("sources"), path=str(path))) from exc
    result = SourcesFile(path, tuple(parsed.sources))
    result.check_unique()
    return result


def parse_source(data: Mapping[str, Any], *, origin: str = "the command line") -> AnySource:
    """Validate one source given as a mapping (by `kb sources add`), with the same messages as the file."""
    try:
        return _SOURCE.validate_python(dict(data))
    except ValidationError as exc:
        raise SourceConfigError(_explain(exc, [data], path=origin, prefix=("sources", 0))) from exc


def _explain(exc: ValidationError, raw: Any, *, path: str, prefix: tuple[Any, ...] = ()) -> str:
    """One line per problem, naming the source (by name where it has one) and the field."""
    problems = []
    for error in exc.errors():
        loc = (*prefix, *error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            item = raw[loc[1]] if isinstance(raw, list) and loc[1] < len(raw) else None
            name = item.get("name") if isinstance(item, Mapping) else None
            who = f"source {name!r}" if isinstance(name, str) and name else f"source #{loc[1] + 1}"
            kind = item.get("kind") if isinstance(item, Mapping) else None
            # The union puts the kind in the location (sources.0.sql.url): a field's name is what helps.
            rest = [str(part) for part in loc[2:] if part != kind]
            if error["type"] == "extra_forbidden":
                message = f"not a setting of a {kind} source"
            field = ".".join(rest)
            problems.append(f"{who}: {field}: {message}" if field else f"{who}: {message}")
        else:
            problems.append(f"{'.'.join(str(p) for p in loc) or 'file'}: {message}")
    return f"{path}: " + "; ".join(problems)


def expand_env(text: str, environ: Mapping[str, str], *, source: str, field: str) -> str:
    """Replace each ${NAME} with the environment variable's value, so secrets stay out of the file."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise SourceError(
                f"source {source!r}: {field} refers to ${{{name}}}, but that environment variable is not set"
            )
        return environ[name]

    return _ENV_REFERENCE.sub(value, text)


def mask_url(url: str) -> str:
    """The URL without secrets, for messages, listings and the audit log: password and key-like
    query values become ***; ${NAME} references are kept, as they name a variable, not a value.

    >>> mask_url("postgresql://kb:hunter2@db/crm?sslkey=/k&x=1")
    'postgresql://kb:***@db/crm?sslkey=***&x=1'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparsable URL)"
    masked = url
    if password and not _ENV_REFERENCE.fullmatch(password):
        userinfo, _, hostport = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{hostport}", 1)
    if parts.query:

        def hide(match: re.Match[str]) -> str:
            key = match.group(2)
            return f"{match.group(1)}{key}=***" if _SECRET_PARAM.search(key) else match.group(0)

        query = re.sub(r"(^|[&;])([^=&;]*)=([^&;]*)", hide, parts.query)
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def audit_params(source: AnySource) -> dict[str, Any]:
    """The source's settings for the audit log: URLs masked (audit's own scrub masks secret keys)."""
    data = source_dict(source)
    if "url" in data:
        data["url"] = mask_url(str(data["url"]))
    data.pop("query", None)  # may be long; its text is in the sources file
    return data


def defaults_for(source: AnySource) -> Callable[[Document], Document]:
    """What gives a document the source's default ACL groups and tags, where it carries none of its own."""

    def apply(document: Document) -> Document:
        acl = document.acl_groups or source.acl_groups
        tags = document.tags or source.tags
        if (acl, tags) == (document.acl_groups, document.tags):
            return document
        return replace(document, acl_groups=acl, tags=tags)

    return apply
