"""`kb serve`'s aiohttp application: the local web chat, `/healthz` and `/metrics`.

The chat page posts to `/api/ask`, which runs the same pipeline as `kb ask`. CPU work
(embedding, FAISS) runs in worker threads so the event loop stays free for other requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import resources

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from bot.admin import admin_hooks
from bot.slack.app import mount_slack
from bot.teams.app import mount_teams
from core.errors import KBError
from core.metrics import CONTENT_TYPE, Metrics
from core.settings import Settings
from knowledge.service import KnowledgeBase
from knowledge.types import Question

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
KB_KEY = web.AppKey("kb", KnowledgeBase)
METRICS_KEY = web.AppKey("metrics", Metrics)
SETTINGS_KEY = web.AppKey("settings", Settings)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, kb: KnowledgeBase, *, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_request_bytes, middlewares=[_count_requests])
    app[KB_KEY], app[SETTINGS_KEY] = kb, settings
    app[METRICS_KEY] = metrics or Metrics()
    kb.guard_observer = app[METRICS_KEY].count_guard
    app.on_cleanup.append(_close_llm)
    app.router.add_get("/", index)
    app.router.add_post("/api/ask", ask)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    admins, groups, links = set(settings.bot_admins), settings.bot_user_groups, settings.docs_base_url
    metrics_ = app[METRICS_KEY]
    hooks = admin_hooks(kb, ingest_roots=settings.admin_ingest_roots)
    # Each mounts its routes only when its platform is configured.
    mount_slack(
        app, settings, kb, metrics=metrics_, admins=admins, user_groups=groups, link_base=links, hooks=hooks,
    )  # fmt: skip
    mount_teams(
        app, settings, kb, metrics=metrics_, admins=admins, user_groups=groups, link_base=links, hooks=hooks,
        tenant_id=settings.teams_tenant_id,
    )  # fmt: skip
    return app


@web.middleware
async def _count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS_KEY].http_requests.labels(route=route, status=str(status)).inc()


async def _close_llm(app: web.Application) -> None:
    llm = app[KB_KEY].llm
    if llm is not None:
        await llm.aclose()


async def index(_request: web.Request) -> web.Response:
    page = resources.files("bot.web").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


async def ask(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'the request body must be JSON like {"question": "..."}')
    text = body.get("question") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error(400, "ask a question: the 'question' field is missing or empty")
    if len(text) > MAX_QUESTION_CHARS:
        return _error(413, f"the question is {len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
    settings = request.app[SETTINGS_KEY]
    question = Question(text=text.strip(), user="web", groups=tuple(settings.web_user_groups), channel="web")
    started = time.perf_counter()
    try:
        answer = await request.app[KB_KEY].ask_async(question)
    except (KBError, SQLAlchemyError) as exc:
        metrics.questions.labels(channel="web", outcome="error").inc()
        log.warning("web question failed: %s", exc)
        return _error(503, f"the knowledge base could not answer: {exc}")
    metrics.answer_seconds.observe(time.perf_counter() - started)
    metrics.questions.labels(channel="web", outcome="abstained" if answer.abstained else "answered").inc()
    return web.json_response(asdict(answer))


async def healthz(request: web.Request) -> web.Response:
    kb = request.app[KB_KEY]
    try:
        stats = await asyncio.to_thread(kb.stats)
    except (KBError, SQLAlchemyError) as exc:
        return web.json_response({"status": "error", "reason": str(exc)}, status=503)
    metrics = request.app[METRICS_KEY]
    metrics.documents.set(stats.documents)
    metrics.chunks.set(stats.chunks)
    return web.json_response({"status": "ok", "documents": stats.documents, "chunks": stats.chunks})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
