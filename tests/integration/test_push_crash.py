"""`kill -9` of the push scheduler in the middle of a digest run, then a restart: no digest twice, none lost.

The scheduler runs in a subprocess against the recording fake Slack. The fake kills the process
from inside its chat.postMessage handler, after the Nth message is stored but before Slack's reply
goes out: the hardest moment (the message exists, the delivery log still says `sending`). Other
digests are claimed but not yet posted, and the rest are not even planned. After the restart the
fake must hold exactly one digest per person.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from core.models import PushDeliveryRow
from tests.bot.fake_slack import FakeSlack
from tests.conftest import REPO
from tests.push.push_fakes import add_document, add_user

pytestmark = pytest.mark.slow
PEOPLE = 30
KILL_AT = 12


def _env(database_url: str, data_dir: Path, slack: FakeSlack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(
        KB_DATABASE_URL=database_url, KB_DATA_DIR=str(data_dir), KB_SLACK_BOT_TOKEN="xoxb-test",
        KB_SLACK_API_URL=slack.api_url, KB_PUSH_SWEEP_S="0.5", KB_PUSH_CONCURRENCY="6",
        KB_PUSH_MAX_PER_DAY="10", PYTHONPATH=str(REPO),
    )  # fmt: skip
    return env


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.push_crash_worker", cwd=str(REPO), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def _keys(slack: FakeSlack) -> list[str]:
    return [str(c["metadata"]["event_payload"]["key"]) for c in slack.calls_to("chat.postMessage")]


def _states(engine: Engine) -> Counter[str]:
    with Session(engine) as session:
        return Counter(row.state for row in session.execute(select(PushDeliveryRow)).scalars())


async def _until(condition: Any, process: asyncio.subprocess.Process, *, seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if process.returncode is not None and process.stderr is not None:
            raise AssertionError((await process.stderr.read()).decode()[-3000:])
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_run_then_restart_neither_repeats_nor_loses_a_digest(
    migrated: Engine, database_url: str, tmp_path: Path
) -> None:
    add_document(migrated, "vpn")
    seen = datetime.now(UTC) - timedelta(days=5)
    people = [f"U{n:02d}" for n in range(PEOPLE)]
    for user in people:
        add_user(migrated, user, hour=0, seen=seen)  # every daily slot at 00:00 UTC: today's is due
    async with FakeSlack() as slack:
        env = _env(database_url, tmp_path / "var", slack)
        first = await _start(env)

        def kill_on_nth_post(_body: dict[str, Any]) -> None:
            if len(slack.calls_to("chat.postMessage")) == KILL_AT:
                os.kill(first.pid, signal.SIGKILL)  # stored at "Slack"; the reply never arrives

        slack.on_post = kill_on_nth_post
        await first.wait()
        assert first.returncode == -signal.SIGKILL
        slack.on_post = None
        killed = _states(migrated)
        posted = len(_keys(slack))  # requests already in flight may land just after the kill
        assert KILL_AT <= posted < PEOPLE and killed["sending"] >= 1  # the crash window is open
        assert killed["sent"] < posted  # at least one message exists that the log does not call sent

        second = await _start(env)
        try:
            await _until(lambda: _states(migrated)["sent"] == PEOPLE, second, seconds=90)
            await asyncio.sleep(1.5)  # a few more sweeps: nothing else may be sent
        finally:
            second.send_signal(signal.SIGTERM)
            await second.wait()

    keys = _keys(slack)
    per_person = Counter(key.split(":")[2] for key in keys)
    assert sorted(per_person) == people  # none lost
    assert set(per_person.values()) == {1}  # none twice
    assert len(keys) == len(set(keys)) == PEOPLE
    with Session(migrated) as session:
        found = [
            r
            for r in session.execute(select(PushDeliveryRow)).scalars()
            if r.reason == "found after a restart"
        ]
    assert found, "the message sent just before the kill was resolved by looking it up, not by resending"
