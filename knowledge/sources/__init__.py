"""Declared sources: folders, SQL queries and HTTP JSON APIs that `kb sources sync` keeps in the KB.

`config` reads and validates the sources file, `sql` and `api` turn rows and records into
Documents (with `records`, shared by both, and `http`, the guarded JSON fetcher), `state` keeps
each source's cursor and last sync, and `runner` puts them together through the ingest.
"""

from knowledge.sources.config import (
    ApiSource,
    FilesSource,
    SourceConfigError,
    SourceError,
    SourcesFile,
    SqlSource,
    load_sources,
    parse_source,
)
from knowledge.sources.runner import SourceRunner, SyncResult

__all__ = [
    "ApiSource",
    "FilesSource",
    "SourceConfigError",
    "SourceError",
    "SourceRunner",
    "SourcesFile",
    "SqlSource",
    "SyncResult",
    "load_sources",
    "parse_source",
]
