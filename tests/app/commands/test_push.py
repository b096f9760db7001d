"""`kb push` end to end: real matcher, real Slack adapter, recording fake Slack."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import EXIT_ERROR, EXIT_PARTIAL, app
from push.cadence import latest_slot
from tests.bot.fake_slack import FakeSlack
from tests.push.conftest import Behaviour, Library
from tests.push.push_fakes import add_user


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The fake Slack on its own event loop in a thread: the CLI runs its own loop with asyncio.run."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeSlack()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(10)
    yield fake
    asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def kb(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Any, slack: FakeSlack
) -> Callable[..., Any]:
    monkeypatch.setenv("KB_DATABASE_URL", database_url)
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("KB_SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("KB_SLACK_API_URL", slack.api_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, ["push", *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return run


@pytest.fixture
def people(migrated: Engine, library: Library, behaviour: Behaviour) -> datetime:
    """Alice asked about the VPN; Bob left the workspace; a VPN page came out before today's slot."""
    now = datetime.now(UTC)
    slot = latest_slot(now, cadence="daily", zone=ZoneInfo("UTC"), hour=8, weekday=0)
    assert slot is not None
    behaviour.ask("slack:UALICE", "How do I connect to the VPN from home?", at=slot - timedelta(days=3))
    behaviour.ask("slack:UBOB", "How do I connect to the VPN?", at=slot - timedelta(days=3))
    for user in ("UALICE", "UBOB"):
        add_user(migrated, user, hour=8, seen=slot - timedelta(days=5))
    text = "Connect to the company VPN from home with the WireGuard client."
    library.add("vpn.md", "VPN from home", text, at=slot - timedelta(hours=2))
    library.add("lunch.md", "Canteen menu", "Soup on Mondays.", at=slot - timedelta(hours=2))
    return slot


def test_run_now_dry_run_then_for_real_then_nothing_left(
    kb: Callable[..., Any], slack: FakeSlack, people: datetime
) -> None:
    slack.gone_users.add("UBOB")
    dry = json.loads(kb("run-now", "--dry-run", "--json").stdout)
    assert {(o["user"], o["state"]) for o in dry["outcomes"]} == {
        ("slack:UALICE", "dry-run"), ("slack:UBOB", "dry-run"),
    }  # fmt: skip
    alice = next(o for o in dry["outcomes"] if o["user"] == "slack:UALICE")
    assert [i["document_id"] for i in alice["items"]] == ["vpn.md"] and "asked about" in alice["items"][0][
        "why"
    ]
    assert slack.calls == []
    real = json.loads(kb("run-now", "--json", code=EXIT_PARTIAL).stdout)  # Bob is gone: partial
    assert {(o["user"], o["state"]) for o in real["outcomes"]} == {
        ("slack:UALICE", "sent"),
        ("slack:UBOB", "gone"),
    }
    (post,) = slack.calls_to("chat.postMessage")
    assert post["metadata"]["event_payload"]["key"] == f"digest:slack:UALICE:{people:%Y-%m-%dT%H:%M}Z"
    assert json.loads(kb("run-now", "--json").stdout)["outcomes"] == []
    log = json.loads(kb("log", "--json").stdout)
    assert sorted((row["user"], row["state"], row["reason"]) for row in log) == [
        ("slack:UALICE", "sent", ""), ("slack:UBOB", "gone", "Slack: user_not_found"),
    ]  # fmt: skip
    assert "Nothing is due." in kb("run-now").stdout


def test_preview_explains_and_run_now_for_one_person(
    kb: Callable[..., Any], slack: FakeSlack, people: datetime, library: Library
) -> None:
    preview = json.loads(kb("preview", "--user", "slack:UALICE", "--json").stdout)
    assert preview["cadence"] == "daily" and preview["timezone"] == "UTC"
    assert any("VPN" in i["label"] for i in preview["interests"])
    assert slack.calls == []
    assert "Interests" in kb("preview", "--user", "slack:UALICE").stdout
    # A forced digest covers the last day before now; the fixture's pages came out before the last
    # 08:00 slot, which is more than a day ago between 06:00 and 08:00 UTC. This one is in the window
    # at any time of day.
    text = "Connect to the company VPN from home with the new WireGuard client."
    library.add("vpn-home.md", "VPN from home, new client", text, at=datetime.now(UTC) - timedelta(hours=1))
    one = json.loads(kb("run-now", "--user", "slack:UALICE", "--json").stdout)
    assert [(o["user"], o["trigger"], o["state"]) for o in one["outcomes"]] == [
        ("slack:UALICE", "forced", "sent")
    ]
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_bad_user_names_are_refused(kb: Callable[..., Any], migrated: Engine) -> None:
    result = kb("run-now", "--user", "nobody", code=EXIT_ERROR)
    assert "is not a person push knows" in result.output


def test_prefs_set_the_time_zone_and_hours_and_refuse_unknown_zones(
    kb: Callable[..., Any], migrated: Engine
) -> None:
    set_ = json.loads(kb("prefs", "--user", "slack:U1", "--timezone", "Asia/Tokyo", "--hour", "7",
                         "--quiet", "23-6", "--json").stdout)  # fmt: skip
    assert set_ == {"user": "slack:U1", "timezone": "Asia/Tokyo", "digest_hour": 7, "quiet_hours": [23, 6]}
    bad_zone = kb("prefs", "--user", "slack:U1", "--timezone", "Mars/Olympus_Mons", code=EXIT_ERROR)
    assert "unknown time zone 'Mars/Olympus_Mons'" in bad_zone.output and "IANA" in bad_zone.output
    assert "not START-END" in kb("prefs", "--user", "slack:U1", "--quiet", "late", code=EXIT_ERROR).output
    assert "0-23" in kb("prefs", "--user", "slack:U1", "--hour", "25", code=EXIT_ERROR).output
