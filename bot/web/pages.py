"""The web chat's pages and reading endpoints: the chat page, who am I, conversations, sources, admin.

GET  /                          the chat page (static/index.html, its script and style)
GET  /static/...                the page's script and style, served as files (no inline code,
                                so the page works under `script-src 'self'; style-src 'self'`)
GET  /api/me                    {"user": "web:<name>", "admin": bool}
GET  /api/conversations         the user's conversations, newest first
GET  /api/conversations/{id}    one of them with its turns; DELETE removes it
GET  /sources/{document id}     the stored text of a document, ACL checked (bot/web/sources.py)
GET  /admin, /api/admin         admins only: status, sources, budget (bot/web/admin.py)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from bot.types import Incoming
from bot.web.admin import ADMIN_SLOTS_KEY, admin_status
from bot.web.identity import IDENTITY_KEY, IdentityError, json_error, web_user
from bot.web.shared import WEB_KEY, valid_id
from bot.web.sources import error_page, show_source
from bot.wiring import WEB_PLATFORM

STATIC = Path(__file__).parent / "static"


def add_pages(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/admin", admin_page)
    app.router.add_get("/sources/{document:.+}", source)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/admin", admin_api)
    app.router.add_get("/api/conversations", conversations)
    app.router.add_get("/api/conversations/{id}", conversation)
    app.router.add_delete("/api/conversations/{id}", delete_conversation)
    app.router.add_static("/static/", STATIC, append_version=False)


def _page_user(request: web.Request) -> str | web.Response:
    """The web user, or an HTML page that says why not (pages are opened, not fetched)."""
    try:
        return request.app[IDENTITY_KEY].user(request.remote, request.headers)
    except IdentityError as exc:
        return error_page(exc.status, str(exc))


def _is_admin(request: web.Request, user: str) -> bool:
    return f"{WEB_PLATFORM}:{user}" in request.app[WEB_KEY].conversation.admins


def _static_page(name: str) -> web.Response:
    page = (STATIC / name).read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def index(request: web.Request) -> web.Response:
    user = _page_user(request)
    return user if isinstance(user, web.Response) else _static_page("index.html")


async def admin_page(request: web.Request) -> web.Response:
    user = _page_user(request)
    if isinstance(user, web.Response):
        return user
    if not _is_admin(request, user):
        return error_page(403, f"The admin page is for admins only; web:{user} is not one (KB_BOT_ADMINS).")
    return _static_page("admin.html")


async def source(request: web.Request) -> web.Response:
    user = _page_user(request)
    if isinstance(user, web.Response):
        return user
    chat = request.app[WEB_KEY]
    groups = await chat.conversation.groups_for(Incoming(WEB_PLATFORM, user, "", private=True))
    return await show_source(request, chat.engine, unquote(request.match_info["document"]), groups)


async def me(request: web.Request) -> web.Response:
    user = web_user(request)
    return web.json_response({"user": f"{WEB_PLATFORM}:{user}", "admin": _is_admin(request, user)})


async def admin_api(request: web.Request) -> web.Response:
    user = web_user(request)
    if not _is_admin(request, user):
        raise json_error(403, f"admins only: web:{user} is not in KB_BOT_ADMINS")
    chat = request.app[WEB_KEY]
    slots = request.app.get(ADMIN_SLOTS_KEY, {})
    return web.json_response(await asyncio.to_thread(admin_status, chat.settings, chat.engine, slots=slots))


async def conversations(request: web.Request) -> web.Response:
    user = web_user(request)
    listed = await asyncio.to_thread(request.app[WEB_KEY].history.conversations, user)
    return web.json_response({"conversations": listed})


def _conversation_id(request: web.Request) -> int:
    text = request.match_info["id"]
    digits = text.isascii() and text.isdigit() and len(text) < 19  # "²" is a digit to isdigit alone
    return valid_id(int(text) if digits else -1, "conversation id")


async def conversation(request: web.Request) -> web.Response:
    user = web_user(request)
    history = request.app[WEB_KEY].history
    found = await asyncio.to_thread(history.conversation, user, _conversation_id(request))
    if found is None:
        raise json_error(404, "there is no such conversation")
    return web.json_response(found)


async def delete_conversation(request: web.Request) -> web.Response:
    user = web_user(request)
    if not await asyncio.to_thread(request.app[WEB_KEY].history.delete, user, _conversation_id(request)):
        raise json_error(404, "there is no such conversation")
    return web.json_response({"deleted": True})
