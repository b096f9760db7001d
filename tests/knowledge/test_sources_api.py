"""API sources against a real aiohttp server on 127.0.0.1 (ephemeral port): pagination, auth,
retries, every way the API can fail, the SSRF guard, and that a half-read listing deletes nothing."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Engine

from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.sources import ApiSource, SourceError, SourceRunner, SourcesFile, SyncResult, parse_source
from knowledge.sources.http import UrlPolicy, address_kind
from knowledge.types import Question

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "Bearer s3cret-token"


@dataclass(frozen=True)
class Status:
    code: int
    text: str = ""
    content_type: str = "text/plain"


@dataclass(frozen=True)
class Slow:
    seconds: float


@dataclass(frozen=True)
class Redirect:
    location: str


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeApi:
    """A JSON API on 127.0.0.1 with an ephemeral port, in a thread of its own (the sync under test
    runs its own event loop). `serve(path, *replies)` answers a path with the replies in turn, the
    last one repeating; every request is recorded in `requests`."""

    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    def serve(self, path: str, *replies: Any) -> None:
        queue = deque(replies)

        async def handler(request: web.Request) -> web.StreamResponse:
            reply = queue.popleft() if len(queue) > 1 else queue[0]
            if isinstance(reply, Status):
                return web.Response(status=reply.code, text=reply.text, content_type=reply.content_type)
            if isinstance(reply, Slow):
                await asyncio.sleep(reply.seconds)
                return web.json_response({"data": {"items": []}})
            if isinstance(reply, Redirect):
                raise web.HTTPFound(reply.location)
            return web.json_response(reply)

        self.routes[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.query), dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)

    @classmethod
    def running(cls) -> Iterator[FakeApi]:
        fake, ready, loop = cls(), threading.Event(), asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", fake._dispatch)
        runner = web.AppRunner(app, shutdown_timeout=0.1)

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            fake.port = runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=serve, name="fake-api", daemon=True)
        thread.start()
        assert ready.wait(10), "the fake API did not start"
        try:
            yield fake
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    yield from FakeApi.running()


def make_kb(make_settings: Callable[..., Settings], embedder: Embedder, **overrides: Any) -> KnowledgeBase:
    settings = make_settings(source_timeout_s=0.5, **overrides)
    engine: Engine = db.make_engine(settings)
    db.upgrade(engine)
    return KnowledgeBase(settings, engine, embedder=embedder)


@pytest.fixture
def kb(make_settings: Callable[..., Settings], embedder: Embedder) -> Iterator[KnowledgeBase]:
    kb = make_kb(make_settings, embedder, url_allowlist=["127.0.0.1"])
    yield kb
    kb.store.engine.dispose()


def record(number: int, body: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": number,
        "title": f"Wiki page {number}",
        "body": body or f"Page {number} explains how the team handles topic number {number}.",
        "updated": f"2026-03-{number:02d}T08:00:00Z",
        "html_url": f"https://wiki.example.com/pages/{number}",
        "groups": ["staff"],
        **extra,
    }


def page(items: list[dict[str, Any]], following: str | None = None) -> dict[str, Any]:
    return {"data": {"items": items}, "links": {"next": following}}


def source(api: FakeApi, **overrides: Any) -> ApiSource:
    fields: dict[str, Any] = {
        "name": "wiki",
        "kind": "api",
        "url": api.url("/items"),
        "items_path": "data.items",
        "next_path": "links.next",
        "auth_header": "Authorization",
        "auth_env": "WIKI_TOKEN",
        "updated_field": "updated",
        "url_field": "html_url",
        "acl_field": "groups",
        "retries": 1,
        "backoff_s": 0.01,
    }
    made = parse_source({**fields, **overrides})
    assert isinstance(made, ApiSource)
    return made


def sync(kb: KnowledgeBase, src: ApiSource, environ: dict[str, str] | None = None) -> SyncResult:
    env = {"WIKI_TOKEN": TOKEN} if environ is None else environ
    return SourceRunner(kb, SourcesFile(Path("sources.yaml"), (src,)), environ=env).sync(src)


def three_pages(api: FakeApi) -> None:
    api.serve("/items", page([record(1), record(2)], api.url("/items/p2")))
    api.serve("/items/p2", page([record(3), record(4)], "/items/p3"))  # a relative next link
    api.serve("/items/p3", page([record(5)]))


def test_next_link_pagination_sends_the_auth_header_and_syncs_changes(
    api: FakeApi, kb: KnowledgeBase
) -> None:
    three_pages(api)
    first = sync(kb, source(api))
    assert (first.status, first.report.added, first.documents) == ("ok", 5, 5)
    assert api.paths() == ["/items", "/items/p2", "/items/p3"]
    assert all(seen.headers.get("Authorization") == TOKEN for seen in api.requests)
    assert first.cursor is not None and first.cursor["value"].startswith("2026-03-05")
    hits = kb.retrieve(Question("how the team handles topic number 4", groups=("staff",)), 1)
    assert hits[0].uri == "https://wiki.example.com/pages/4"

    assert sync(kb, source(api)).report.unchanged == 5
    api.serve(
        "/items", page([record(1, body="Page one now covers the new on-call rota."), record(2)], "/items/p2")
    )
    api.serve("/items/p3", page([]))
    changed = sync(kb, source(api))
    counts = changed.report.counts()
    assert (counts["updated"], counts["unchanged"], counts["removed"], changed.documents) == (1, 3, 1, 4)


def test_page_number_pagination_stops_at_a_short_page(api: FakeApi, kb: KnowledgeBase) -> None:
    records = [record(n) for n in range(1, 6)]

    async def pages(request: web.Request) -> web.StreamResponse:
        number, size = int(request.query["page"]), int(request.query["per_page"])
        return web.json_response(records[(number - 1) * size : number * size])

    api.routes["/pages"] = pages
    src = source(
        api,
        url=api.url("/pages?lang=en"),
        items_path="",
        next_path=None,
        page_param="page",
        page_size=2,
        page_size_param="per_page",
    )
    result = sync(kb, src)
    assert (result.status, result.report.added) == ("ok", 5)
    assert [seen.query for seen in api.requests] == [
        {"lang": "en", "page": str(n), "per_page": "2"} for n in (1, 2, 3)
    ]


def test_server_errors_are_retried_with_backoff(api: FakeApi, kb: KnowledgeBase) -> None:
    api.serve("/items", Status(500), Status(503), page([record(1)]))
    result = sync(kb, source(api, retries=2))
    assert (result.status, result.report.added, len(api.requests)) == ("ok", 1, 3)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Status(500, "boom"), "HTTP 500 Internal Server Error from http://127.0.0.1:"),
        (Slow(1.5), "within 0.5s (after 2 attempts)"),
        (Status(200, "<html>maintenance</html>", "text/html"), "is not JSON (Content-Type text/html"),
        ({"items": []}, "has no 'data.items' (it holds: items); check items_path"),
        (Redirect("/items/p2"), "redirect loop"),
    ],
    ids=["500", "timeout", "not-json", "no-items-path", "redirect-loop"],
)
def test_a_run_that_fails_half_way_deletes_nothing(
    api: FakeApi, kb: KnowledgeBase, reply: Any, expected: str
) -> None:
    three_pages(api)
    assert sync(kb, source(api)).documents == 5
    api.serve("/items", page([record(1, body="Page one was rewritten today.")], api.url("/items/p2")))
    api.serve("/items/p2", reply)
    result = sync(kb, source(api))
    assert result.status == "failed"
    [problem] = result.report.skipped
    assert problem.path == "wiki" and expected in problem.reason, problem.reason
    assert (result.report.updated, result.report.removed, result.documents) == (1, 0, 5)
    state = SourceRunner(kb, SourcesFile(Path("s.yaml")), environ={}).states.get("wiki")
    assert state is not None and state.status == "failed" and state.problems[0]["reason"] == problem.reason


def test_records_without_an_id_are_skipped(api: FakeApi, kb: KnowledgeBase) -> None:
    api.serve("/items", page([record(1), {**record(2), "id": None}, "not an object"]))
    result = sync(kb, source(api))
    assert (result.status, result.report.added) == ("partial", 1)
    assert [(p.path, p.reason) for p in result.report.skipped] == [
        ("wiki: page 1, item 2", "no value in the id field 'id'; skipped"),
        ("wiki: page 1, item 3", "str, not a JSON object; skipped"),
    ]


def test_the_auth_variable_must_be_set(api: FakeApi, kb: KnowledgeBase) -> None:
    result = sync(kb, source(api), environ={})
    assert result.status == "failed" and "WIKI_TOKEN" in result.report.skipped[0].reason
    assert api.requests == []


def test_loopback_is_refused_unless_allowlisted(
    api: FakeApi, make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    three_pages(api)
    strict = make_kb(make_settings, embedder)
    result = sync(strict, source(api))
    assert result.status == "failed"
    reason = result.report.skipped[0].reason
    assert "127.0.0.1 resolves to 127.0.0.1, a loopback address" in reason
    assert "KB_URL_ALLOWLIST" in reason
    assert api.requests == [], "nothing was sent"
    strict.store.engine.dispose()


def test_redirects_are_checked_too_and_credentials_stay_with_their_origin(
    api: FakeApi, make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    three_pages(api)
    api.serve("/moved", Redirect(f"http://localhost:{api.port}/items/p3"))
    kb = make_kb(make_settings, embedder, url_allowlist=["127.0.0.1"])
    refused = sync(kb, source(api, url=api.url("/moved")))
    assert "refused http://localhost:" in refused.report.skipped[0].reason
    assert "a loopback address" in refused.report.skipped[0].reason
    assert api.paths() == ["/moved"]

    kb.store.engine.dispose()
    kb = make_kb(make_settings, embedder, url_allowlist=["127.0.0.1", "localhost"])
    followed = sync(kb, source(api, url=api.url("/moved")))
    assert (followed.status, followed.report.added) == ("ok", 1)
    assert api.requests[-2].headers.get("Authorization") == TOKEN
    assert "Authorization" not in api.requests[-1].headers, "not sent on to another origin"
    kb.store.engine.dispose()


def test_url_policy_refuses_non_public_addresses() -> None:
    import ipaddress

    kinds = {
        "127.0.0.1": "loopback",
        "10.1.2.3": "private",
        "169.254.169.254": "link-local",
        "224.0.0.1": "multicast",
        "::ffff:192.168.1.1": "private",
        "0.0.0.0": "unspecified",
        "100.64.0.1": "non-public",
        "93.184.216.34": None,
    }
    assert {a: address_kind(ipaddress.ip_address(a)) for a in kinds} == kinds
    policy = UrlPolicy(["10.0.0.0/8", "Intranet.Example"])
    assert policy.refusal("wiki", "10.9.9.9") is None
    assert policy.refusal("intranet.example", "192.168.0.1") is None
    assert "link-local" in str(policy.refusal("metadata", "169.254.169.254"))
    for url, expected in [
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://2130706433/", "a loopback address"),  # 127.0.0.1 written as one number
        ("file:///etc/passwd", "only http and https"),
    ]:
        with pytest.raises(SourceError, match=expected):
            asyncio.run(policy.check(url))
