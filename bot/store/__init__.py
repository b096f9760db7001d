"""The bot's rows, one module per concern, behind one `BotStore`.

- bot/store/base.py: the engine, the bot's database threads, the batch writer (`run`, `start`).
- bot/store/claims.py: event claims with leases, the rows of the exactly-once protocol (bot/claims.py).
- bot/store/behaviour.py: behaviour events (questions, feedback, clicks) that push and training read.
- bot/store/preferences.py: subscriptions, digest cadence, Teams conversation references.

    store = BotStore(engine)
    await store.run(store.subscribe, incoming, "vpn")   # any method, off the event loop
"""

from __future__ import annotations

from typing import ClassVar

from bot.store import behaviour, claims
from bot.store.base import Batched, replica_name
from bot.store.claims import ANSWERED, CLAIMED, DEFAULT_LEASE_S, FAILED, IGNORED, Claim, ClaimRows
from bot.store.preferences import DEFAULT_CADENCE, PreferenceRows

__all__ = [
    "ANSWERED", "CLAIMED", "DEFAULT_CADENCE", "DEFAULT_LEASE_S", "FAILED", "IGNORED", "BotStore", "Claim",
    "replica_name",
]  # fmt: skip


class BotStore(ClaimRows, PreferenceRows):
    """Every row the bot keeps; synchronous methods, run off the event loop through `run`/`start`."""

    batched: ClassVar[Batched] = {**claims.BATCHED, **behaviour.BATCHED}
