"""A property-based fuzz of every operation in the OpenAPI description (schemathesis), over HTTP.

`kb serve`'s application (create_app with push's routes, on a small ingested folder) runs on an
ephemeral loopback port in a thread of its own; schemathesis generates requests that fit the
description and requests that break it. No request may get a 5xx, and every 4xx of the API is
`{"error": "..."}` (the HTML pages answer an HTML page, which a person reads). Slack's and Teams'
webhooks are not configured here: their requests meet the guards and the router's JSON 404.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from app.server.assembly import create_app
from app.server.openapi import openapi
from app.server.push import mount_push
from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase

pytestmark = pytest.mark.slow  # a real server and about 2,000 requests

MIN_REQUESTS = 2000
EXAMPLES = 85  # per operation and mode: 24 runs with inputs reach 2,000; those without stop at one
PAGES = {"/", "/admin", "/sources/{document}"}  # opened by people: their errors are HTML pages


class Served:
    """An aiohttp application on 127.0.0.1:<ephemeral> in a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self._app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Served:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()


@pytest.fixture
def base_url(make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder) -> Iterator[str]:
    settings = make_settings()
    engine = db.make_engine(settings)
    db.upgrade(engine)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text(
        "# VPN\n\n## Installing\n\nInstall HaldenConnect from the Software Center.\n"
    )
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    kb.ingest([docs])
    app = create_app(settings, kb)
    mount_push(app, settings, engine)
    with Served(app) as served:
        yield f"http://127.0.0.1:{served.port}"
    engine.dispose()


def _problem(path: str, response: schemathesis.Response) -> str | None:
    """What is wrong with the answer to a generated request, if anything."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}"
    if status < 400 or (
        path in PAGES and response.headers.get("content-type", [""])[0].startswith("text/html")
    ):
        return None
    if status == 400 and response.content.startswith(b"Got more than"):
        # aiohttp's HTTP parser refuses a request line or header over 8190 bytes before any
        # handler or middleware runs; that answer is its own plain text, by design of the server.
        return None
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        error = None
    return (
        None
        if isinstance(error, str) and error
        else f"{status} without a JSON error: {response.content[:200]!r}"
    )


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session, seen: Seen) -> None:
    """Send what schemathesis generates for one operation in one mode; record every problem (the run
    goes on, so one run lists them all)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=60)
        seen.sent[f"{operation.method.upper()} {operation.path}"] += 1
        problem = _problem(operation.path, response)
        if problem is not None:
            seen.problems.append(f"{problem}: {case.as_curl_command()}")

    try:
        send()
    except Unsatisfiable:  # nothing to break: an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE, f"{operation.method} {operation.path} generated nothing"


@dataclass
class Seen:
    sent: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def test_no_generated_request_gets_a_server_error(base_url: str) -> None:
    schema = schemathesis.openapi.from_dict(openapi())
    seen = Seen()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(operation, mode, base_url, session, seen)
    assert not seen.problems, "\n".join(sorted(set(seen.problems))[:30])
    described = {f"{m.upper()} {p}" for p, item in openapi()["paths"].items() for m in item}
    assert set(seen.sent) == described, f"never requested: {described - set(seen.sent)}"
    assert sum(seen.sent.values()) >= MIN_REQUESTS, seen.sent
