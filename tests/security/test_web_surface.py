"""The web surface's probes: each request below got through `kb serve` before app/server/security.py.

Over real HTTP on loopback; the slow-client probes speak raw HTTP on a socket to a server started
with `kb serve`'s own runner options.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import EXIT_ERROR
from app.cli import app as cli
from app.server.assembly import create_app
from app.server.openapi import openapi
from app.server.security import check_exposure, run_options
from core import db
from core.errors import ConfigError
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from tests.conftest import REPO

EVIL = "https://evil.example"
JSON = {"Content-Type": "application/json"}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def web_engine(make_settings: Callable[..., Settings]) -> Iterator[Engine]:
    engine = db.make_engine(make_settings())
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def build(
    make_settings: Callable[..., Settings], web_engine: Engine, embedder: Embedder
) -> Callable[..., web.Application]:
    def make(**overrides: Any) -> web.Application:
        settings = make_settings(**overrides)
        return create_app(settings, KnowledgeBase(settings, web_engine, embedder=embedder))

    return make


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def client(build: Callable[..., web.Application]) -> AsyncIterator[Client]:
    async with serving(build(max_request_bytes=400_000)) as test_client:
        yield test_client


async def _error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    message = (await response.json())["error"]
    assert isinstance(message, str) and message
    return message


async def test_text_plain_post_from_another_site_cannot_turn_a_digest_off(client: Client) -> None:
    body = '{"question": "digest off"}'
    cross_site = {"Content-Type": "text/plain", "Origin": EVIL}
    await _error(await client.post("/api/ask", data=body, headers=cross_site), 403)
    # Without an Origin (a client that is no browser) the body is still not parsed as JSON.
    await _error(await client.post("/api/ask", data=body, headers={"Content-Type": "text/plain"}), 415)
    fetch_metadata = {**JSON, "Sec-Fetch-Site": "cross-site"}
    await _error(await client.post("/api/ask", data=body, headers=fetch_metadata), 403)


async def test_cross_origin_json_post_is_refused_and_same_origin_is_not(client: Client) -> None:
    question = {"question": "help"}
    await _error(await client.post("/api/ask", json=question, headers={"Origin": EVIL}), 403)
    await _error(await client.post("/api/ask", json=question, headers={"Origin": "null"}), 403)
    own = f"http://{client.host}:{client.port}"
    assert (await client.post("/api/ask", json=question, headers={"Origin": own})).status == 200
    assert (await client.post("/api/ask", json=question)).status == 200


async def test_other_origins_may_post_when_allowed(build: Callable[..., web.Application]) -> None:
    async with serving(build(allowed_origins=["https://portal.example"])) as client:
        allowed = {"Origin": "https://portal.example"}
        assert (await client.post("/api/ask", json={"question": "help"}, headers=allowed)).status == 200
        await _error(await client.post("/api/ask", json={"question": "help"}, headers={"Origin": EVIL}), 403)


async def test_security_headers_are_on_every_response(client: Client) -> None:
    for response in (await client.get("/"), await client.get("/healthz"), await client.get("/no/such/page")):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_unknown_host_is_refused(build: Callable[..., web.Application]) -> None:
    async with serving(
        build(allowed_hosts=["localhost", "127.0.0.1", "kb.example.com", ".corp.example"])
    ) as c:
        await _error(await c.get("/healthz", headers={"Host": "rebound.evil.example"}), 400)
        for host in (
            "kb.example.com",
            "KB.example.com:443",
            "localhost:8080",
            "[::1]:80",
            "chat.corp.example",
        ):
            assert (await c.get("/healthz", headers={"Host": host})).status == 200, host


async def test_slow_body_is_cut_off(build: Callable[..., web.Application]) -> None:
    """A body trickling in (one byte every 20 s in the probe) gets a 408 and a closed connection."""
    settings_app = build(body_timeout_s=0.2)
    async with running(settings_app, header_timeout_s=30.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        answer = await reader.read()  # until the server closes the connection
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b'"error"' in answer


async def test_slow_headers_are_cut_off(build: Callable[..., web.Application]) -> None:
    async with running(build(), header_timeout_s=0.2) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        await writer.drain()
        assert await reader.read() == b""  # closed without an answer
        writer.close()


@asynccontextmanager
async def running(app: web.Application, *, header_timeout_s: float) -> AsyncIterator[int]:
    """The app on an ephemeral loopback port with `kb serve`'s runner options."""
    settings = Settings(header_timeout_s=header_timeout_s)
    runner = web.AppRunner(app, **run_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def test_serve_refuses_a_public_address_without_identity(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], catch_exceptions=False)
    assert result.exit_code == EXIT_ERROR
    assert "refusing to listen on 0.0.0.0" in result.stderr and "KB_WEB_IDENTITY_HEADER" in result.stderr
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(make_settings(), host)
    check_exposure(make_settings(web_identity_header="X-Forwarded-User"), "0.0.0.0")
    with pytest.raises(ConfigError):
        check_exposure(make_settings(web_identity_header="  "), "10.1.2.3")


async def test_metrics_need_the_token_beyond_loopback(build: Callable[..., web.Application]) -> None:
    async with serving(build()) as client:
        assert (await client.get("/metrics")).status == 200  # from 127.0.0.1
        await _error(await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}), 403)
    async with serving(build(metrics_token="s3cret-scrape-token")) as client:
        response = await client.get("/metrics")
        await _error(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        await _error(await client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
        good = {"Authorization": "Bearer s3cret-scrape-token"}
        assert (await client.get("/metrics", headers=good)).status == 200


@pytest.mark.parametrize("path", ["/api/ask", "/api/ask/stream", "/api/feedback"])
async def test_deeply_nested_json_is_a_400_not_a_recursion_error(client: Client, path: str) -> None:
    await _error(await client.post(path, data=b"[" * 30_000, headers=JSON), 400)
    await _error(await client.post(path, data=b'{"question_id": ' + b"9" * 5000 + b"}", headers=JSON), 400)


async def test_http_errors_are_json(client: Client) -> None:
    await _error(await client.get("/no/such/page"), 404)
    response = await client.put("/api/ask", json={"question": "help"})
    await _error(response, 405)
    assert "POST" in response.headers["Allow"]


async def test_openapi_is_served_describes_every_route_and_is_committed(client: Client) -> None:
    served = await (await client.get("/api/openapi.json")).json()
    assert served == openapi()
    committed = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    assert committed == served, "regenerate: python -m app.server.openapi > docs/openapi.yaml"
    assert client.app is not None
    described = {(path, method.upper()) for path, item in served["paths"].items() for method in item}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method in {"HEAD", "*"} or path.startswith("/static"):
            continue
        assert (path, route.method) in described, f"{route.method} {path} is not in the OpenAPI description"


def test_compose_requires_identity_and_protects_metrics() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    environment = compose["services"]["bot"]["environment"]
    for name in ("KB_WEB_IDENTITY_HEADER", "KB_METRICS_TOKEN", "KB_ALLOWED_HOSTS"):
        assert ":?" in str(environment[name]), f"compose must require {name}"
