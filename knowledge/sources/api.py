"""API sources: every page of an HTTP JSON API, each record made into a Document.

Pages follow a next-URL field (`next_path`), or a page number parameter (`page_param`, with
`page_size`: a short or empty page is the last). APIs rarely filter by time, so every sync reads
every page; unchanged records are skipped by content hash when they are written, and records
that are gone are swept only after the last page was read (`ApiReader.complete`).

The reader is a plain iterator for the (synchronous, CPU-bound) ingest; it runs the aiohttp
requests on a private event loop, one page at a time, so memory holds one page, not the API.
Call it from a worker thread, not from inside a running event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from yarl import URL

from knowledge.sources.config import ApiSource, SourceError, mask_url
from knowledge.sources.http import JsonClient, UrlPolicy
from knowledge.sources.records import RecordMapping, make_document, parse_updated
from knowledge.sync import Problem
from knowledge.types import Document


class ApiReader:
    """Reads an API source's records as Documents (and Problems for records that cannot be).

    After iterating, `complete` says whether every page was read and `cursor` holds the largest
    `updated_field` value seen (for the state table; the API is not asked to filter by it).
    """

    def __init__(
        self,
        source: ApiSource,
        *,
        environ: Mapping[str, str],
        policy: UrlPolicy,
        timeout_s: float,
        max_bytes: int,
        now: datetime,
    ) -> None:
        self.source = source
        self.client = JsonClient(
            policy=policy,
            timeout_s=timeout_s,
            max_bytes=max_bytes,
            retries=source.retries,
            backoff_s=source.backoff_s,
            headers=_auth_headers(source, environ),
            origin_url=source.url,
        )
        self.mapping = RecordMapping(
            source=source.name,
            kind="api",
            id=source.id_field,
            title=source.title_field,
            text=source.text_fields,
            updated=source.updated_field,
            acl=source.acl_field,
            tags=source.tags_field,
            uri=source.url_field,
            uri_template=None,
            now=now,
        )
        self.complete = False
        self.cursor: datetime | None = None
        self.pages = 0

    def documents(self) -> Iterator[Document | Problem]:
        loop = asyncio.new_event_loop()
        pages = self._pages()
        try:
            while True:
                try:
                    items = loop.run_until_complete(anext(pages))
                except StopAsyncIteration:
                    break
                self.pages += 1
                for number, item in enumerate(items, start=1):
                    yield self._document(item, f"{self.source.name}: page {self.pages}, item {number}")
            self.complete = True
        finally:
            loop.run_until_complete(pages.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _document(self, item: Any, place: str) -> Document | Problem:
        if not isinstance(item, dict):
            return Problem(place, f"{type(item).__name__}, not a JSON object; skipped")
        fields = {name: lookup(item, name) for name in self.mapping.names}
        result = make_document(self.mapping, fields, place)
        if isinstance(result, Document) and self.source.updated_field:
            updated = parse_updated(fields.get(self.source.updated_field))
            if updated is not None and (self.cursor is None or updated > self.cursor):
                self.cursor = updated
        return result

    async def _pages(self) -> AsyncGenerator[list[Any]]:
        source = self.source
        async with self.client:
            url, page, requested = source.url, source.first_page, set[str]()
            for _ in range(source.max_pages):
                if source.page_param:
                    query = {source.page_param: page}
                    if source.page_size:
                        query[source.page_size_param] = source.page_size
                    url = str(URL(source.url, encoded=True).update_query(query))
                if url in requested:
                    raise SourceError(f"source {source.name!r}: pagination loops back to {mask_url(url)}")
                requested.add(url)
                data = await self.client.get_json(url)
                items = _items(data, source, url)
                yield items
                if source.next_path:
                    following = lookup(data, source.next_path)
                    if not following:
                        return
                    if not isinstance(following, str):
                        raise SourceError(
                            f"source {source.name!r}: {source.next_path!r} in {mask_url(url)} is "
                            f"{type(following).__name__}, not a URL"
                        )
                    url = urljoin(url, following)
                elif source.page_param:
                    if not items or (source.page_size and len(items) < source.page_size):
                        return
                    page += 1
                else:
                    return
            raise SourceError(
                f"source {source.name!r}: more than max_pages={source.max_pages} pages; raise max_pages "
                "if the API is really that large"
            )


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path in nested objects (`data.items`), or None; "" is the data itself."""
    if not path:
        return data
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _items(data: Any, source: ApiSource, url: str) -> list[Any]:
    items = lookup(data, source.items_path)
    where = f"source {source.name!r}: the response from {mask_url(url)}"
    if items is None:
        keys = ", ".join(list(data)[:12]) if isinstance(data, dict) else type(data).__name__
        raise SourceError(f"{where} has no {source.items_path!r} (it holds: {keys}); check items_path")
    if not isinstance(items, list):
        path = repr(source.items_path) if source.items_path else "the top level"
        raise SourceError(f"{where}: {path} is {type(items).__name__}, not a list; check items_path")
    return items


def _auth_headers(source: ApiSource, environ: Mapping[str, str]) -> dict[str, str]:
    if not source.auth_header or not source.auth_env:
        return {}
    value = environ.get(source.auth_env)
    if not value:
        raise SourceError(
            f"source {source.name!r}: auth_env names {source.auth_env}, but that environment variable "
            "is not set (or empty)"
        )
    return {source.auth_header: value}
