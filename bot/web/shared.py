"""What the web chat's handlers share: the objects they work with, kept on the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from bot.conversation import Conversation
from bot.web.history import History
from bot.web.identity import json_error
from core.metrics import Metrics
from core.settings import Settings

MAX_ID = 2**62  # ids beyond any row: refused before they reach the database


@dataclass(frozen=True, slots=True)
class WebChat:
    conversation: Conversation
    metrics: Metrics
    settings: Settings
    engine: Engine
    history: History


WEB_KEY = web.AppKey("web_chat", WebChat)


def valid_id(value: Any, name: str) -> int:
    """A row id from a request, or a JSON 400 (never an integer the database cannot hold)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_ID:
        raise json_error(400, f"'{name}' must be a positive whole number")
    return value
