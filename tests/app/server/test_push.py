"""Push inside `kb serve`: the scheduler as a background service, the web inbox, click tracking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from app.server import background_services, mount_push, start_with_app
from core.models import BehaviourEventRow, PushDeliveryRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from tests.push.conftest import Behaviour, Library
from tests.push.push_fakes import add_user


async def test_serve_runs_the_scheduler_the_web_inbox_and_click_tracking(
    migrated: Engine, make_settings: Callable[..., Settings], database_url: str, embedder: Embedder,
    library: Library, behaviour: Behaviour,
) -> None:  # fmt: skip
    settings = make_settings(
        database_url=database_url, push_sweep_s=0.2, push_public_url="http://kb.example/"
    )
    now = datetime.now(UTC)
    behaviour.ask("web:web", "How do I connect to the VPN from home?", at=now - timedelta(days=1))
    library.add("vpn.md", "VPN from home", "Connect to the VPN with WireGuard.", at=now - timedelta(hours=1))
    add_user(migrated, "web", platform="web", cadence="off", requested_at=now)  # `digest now` in the web chat
    app = web.Application()
    mount_push(app, settings, migrated)
    start_with_app(app, background_services(settings, migrated, embedder=embedder))
    async with TestClient(TestServer(app)) as client:
        for _ in range(200):
            messages = (await (await client.get("/api/push/inbox")).json())["messages"]
            if messages:
                break
            await asyncio.sleep(0.05)
        (message,) = messages
        (item,) = message["items"]
        assert item["document_id"] == "vpn.md" and item["url"].startswith("http://kb.example/push/open?key=")
        opened = await client.get(item["url"].removeprefix("http://kb.example"), allow_redirects=False)
        assert (opened.status, opened.headers["Location"]) == (302, "kb/vpn.md")
        forged = await client.get("/push/open?key=nope&doc=vpn.md", allow_redirects=False)
        assert forged.status == 404
        assert item["dismiss_url"].startswith("http://kb.example/push/dismiss?key=")
        dismissed = await client.get(item["dismiss_url"].removeprefix("http://kb.example"))
        assert dismissed.status == 200 and "fewer documents like this" in await dismissed.text()
        assert (await client.get("/push/dismiss?key=nope&doc=vpn.md")).status == 404
    with Session(migrated) as session:
        row = session.execute(select(PushDeliveryRow)).scalar_one()
        signals = (
            session.execute(select(BehaviourEventRow).where(col(BehaviourEventRow.channel) == "push"))
            .scalars()
            .all()
        )
    assert row.state == "sent" and row.clicked_at is not None and row.dismissed_at is not None
    kinds = sorted((e.kind, e.data.get("value")) for e in signals)
    assert kinds == [("feedback", -1), ("source_click", None)]
