"""Reachability checks for the outside services `kb status` reports on.

The answer model is either configured (KB_LLM_URL) or started by `kb serve --with-model`, which
records it in `<data dir>/model-server.json` while it runs (`write_model_state`): `kb status`, a
separate process, reads that record to say which model answers, where, and whether it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings

_TIMEOUT_S = 3.0
MODEL_STATE_FILE = "model-server.json"


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    configured: bool
    reachable: bool | None  # None: not configured, or nothing to check
    detail: str
    model: str | None = None  # the llm backend: the model that answers, and where
    url: str | None = None


def write_model_state(data_dir: Path, **state: Any) -> None:
    """Record the supervised model server (model, url, state, reason, log) for `kb status`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / MODEL_STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), **state}, indent=1))
    temporary.replace(path)


def clear_model_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / MODEL_STATE_FILE).unlink()


def read_model_state(data_dir: Path) -> dict[str, Any] | None:
    """The record of a running `kb serve --with-model`, or None (none, unreadable, or its process gone)."""
    try:
        state = json.loads((data_dir / MODEL_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(state.get("pid")):
        return None
    return state


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Unreachable(ConnectionError):
    """A backend did not answer; the message names the client's own error."""


async def _get(url: str, headers: dict[str, str] | None = None, *, method: str = "GET") -> tuple[int, str]:
    import aiohttp  # only when a backend is configured: `kb status` starts faster without it

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) as session,
            session.request(method, url, headers=headers) as response,
        ):
            return response.status, await response.text()
    except aiohttp.ClientError as exc:
        raise _Unreachable(f"{exc.__class__.__name__} {exc}".strip()) from exc


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, _Unreachable) else f"{exc.__class__.__name__} {exc}".strip()


async def check_llm(settings: Settings) -> Backend:
    """Which model answers, where, and whether it answers now; else why answers are extractive."""
    if settings.llm.url is None:
        state = read_model_state(settings.data_dir)
        if state is None:
            return Backend(
                "llm", False, None,
                "not configured: extractive answers (set KB_LLM_URL, or run kb serve --with-model)",
            )  # fmt: skip
        return await _check_supervised(state)
    headers = (
        {"Authorization": f"Bearer {settings.llm.api_key.get_secret_value()}"}
        if settings.llm.api_key
        else None
    )
    return await _probe_llm(str(settings.llm.url), settings.llm.model, headers, origin="KB_LLM_URL")


async def _check_supervised(state: dict[str, Any]) -> Backend:
    model, url = str(state.get("model") or "?"), str(state.get("url") or "")
    origin = f"started by kb serve (pid {state.get('pid')}, log {state.get('log')})"
    if state.get("state") == "starting":
        return Backend("llm", True, False, f"{model} is starting at {url}; extractive answers until ready "
                       f"({origin})", model=model, url=url)  # fmt: skip
    if state.get("state") != "ready":
        reason = state.get("reason") or "the model server is not running"
        return Backend("llm", True, False, f"{model}: {reason}; answers are extractive", model=model, url=url)
    return await _probe_llm(url, model, None, origin=origin)


async def _probe_llm(url: str, model: str | None, headers: dict[str, str] | None, *, origin: str) -> Backend:
    base = url.rstrip("/")
    try:
        status, body = await _get(base + "/v1/models", headers)
    except (_Unreachable, TimeoutError) as exc:
        reason = _reason(exc)
        return Backend("llm", True, False, f"{model or 'model'} at {base}: {reason}; answers are extractive "
                       f"({origin})", model=model, url=base)  # fmt: skip
    served = _served_ids(body) if status == 200 else []
    model = model or (served[0] if served else None)
    if status != 200:
        return Backend("llm", True, False, f"{model or 'model'} at {base}: HTTP {status}; answers are "
                       f"extractive ({origin})", model=model, url=base)  # fmt: skip
    return Backend("llm", True, True, f"{model} answers at {base} ({origin})", model=model, url=base)


def _served_ids(body: str) -> list[str]:
    try:
        data = json.loads(body).get("data", [])
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
    except (ValueError, AttributeError):
        return []


async def check_slack(settings: Settings) -> Backend:
    if settings.slack.bot_token is None:
        return Backend("slack", False, None, "not configured (set KB_SLACK_BOT_TOKEN)")
    url = str(settings.slack.api_url).rstrip("/") + "/auth.test"
    headers = {"Authorization": f"Bearer {settings.slack.bot_token.get_secret_value()}"}
    try:
        status, body = await _get(url, headers, method="POST")
    except (_Unreachable, TimeoutError) as exc:
        return Backend("slack", True, False, f"{settings.slack.api_url}: {_reason(exc)}")
    ok = status == 200 and '"ok":true' in body.replace(" ", "")
    return Backend("slack", True, ok, f"{settings.slack.api_url}: HTTP {status}")


def check_teams(settings: Settings) -> Backend:
    if not settings.teams.app_id:
        return Backend("teams", False, None, "not configured (set KB_TEAMS_APP_ID)")
    return Backend("teams", True, None, "configured; Teams calls /api/messages, nothing to probe from here")


async def check_all(settings: Settings) -> list[Backend]:
    llm, slack = await asyncio.gather(check_llm(settings), check_slack(settings))
    return [llm, slack, check_teams(settings)]
