"""A push scheduler process for the kill -9 test: the real scheduler, delivery and Slack adapter.

Only the candidate source is fixed (one public document for everyone), so the process starts in
about a second without loading the embedding model. Settings come from KB_* variables.

    python -m tests.integration.push_crash_worker
"""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.push_sender import SlackPushSender
from core.db import make_engine
from core.settings import load_settings
from push.scheduler import PushScheduler, PushService
from tests.push.push_fakes import FixedCandidates, candidate


async def main() -> None:
    settings = load_settings()
    assert settings.slack.bot_token is not None
    engine = make_engine(settings)
    client = AsyncWebClient(
        token=settings.slack.bot_token.get_secret_value(), base_url=str(settings.slack.api_url)
    )
    service = PushService(
        engine,
        settings,
        source=FixedCandidates([candidate("vpn")]),
        senders={"slack": SlackPushSender(client)},
    )
    scheduler = PushScheduler(service, poll_s=0.2)
    await scheduler.start()
    print(f"leader={scheduler.is_leader}", flush=True)
    await asyncio.Event().wait()  # runs until killed


if __name__ == "__main__":
    asyncio.run(main())
