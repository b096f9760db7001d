"""Reachability checks for the outside services `kb status` reports on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from core.settings import Settings

_TIMEOUT = aiohttp.ClientTimeout(total=3)


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    configured: bool
    reachable: bool | None  # None: not configured, or nothing to check
    detail: str


async def _get(url: str, headers: dict[str, str] | None = None, *, method: str = "GET") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=_TIMEOUT) as session,
        session.request(method, url, headers=headers) as response,
    ):
        return response.status, await response.text()


async def check_llm(settings: Settings) -> Backend:
    if settings.llm.url is None:
        return Backend("llm", False, None, "not configured: extractive answers (set KB_LLM_URL for vLLM)")
    url = str(settings.llm.url).rstrip("/") + "/v1/models"
    headers = (
        {"Authorization": f"Bearer {settings.llm.api_key.get_secret_value()}"}
        if settings.llm.api_key
        else None
    )
    try:
        status, _ = await _get(url, headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Backend("llm", True, False, f"{settings.llm.url}: {exc.__class__.__name__} {exc}".strip())
    return Backend("llm", True, status == 200, f"{settings.llm.url}: HTTP {status}")


async def check_slack(settings: Settings) -> Backend:
    if settings.slack.bot_token is None:
        return Backend("slack", False, None, "not configured (set KB_SLACK_BOT_TOKEN)")
    url = str(settings.slack.api_url).rstrip("/") + "/auth.test"
    headers = {"Authorization": f"Bearer {settings.slack.bot_token.get_secret_value()}"}
    try:
        status, body = await _get(url, headers, method="POST")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Backend(
            "slack", True, False, f"{settings.slack.api_url}: {exc.__class__.__name__} {exc}".strip()
        )
    ok = status == 200 and '"ok":true' in body.replace(" ", "")
    return Backend("slack", True, ok, f"{settings.slack.api_url}: HTTP {status}")


def check_teams(settings: Settings) -> Backend:
    if not settings.teams.app_id:
        return Backend("teams", False, None, "not configured (set KB_TEAMS_APP_ID)")
    return Backend("teams", True, None, "configured; Teams calls /api/messages, nothing to probe from here")


async def check_all(settings: Settings) -> list[Backend]:
    llm, slack = await asyncio.gather(check_llm(settings), check_slack(settings))
    return [llm, slack, check_teams(settings)]
