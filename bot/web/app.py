"""The local web chat: the page at `/` and its JSON endpoints, mounted into `kb serve` by app/server.

The chat page posts to `/api/ask`, which goes through the one Conversation (bot/wiring.py) like a
Slack DM from the user `web:web` (groups: KB_WEB_USER_GROUPS), so the commands work there too
(`help`, `subscribe vpn`, `digest daily`); `/api/feedback` records the 👍/👎 buttons.
`/api/ask/stream` is the same as newline-delimited JSON: `{"draft": text}` lines while the model
writes (at most every WEB_DRAFT_INTERVAL_S), then `{"reply": ...}` as `/api/ask` returns it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from bot.commands import Ask, parse
from bot.conversation import Conversation
from bot.types import Incoming, RenderedReply
from bot.wiring import WEB_PLATFORM, WEB_USER
from core.errors import KBError
from core.metrics import Metrics

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
WEB_DRAFT_INTERVAL_S = 0.25  # a browser can repaint often, but each draft is redacted afresh
METRICS_KEY = web.AppKey("metrics", Metrics)
CONVERSATION_KEY = web.AppKey("conversation", Conversation)


def mount_web_chat(app: web.Application, conversation: Conversation, metrics: Metrics) -> None:
    """Add the chat page and `/api/ask`, `/api/ask/stream`, `/api/feedback`."""
    app[CONVERSATION_KEY], app[METRICS_KEY] = conversation, metrics
    app.router.add_get("/", index)
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/ask/stream", ask_stream)
    app.router.add_post("/api/feedback", feedback)


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
