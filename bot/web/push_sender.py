"""Push's web adapter (a `core.messaging.Sender`): an inbox table the local web chat reads.

Sending is one INSERT whose unique key makes a repeat a no-op, so the web inbox is exactly-once by
construction; `find` is a lookup by key. `mount_inbox` adds the inbox's routes to `kb serve`'s
application; each web user sees only their own messages (bot/web/identity.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from bot.web.identity import IDENTITY_KEY, LOCAL_USER, WebIdentity, json_error, web_user
from core.db import session_scope
from core.messaging import OutgoingMessage, Receipt
from core.models import PushInboxRow, as_utc, utcnow

WEB_USER = LOCAL_USER  # the local web chat's user; behind a proxy, the name it sends


def _payload(message: OutgoingMessage) -> dict[str, Any]:
    items = [
        {
            "document_id": i.document_id,
            "title": i.title,
            "url": i.url,
            "note": i.note,
            "dismiss_url": i.dismiss_url,
        }
        for i in message.items
    ]
    return {"kind": message.kind, "title": message.title, "items": items, "footer": message.footer}


class WebInboxSender:
    platform = "web"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def send(self, message: OutgoingMessage) -> Receipt:
        return await asyncio.to_thread(self._insert, message)

    async def find(self, user_id: str, key: str) -> Receipt | None:
        return await asyncio.to_thread(self._lookup, key)

    async def aclose(self) -> None:
        return None

    def _insert(self, message: OutgoingMessage) -> Receipt:
        row = PushInboxRow(
            key=message.key, user_id=message.user_id, message=_payload(message), created_at=utcnow()
        )
        try:
            with session_scope(self.engine) as session:
                session.add(row)
                session.flush()
                row_id = row.id
        except IntegrityError:
            found = self._lookup(message.key)
            assert found is not None
            return found
        return Receipt(self.platform, message.user_id, str(row_id), sent_at=row.created_at)

    def _lookup(self, key: str) -> Receipt | None:
        with Session(self.engine) as session:
            row = session.execute(
                select(PushInboxRow).where(col(PushInboxRow.key) == key)
            ).scalar_one_or_none()
        if row is None:
            return None
        return Receipt(self.platform, row.user_id, str(row.id), sent_at=as_utc(row.created_at), found=True)


def inbox(engine: Engine, user_id: str = WEB_USER, *, limit: int = 20) -> list[dict[str, Any]]:
    """The user's messages, newest first; each item says whether it was opened or dismissed here."""
    query = (
        select(PushInboxRow)
        .where(col(PushInboxRow.user_id) == user_id)
        .order_by(col(PushInboxRow.id).desc())
        .limit(limit)
    )
    with Session(engine) as session:
        rows = list(session.execute(query).scalars())
    return [_shown(row) for row in rows]


def _shown(row: PushInboxRow) -> dict[str, Any]:
    message = dict(row.message)
    opened, gone = set(message.pop("opened", [])), set(message.pop("dismissed", []))
    message["items"] = [
        item | {"opened": item.get("document_id") in opened, "dismissed": item.get("document_id") in gone}
        for item in message.get("items", [])
    ]
    return {
        "id": row.id, "key": row.key, "created_at": as_utc(row.created_at).isoformat(),
        "read": row.read_at is not None, **message,
    }  # fmt: skip


def mark_item(engine: Engine, user_id: str, message_id: int, document_id: str, action: str) -> bool:
    """Record that the user opened or dismissed one item of their message; False if there is none."""
    with session_scope(engine) as session:
        row = session.get(PushInboxRow, message_id)
        if row is None or row.user_id != user_id:
            return False
        if document_id not in {item.get("document_id") for item in row.message.get("items", [])}:
            return False
        listed = "opened" if action == "open" else "dismissed"
        message = dict(row.message)
        message[listed] = sorted({*message.get(listed, []), document_id})
        row.message = message  # a new dict: the JSON column sees the change
        row.read_at = row.read_at or utcnow()
        session.add(row)
    return True


ENGINE_KEY = web.AppKey("push_inbox_engine", Engine)


def mount_inbox(app: web.Application, engine: Engine) -> None:
    """Routes for the web chat's push inbox (called by `kb serve`): the list, "mark all read", and
    open or dismiss one item (`POST /api/push/inbox/{id}/open|dismiss` with `{"document_id": ...}`)."""
    app[ENGINE_KEY] = engine
    if IDENTITY_KEY not in app:  # mounted without the chat: only the local user
        app[IDENTITY_KEY] = WebIdentity(None, ())
    app.router.add_get("/api/push/inbox", _list)
    app.router.add_post("/api/push/inbox/read", _read)
    app.router.add_post(r"/api/push/inbox/{id:\d{1,18}}/{action:open|dismiss}", _item)


async def _list(request: web.Request) -> web.Response:
    items = await asyncio.to_thread(inbox, request.app[ENGINE_KEY], web_user(request))
    unread = sum(1 for item in items if not item["read"])
    return web.json_response({"messages": items, "unread": unread})


async def _read(request: web.Request) -> web.Response:
    user = web_user(request)

    def mark() -> int:
        with session_scope(request.app[ENGINE_KEY]) as session:
            statement = (
                update(PushInboxRow)
                .where(col(PushInboxRow.user_id) == user, col(PushInboxRow.read_at).is_(None))
                .values(read_at=utcnow())
            )
            return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    return web.json_response({"read": await asyncio.to_thread(mark)})


async def _item(request: web.Request) -> web.Response:
    user = web_user(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    document_id = body.get("document_id") if isinstance(body, dict) else None
    if not isinstance(document_id, str) or not document_id:
        raise json_error(400, 'send {"document_id": "..."} of an item of this message')
    message_id, action = int(request.match_info["id"]), request.match_info["action"]
    if not await asyncio.to_thread(mark_item, request.app[ENGINE_KEY], user, message_id, document_id, action):
        raise json_error(404, "that message or document is not in your inbox")
    return web.json_response({"ok": True, "action": action})
