"""Push open/dismiss links: the delivery key in them is guessable (`digest:slack:U0BOB:<slot>`), so
anyone could record clicks or dismissals for another person. Links are now signed for their key
and document, and expire."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select
from sqlmodel import Session

from app.server.push import mount_push
from core.models import PushDeliveryRow
from core.settings import Settings
from push.links import signed_query
from tests.push.push_fakes import add_document

BOB = "digest:slack:U0BOB:2026-12-01"
ALICE = "digest:slack:U0ALICE:2026-12-01"
SECRET = "push-link-secret-of-this-test"


def _delivery(engine: Engine, key: str, user: str) -> None:
    now = datetime.now(UTC)
    row = PushDeliveryRow(
        key=key, kind="digest", platform="slack", user_id=user, window_end=now, state="sent",
        documents=["vpn.md"], created_at=now, updated_at=now, sent_at=now,
    )  # fmt: skip
    with Session(engine) as session:
        session.add(row)
        session.commit()


async def test_only_a_signed_current_link_counts(
    migrated: Engine, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url, push_link_secret=SECRET)
    add_document(migrated, "vpn.md")
    _delivery(migrated, BOB, "U0BOB")
    _delivery(migrated, ALICE, "U0ALICE")
    app = web.Application()
    mount_push(app, settings, migrated)
    future = int(datetime.now(UTC).timestamp()) + 3600
    alices = signed_query(SECRET.encode(), "dismiss", ALICE, "vpn.md", expires=future)
    async with TestClient(TestServer(app)) as client:
        guessed = await client.get(f"/push/dismiss?key={BOB}&doc=vpn.md")
        swapped = await client.get("/push/dismiss?" + alices.replace("U0ALICE", "U0BOB"))
        expired_query = signed_query(SECRET.encode(), "dismiss", BOB, "vpn.md", expires=1_700_000_000)
        expired = await client.get("/push/dismiss?" + expired_query)
        wrong_action = await client.get("/push/open?" + alices, allow_redirects=False)
        assert [r.status for r in (guessed, swapped, expired, wrong_action)] == [404, 404, 410, 404]
        assert (await client.get("/push/dismiss?" + alices)).status == 200
    with Session(migrated) as session:
        rows = {row.key: row for row in session.execute(select(PushDeliveryRow)).scalars()}
    assert rows[BOB].dismissed_at is None and rows[BOB].clicked_at is None, "nothing recorded for Bob"
    assert rows[ALICE].dismissed_at is not None
