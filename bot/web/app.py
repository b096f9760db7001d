"""The web chat's questions: `/api/ask`, `/api/ask/stream` and `/api/feedback`, mounted into `kb serve`.

A message goes through the one Conversation (bot/wiring.py) like a Slack DM from the user
`web:<user>` (bot/web/identity.py says who that is; locally `web:web`, whose groups are
KB_WEB_USER_GROUPS), so the commands work there too (`help`, `subscribe vpn`, `digest daily`).
`/api/ask/stream` is what the page uses, as newline-delimited JSON: `{"conversation": {...}}`
first (the conversation the turn belongs to, new when none was named), `{"draft": text}` lines while
the model writes (at most every WEB_DRAFT_INTERVAL_S), then `{"reply": ...}` as `/api/ask` returns
it; the turn is then stored in the user's history (bot/web/history.py). Every error the page can
meet is JSON `{"error": message}`, an over-long body included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.commands import Ask, parse
from bot.conversation import Conversation
from bot.types import Incoming, RenderedReply
from bot.web.admin import ADMIN_SLOTS_KEY
from bot.web.history import History
from bot.web.identity import IDENTITY_KEY, WebIdentity, json_error, web_user
from bot.web.pages import add_pages
from bot.web.shared import MAX_ID, WEB_KEY, WebChat, valid_id
from bot.wiring import WEB_PLATFORM
from core.errors import KBError
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

WEB_DRAFT_INTERVAL_S = 0.25  # a browser can repaint often, but each draft is redacted afresh
NDJSON = "application/x-ndjson"
FAILED = "the knowledge base could not answer; please ask again"


METRICS_KEY = web.AppKey("metrics", Metrics)
CONVERSATION_KEY = web.AppKey("conversation", Conversation)


def mount_web_chat(
    app: web.Application, conversation: Conversation, metrics: Metrics, *, settings: Settings, engine: Engine
) -> None:
    """The chat page and its API, the sources view and the admin page (bot/web/pages.py)."""
    chat = WebChat(conversation, metrics, settings, engine, History(engine))
    app[WEB_KEY], app[CONVERSATION_KEY], app[METRICS_KEY] = chat, conversation, metrics
    app[IDENTITY_KEY] = WebIdentity.from_settings(settings)
    app[ADMIN_SLOTS_KEY] = {}  # models and training runs: filled by the features that own them
    app.middlewares.append(json_errors)
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/ask/stream", ask_stream)
    app.router.add_post("/api/feedback", feedback)
    add_pages(app)


def incoming_for(request: web.Request, text: str) -> Incoming:
    return Incoming(WEB_PLATFORM, web_user(request), text, channel="web", private=True)


async def read_json(request: web.Request) -> Any:
    """The parsed body, or a JSON 400/413 that says what is wrong with it."""
    try:
        return await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(request.app[WEB_KEY].settings) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise json_error(400, 'the request body must be JSON like {"question": "..."}') from None


def _too_large(settings: Settings) -> web.HTTPException:
    limit = settings.server.max_request_bytes
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=0,
        text=json.dumps({"error": f"the message is too long: requests may be at most {limit:,} bytes"}),
        content_type="application/json",
    )


def question_of(body: Any, settings: Settings) -> str:
    text = body.get("question") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise json_error(400, "ask a question: the 'question' field is missing or empty")
    limit = settings.server.max_question_chars
    if len(text) > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=len(text),
            text=json.dumps({"error": f"the question is {len(text):,} characters; the limit is {limit:,}"}),
            content_type="application/json",
        )
    return text.strip()


async def ask_stream(request: web.Request) -> web.StreamResponse:
    chat = request.app[WEB_KEY]
    body = await read_json(request)
    incoming = incoming_for(request, question_of(body, chat.settings))
    summary = await _conversation_for(chat, incoming.user, body.get("conversation_id"), incoming.text)
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
    await response.prepare(request)
    await _write(response, {"conversation": summary})
    started = time.perf_counter()
    reply = await _stream_drafts(chat, incoming, response)
    payload: dict[str, Any] = reply_json(reply, started) if reply else {"error": FAILED}
    if reply is not None and reply.answer is not None:
        outcome = "abstained" if reply.answer.abstained else "answered"
        chat.metrics.questions.labels(channel="web", outcome=outcome).inc()
    await asyncio.to_thread(chat.history.add_turn, incoming.user, summary["id"], incoming.text, payload)
    await _write(response, {"reply": payload} if reply else payload)
    await response.write_eof()
    return response


async def _conversation_for(chat: WebChat, user: str, value: Any, question: str) -> dict[str, Any]:
    """The named conversation of this user (404 if it is not theirs), or a new one."""
    if value is None:
        return await asyncio.to_thread(chat.history.start, user, question)
    conversation_id = valid_id(value, "conversation_id")
    found = await asyncio.to_thread(chat.history.conversation, user, conversation_id)
    if found is None:
        raise json_error(404, "that conversation is not there any more; start a new one")
    return {key: found[key] for key in ("id", "title", "updated_at")}


async def _stream_drafts(
    chat: WebChat, incoming: Incoming, response: web.StreamResponse
) -> RenderedReply | None:
    """Write the drafts as they come; the final reply, or None when the question failed."""
    loop = asyncio.get_running_loop()
    shown_at, shown = loop.time(), ""
    reply: RenderedReply | None = None
    try:
        async for part in chat.conversation.stream(incoming):
            if isinstance(part, RenderedReply):
                reply = part
            elif loop.time() - shown_at >= WEB_DRAFT_INTERVAL_S and (draft := part.text) != shown:
                shown_at, shown = loop.time(), draft
                await _write(response, {"draft": draft})
    except (KBError, SQLAlchemyError) as exc:
        log.warning("web chat message failed: %s", exc)
    return reply


async def _write(response: web.StreamResponse, line: dict[str, Any]) -> None:
    await response.write(json.dumps(line).encode() + b"\n")


async def ask(request: web.Request) -> web.Response:
    chat = request.app[WEB_KEY]
    incoming = incoming_for(request, question_of(await read_json(request), chat.settings))
    started = time.perf_counter()
    try:
        reply = await chat.conversation.handle(incoming)
    except (KBError, SQLAlchemyError) as exc:
        chat.metrics.questions.labels(channel="web", outcome="error").inc()
        log.warning("web chat message failed: %s", exc)
        return web.json_response({"error": f"the knowledge base could not answer: {exc}"}, status=503)
    if reply.answer is None and isinstance(parse(incoming.text), Ask):  # the question itself failed
        chat.metrics.questions.labels(channel="web", outcome="error").inc()
        return web.json_response({"error": reply.text}, status=503)
    if reply.answer is not None:
        chat.metrics.answer_seconds.observe(time.perf_counter() - started)
        outcome = "abstained" if reply.answer.abstained else "answered"
        chat.metrics.questions.labels(channel="web", outcome=outcome).inc()
    return web.json_response(reply_json(reply, started))


def reply_json(reply: RenderedReply, started: float) -> dict[str, Any]:
    """The Answer's own fields (text, citations, confidence…) plus the rendered reply's parts.

    `elapsed_ms` is always there (the server's time for the whole reply), so the page never has to
    show a latency the answer did not report (a refusal or a command has none of its own); each
    citation carries `href`, the sources view of its section.
    """
    if reply.answer is not None:
        payload = asdict(reply.answer)
    else:  # a command's reply: text only
        payload = {
            "text": reply.text, "citations": [], "abstained": False, "refused": False,
            "notices": list(reply.notices), "confidence": None, "model": None, "latency_ms": {},
        }  # fmt: skip
    for citation in payload["citations"]:
        citation["href"] = source_href(citation.get("document_id", ""), citation.get("uri", ""))
    payload |= {
        "ok": reply.ok,
        "command": reply.answer is None,
        "question_id": reply.question_id,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "buttons": [{"action": b.action.value, "label": b.label, "value": b.value} for b in reply.buttons],
    }
    return payload


def source_href(document_id: str, uri: str) -> str | None:
    """`/sources/<id>#<anchor>`: the stored text of the cited section (bot/web/sources.py)."""
    if not document_id:
        return None
    anchor = uri.split("#", 1)[1] if "#" in uri else ""
    link = f"/sources/{quote(document_id, safe='')}"
    return f"{link}#{quote(anchor, safe='')}" if anchor else link


async def feedback(request: web.Request) -> web.Response:
    """👍/👎 on an answer of the web chat: {"question_id": 12, "helpful": true}."""
    body = await read_json(request)
    question_id = body.get("question_id") if isinstance(body, dict) else None
    helpful = body.get("helpful") if isinstance(body, dict) else None
    if not isinstance(question_id, int) or isinstance(question_id, bool) or not isinstance(helpful, bool):
        raise json_error(400, 'send {"question_id": <number>, "helpful": true or false}')
    if not 0 < question_id < MAX_ID:
        raise json_error(404, f"there is no question {question_id} to give feedback on")
    conversation = request.app[WEB_KEY].conversation
    if await conversation.store.run(conversation.store.question, question_id) is None:
        raise json_error(404, f"there is no question {question_id} to give feedback on")
    reply = await conversation.feedback(incoming_for(request, ""), question_id, helpful=helpful)
    return web.json_response({"text": reply.text})


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors under /api/ as `{"error": message}`, whatever raised them (the router's 404 and 405,
    aiohttp's 413 for a body over KB_MAX_REQUEST_BYTES), so the page can always show the message."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPRequestEntityTooLarge as exc:
        if not request.path.startswith("/api/") or exc.content_type == "application/json":
            raise
        raise _too_large(request.app[WEB_KEY].settings) from None
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/") or exc.content_type == "application/json":
            raise
        return web.json_response(
            {"error": f"{exc.reason}: {request.method} {request.path}"}, status=exc.status, headers=_kept(exc)
        )


def _kept(exc: web.HTTPException) -> dict[str, str]:
    return {key: value for key, value in exc.headers.items() if key.lower() in {"allow", "retry-after"}}
