"""The web chat's history, sources view, admin page, inbox and identity, over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import Session, select

from app.server.assembly import create_app
from app.server.push import mount_push
from bot.web.admin import ADMIN_SLOTS_KEY
from bot.web.identity import IdentityError, WebIdentity, parse_networks
from bot.web.push_sender import WebInboxSender
from bot.web.sources import without_overlap
from core import db
from core.messaging import MessageItem, OutgoingMessage
from core.models import DocumentRow
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase

VPN = "# VPN\n\n## Installing\n\nInstall HaldenConnect from the Software Center.\n"
PAY = "---\nacl_groups: [hr]\n---\n# Pay\n\nBand H5 pays up to 78,000 EUR.\n"
PROBE = "# Probe\n\n## Markup\n\n<script>alert(1)</script> <img src=x onerror=alert(2)> Printing.\n"


@pytest.fixture
async def served(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> AsyncIterator[Callable[..., Any]]:
    """Start `kb serve`'s app with the given settings; yields a client factory, closes them all."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text(VPN)
    (docs / "pay.md").write_text(PAY)
    (docs / "probe.md").write_text(PROBE)
    clients: list[TestClient] = []
    engines = []

    async def start(**overrides: Any) -> TestClient:
        settings: Settings = make_settings(**overrides)
        engine = db.make_engine(settings)
        db.upgrade(engine)
        engines.append(engine)
        kb = KnowledgeBase(settings, engine, embedder=embedder)
        kb.ingest([docs])
        app = create_app(settings, kb)
        mount_push(app, settings, engine)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for engine in engines:
        engine.dispose()


def document_id(client: TestClient, name: str) -> str:
    from app.server.assembly import KB_KEY

    with Session(client.app[KB_KEY].store.engine) as session:  # type: ignore[index]
        return next(i for i in session.exec(select(DocumentRow.id)).all() if i.endswith(name))


async def stream(client: TestClient, body: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    response = await client.post("/api/ask/stream", json=body, headers=headers)
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_conversations_are_kept_per_user_and_come_back(served: Callable[..., Any]) -> None:
    client = await served(web_identity_header="X-Forwarded-User")
    first = await stream(
        client, {"question": "How do I install the VPN client?"}, **{"X-Forwarded-User": "ann"}
    )
    conversation = first[0]["conversation"]
    assert conversation["title"] == "How do I install the VPN client?"
    reply = first[-1]["reply"]
    assert reply["citations"][0]["href"].startswith("/sources/") and reply["elapsed_ms"] >= 0
    await stream(
        client, {"question": "help", "conversation_id": conversation["id"]}, **{"X-Forwarded-User": "ann"}
    )
    ann = {"X-Forwarded-User": "ann"}
    listed = await (await client.get("/api/conversations", headers=ann)).json()
    assert [c["id"] for c in listed["conversations"]] == [conversation["id"]]
    found = await (await client.get(f"/api/conversations/{conversation['id']}", headers=ann)).json()
    assert [t["question"] for t in found["turns"]] == ["How do I install the VPN client?", "help"]
    bob = {"X-Forwarded-User": "bob"}
    assert (await (await client.get("/api/conversations", headers=bob)).json())["conversations"] == []
    assert (await client.get(f"/api/conversations/{conversation['id']}", headers=bob)).status == 404
    refused = await client.post(
        "/api/ask/stream", json={"question": "hi", "conversation_id": conversation["id"]}, headers=bob
    )
    assert refused.status == 404 and "conversation" in (await refused.json())["error"]
    gone = await client.delete(f"/api/conversations/{conversation['id']}", headers=ann, json={})
    assert gone.status == 200
    assert (await (await client.get("/api/conversations", headers=ann)).json())["conversations"] == []


async def test_questions_are_stored_redacted(served: Callable[..., Any]) -> None:
    client = await served()
    lines = await stream(client, {"question": "My IBAN is DE89 3704 0044 0532 0130 00, what now?"})
    found = await (await client.get(f"/api/conversations/{lines[0]['conversation']['id']}")).json()
    assert "DE89" not in found["title"] and "DE89" not in found["turns"][0]["question"]


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "99999999999999999999999"])
async def test_bad_conversation_ids_are_json_errors(served: Callable[..., Any], bad: str) -> None:
    client = await served()
    response = await client.get(f"/api/conversations/{bad}")
    assert response.status in {400, 404} and "error" in await response.json()


async def test_api_errors_are_json_everywhere(served: Callable[..., Any]) -> None:
    client = await served(max_request_bytes=2048)
    too_big = await client.post("/api/ask/stream", data=b'{"question": "' + b"x" * 5000 + b'"}',
                                headers={"Content-Type": "application/json"})  # fmt: skip
    assert too_big.status == 413 and "2048" in (await too_big.json())["error"].replace(",", "")
    missing = await client.get("/api/nothing-here")
    assert missing.status == 404 and "error" in await missing.json()
    wrong = await client.get("/api/ask")
    assert wrong.status == 405 and "error" in await wrong.json()
    big_id = await client.post("/api/feedback", json={"question_id": 10**23, "helpful": True})
    assert big_id.status == 404 and "error" in await big_id.json()


async def test_a_source_shows_its_sections_escaped_and_acl_checked(served: Callable[..., Any]) -> None:
    client = await served()
    vpn = await client.get(f"/sources/{quote(document_id(client, 'vpn.md'), safe='')}")
    page = await vpn.text()
    assert vpn.status == 200 and '<section class="src-section" id="installing">' in page
    assert "Install HaldenConnect from the Software Center." in page
    probe = await (await client.get(f"/sources/{quote(document_id(client, 'probe.md'), safe='')}")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in probe and "<img" not in probe
    assert "<script>alert" not in probe
    pay = await client.get(f"/sources/{quote(document_id(client, 'pay.md'), safe='')}")
    assert pay.status == 403 and "78,000" not in await pay.text()
    assert (await client.get("/sources/no%3Asuch.md")).status == 404


async def test_a_restricted_source_opens_for_its_group(served: Callable[..., Any]) -> None:
    client = await served(web_user_groups=["hr"])
    pay = await client.get(f"/sources/{quote(document_id(client, 'pay.md'), safe='')}")
    assert pay.status == 200 and "78,000" in await pay.text()


async def test_the_admin_page_is_for_admins_only(served: Callable[..., Any]) -> None:
    client = await served()
    assert (await client.get("/admin")).status == 403
    refused = await client.get("/api/admin")
    assert refused.status == 403 and "admins only" in (await refused.json())["error"]
    assert (await (await client.get("/api/me")).json()) == {"user": "web:web", "admin": False}
    admin = await served(bot_admins=["web:web"])
    assert (await admin.get("/admin")).status == 200
    data = await (await admin.get("/api/admin")).json()
    assert data["status"]["documents"] == 3 and data["status"]["answers"] == "extractive"
    assert data["sources"][0]["documents"] == 3
    assert data["budget"]["epsilon_used"] == 0 and data["budget"]["epsilon_total"] > 0
    # kb serve fills the models and training-runs slots from the registry and the run rows.
    assert data["models"]["available"] is True and data["training_runs"]["rows"] == []
    from app.server.assembly import KB_KEY
    from training.runs import RunStore

    RunStore(admin.app[KB_KEY].store.engine).create("web:web", {"epsilon": 4.0, "epochs": 2})  # type: ignore[index]
    runs = (await (await admin.get("/api/admin")).json())["training_runs"]
    assert runs["columns"][:3] == ["run", "status", "asked by"]
    [run] = runs["rows"]
    assert (run["status"], run["asked by"], run["ε"], run["epochs"]) == ("queued", "web:web", 4.0, 2)
    model = {"available": True, "columns": ["name"], "rows": [{"name": "qwen"}]}
    admin.app[ADMIN_SLOTS_KEY]["models"] = lambda: model  # type: ignore[index]
    assert (await (await admin.get("/api/admin")).json())["models"] == model, "any filler is rendered"


async def test_the_inbox_is_per_user_with_open_and_dismiss(served: Callable[..., Any]) -> None:
    from app.server.assembly import KB_KEY

    client = await served(web_identity_header="X-Forwarded-User")
    engine = client.app[KB_KEY].store.engine  # type: ignore[index]
    vpn, pay = document_id(client, "vpn.md"), document_id(client, "pay.md")
    items = (MessageItem(vpn, "VPN", "docs/vpn.md", "new"), MessageItem(pay, "Pay", "docs/pay.md", "new"))
    await WebInboxSender(engine).send(OutgoingMessage("web", "ann", "k1", "digest", "Digest", items))
    ann, bob = {"X-Forwarded-User": "ann"}, {"X-Forwarded-User": "bob"}
    inbox = await (await client.get("/api/push/inbox", headers=ann)).json()
    assert inbox["unread"] == 1 and len(inbox["messages"][0]["items"]) == 2
    assert (await (await client.get("/api/push/inbox", headers=bob)).json())["messages"] == []
    message = inbox["messages"][0]["id"]
    not_hers = await client.post(f"/api/push/inbox/{message}/dismiss", json={"document_id": vpn}, headers=bob)
    assert not_hers.status == 404
    done = await client.post(f"/api/push/inbox/{message}/dismiss", json={"document_id": pay}, headers=ann)
    assert done.status == 200
    opened = await client.post(f"/api/push/inbox/{message}/open", json={"document_id": vpn}, headers=ann)
    assert opened.status == 200
    after = (await (await client.get("/api/push/inbox", headers=ann)).json())["messages"][0]
    assert after["read"] is True
    assert [(i["document_id"], i["opened"], i["dismissed"]) for i in after["items"]] == [
        (vpn, True, False), (pay, False, True),
    ]  # fmt: skip


async def test_identity_header_only_from_trusted_proxies(served: Callable[..., Any]) -> None:
    client = await served(web_identity_header="X-Forwarded-User", web_trusted_proxies=["10.0.0.0/8"])
    refused = await client.get("/api/me", headers={"X-Forwarded-User": "ann"})
    assert refused.status == 403 and "KB_WEB_TRUSTED_PROXIES" in (await refused.json())["error"]
    page = await client.get("/", headers={"X-Forwarded-User": "ann"})
    assert page.status == 403 and "text/html" in page.content_type
    trusted = await served(web_identity_header="X-Forwarded-User")
    assert (await trusted.get("/api/me")).status == 401, "no header: sign in first"
    me = await (await trusted.get("/api/me", headers={"X-Forwarded-User": "ann@example.com"})).json()
    assert me == {"user": "web:ann@example.com", "admin": False}
    assert (await trusted.get("/api/me", headers={"X-Forwarded-User": "a:b c"})).status == 400


def test_identity_rules() -> None:
    local = WebIdentity(None, ())
    assert local.user("127.0.0.1", {}) == "web" and local.user("::1", {}) == "web"
    assert local.user("::ffff:127.0.0.1", {}) == "web"
    for remote in ("192.168.1.5", None, "not-an-address"):
        with pytest.raises(IdentityError) as caught:
            local.user(remote, {"X-Forwarded-User": "ann"})
        assert caught.value.status == 403 and "KB_WEB_IDENTITY_HEADER" in str(caught.value)
    proxied = WebIdentity("X-User", parse_networks(["10.1.0.0/16"]))
    assert proxied.user("10.1.2.3", {"X-User": " ann "}) == "ann"
    with pytest.raises(IdentityError):
        proxied.user("10.2.0.1", {"X-User": "ann"})
    with pytest.raises(ValueError, match="KB_WEB_TRUSTED_PROXIES"):
        parse_networks(["not a network"])


def test_overlapping_chunks_are_joined_once() -> None:
    first = "One sentence here. Two sentence there."
    assert without_overlap(first, "Two sentence there. Three follows.") == "Three follows."
    assert without_overlap(first, "Unrelated start.") == "Unrelated start."
    assert without_overlap("ends with a", "a different start") == "a different start", "too short to count"
