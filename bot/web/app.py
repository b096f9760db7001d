"""`kb serve`'s aiohttp application: the local web chat, `/healthz`, `/metrics`, Slack and Teams.

One Conversation (bot/wiring.py) serves every surface. The chat page posts to `/api/ask`, which
goes through it like a Slack DM from the user `web:web` (groups: KB_WEB_USER_GROUPS), so the
commands work there too (`help`, `subscribe vpn`, `digest daily`); `/api/feedback` records the
👍/👎 buttons. `/api/ask/stream` is the same as newline-delimited JSON: `{"draft": text}` lines
while the model writes (at most every WEB_DRAFT_INTERVAL_S), then `{"reply": ...}` as `/api/ask`
returns it. CPU work (embedding, FAISS) runs in worker threads so the event loop stays free.

At start the event loop's default executor (where `asyncio.to_thread` runs retrieval) becomes
bot/tasks.py's `worker_executor`, whose threads run KB_BOT_WORKER_NICE steps nicer than the event
loop, and the GIL switch interval becomes KB_BOT_SWITCH_INTERVAL_MS when set: acks and the bot's
own steps get the CPU before other events' retrieval does.

Once started, the objects that live as long as the server (modules, the embedding model, the
index) are frozen out of the garbage collector: a full collection otherwise walks all of them while
every thread waits, which in bench/bot.py (handbook ingested, 50 concurrent Slack events) stopped
the server for up to 330 ms in the middle of the load, more than three times the ack budget.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from bot.commands import Ask, parse
from bot.conversation import Conversation
from bot.slack.app import mount_slack
from bot.tasks import worker_executor
from bot.teams.app import mount_teams
from bot.types import Incoming, RenderedReply
from bot.wiring import WEB_PLATFORM, WEB_USER, build_conversation
from core.errors import KBError
from core.metrics import CONTENT_TYPE, Metrics
from core.settings import Settings
from knowledge.service import KnowledgeBase

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
WEB_DRAFT_INTERVAL_S = 0.25  # a browser can repaint often, but each draft is redacted afresh
KB_KEY = web.AppKey("kb", KnowledgeBase)
METRICS_KEY = web.AppKey("metrics", Metrics)
SETTINGS_KEY = web.AppKey("settings", Settings)
CONVERSATION_KEY = web.AppKey("conversation", Conversation)
SWITCH_INTERVAL_KEY = web.AppKey("switch_interval", float)  # Python's, restored at cleanup

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: Settings,
    kb: KnowledgeBase,
    *,
    metrics: Metrics | None = None,
    conversation: Conversation | None = None,
) -> web.Application:
    """The whole `kb serve` app; `conversation` replaces the one built from settings (benchmarks)."""
    app = web.Application(client_max_size=settings.max_request_bytes, middlewares=[_count_requests])
    app[KB_KEY], app[SETTINGS_KEY] = kb, settings
    app[METRICS_KEY] = metrics or Metrics()
    app[CONVERSATION_KEY] = conversation or build_conversation(settings, kb)
    kb.guard_observer = app[METRICS_KEY].count_guard
    app.on_startup.append(_prioritize_the_loop)  # first: before anything uses the default executor
    app.on_startup.append(_freeze_long_lived)
    app.on_cleanup.append(_close_llm)
    app.on_cleanup.append(_restore_switch_interval)
    app.on_cleanup.append(_unfreeze)
    app.router.add_get("/", index)
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/ask/stream", ask_stream)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    # Each mounts its routes only when its platform is configured.
    mount_slack(app, settings, app[CONVERSATION_KEY], metrics=app[METRICS_KEY])
    mount_teams(app, settings, app[CONVERSATION_KEY], metrics=app[METRICS_KEY])
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


async def _prioritize_the_loop(app: web.Application) -> None:
    """Nicer worker threads, and the GIL back to the event loop sooner when set (module docstring)."""
    settings = app[SETTINGS_KEY]
    workers = worker_executor(nice=settings.bot_worker_nice, faiss_threads=settings.faiss_threads)
    asyncio.get_running_loop().set_default_executor(workers)
    app[SWITCH_INTERVAL_KEY] = sys.getswitchinterval()
    if settings.bot_switch_interval_ms:
        sys.setswitchinterval(settings.bot_switch_interval_ms / 1000)


async def _restore_switch_interval(app: web.Application) -> None:
    if SWITCH_INTERVAL_KEY in app:
        sys.setswitchinterval(app[SWITCH_INTERVAL_KEY])


async def _freeze_long_lived(_app: web.Application) -> None:
    """Leave what exists at startup out of later garbage collections (module docstring)."""
    gc.collect()
    gc.freeze()


async def _unfreeze(_app: web.Application) -> None:
    """Give the frozen objects back to the collector (tests start and stop many apps in one process)."""
    gc.unfreeze()


async def _close_llm(app: web.Application) -> None:
    llm = app[KB_KEY].llm
    if llm is not None:
        await llm.aclose()


async def index(_request: web.Request) -> web.Response:
    page = resources.files("bot.web").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


async def _incoming(request: web.Request) -> Incoming | web.Response:
    """The web chat's message, or the 4xx response that says what is wrong with the request."""
    body = await _json(request)
    text = body.get("question") if isinstance(body, dict) else None
    if body is None:
        return _error(400, 'the request body must be JSON like {"question": "..."}')
    if not isinstance(text, str) or not text.strip():
        return _error(400, "ask a question: the 'question' field is missing or empty")
    if len(text) > MAX_QUESTION_CHARS:
        return _error(413, f"the question is {len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
    return Incoming(WEB_PLATFORM, WEB_USER, text.strip(), channel="web", private=True)


async def ask_stream(request: web.Request) -> web.StreamResponse:
    incoming = await _incoming(request)
    if isinstance(incoming, web.Response):
        return incoming
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    shown_at, shown = loop.time(), ""
    reply: RenderedReply | None = None
    try:
        async for part in request.app[CONVERSATION_KEY].stream(incoming):
            if isinstance(part, RenderedReply):
                reply = part
            elif loop.time() - shown_at >= WEB_DRAFT_INTERVAL_S and (draft := part.text) != shown:
                shown_at, shown = loop.time(), draft
                await response.write(json.dumps({"draft": draft}).encode() + b"\n")
    except (KBError, SQLAlchemyError) as exc:
        log.warning("web chat message failed: %s", exc)
    if reply is not None and reply.answer is not None:
        outcome = "abstained" if reply.answer.abstained else "answered"
        request.app[METRICS_KEY].questions.labels(channel="web", outcome=outcome).inc()
    line = {"reply": _reply_json(reply)} if reply else {"error": "the knowledge base could not answer"}
    await response.write(json.dumps(line).encode() + b"\n")
    await response.write_eof()
    return response


async def ask(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    incoming = await _incoming(request)
    if isinstance(incoming, web.Response):
        return incoming
    started = time.perf_counter()
    try:
        reply = await request.app[CONVERSATION_KEY].handle(incoming)
    except (KBError, SQLAlchemyError) as exc:
        metrics.questions.labels(channel="web", outcome="error").inc()
        log.warning("web chat message failed: %s", exc)
        return _error(503, f"the knowledge base could not answer: {exc}")
    if reply.answer is None and isinstance(parse(incoming.text), Ask):  # the question itself failed
        metrics.questions.labels(channel="web", outcome="error").inc()
        return _error(503, reply.text)
    if reply.answer is not None:
        metrics.answer_seconds.observe(time.perf_counter() - started)
        outcome = "abstained" if reply.answer.abstained else "answered"
        metrics.questions.labels(channel="web", outcome=outcome).inc()
    return web.json_response(_reply_json(reply))


def _reply_json(reply: RenderedReply) -> dict[str, Any]:
    """The Answer's own fields (text, citations, confidence…) plus the rendered reply's parts."""
    if reply.answer is not None:
        payload = asdict(reply.answer)
    else:  # a command's reply: text only
        payload = {
            "text": reply.text, "citations": [], "abstained": False, "refused": False,
            "notices": list(reply.notices), "confidence": None, "model": None, "latency_ms": {},
        }  # fmt: skip
    payload |= {
        "ok": reply.ok,
        "command": reply.answer is None,
        "question_id": reply.question_id,
        "buttons": [{"action": b.action.value, "label": b.label, "value": b.value} for b in reply.buttons],
    }
    return payload


async def feedback(request: web.Request) -> web.Response:
    """👍/👎 on an answer of the web chat: {"question_id": 12, "helpful": true}."""
    body = await _json(request)
    question_id = body.get("question_id") if isinstance(body, dict) else None
    helpful = body.get("helpful") if isinstance(body, dict) else None
    if not isinstance(question_id, int) or isinstance(question_id, bool) or not isinstance(helpful, bool):
        return _error(400, 'send {"question_id": <number>, "helpful": true or false}')
    conversation = request.app[CONVERSATION_KEY]
    if await conversation.store.run(conversation.store.question, question_id) is None:
        return _error(404, f"there is no question {question_id} to give feedback on")
    incoming = Incoming(WEB_PLATFORM, WEB_USER, "", channel="web")
    reply = await conversation.feedback(incoming, question_id, helpful=helpful)
    return web.json_response({"text": reply.text})


async def _json(request: web.Request) -> Any | None:
    """The parsed body, or None when it is not JSON."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


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
