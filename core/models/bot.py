"""Tables of the chat surfaces: behaviour events, subscriptions, event claims, references, web chat."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, Text
from sqlmodel import Field, SQLModel

# --- bot: behaviour events for push, subscriptions, Slack dedup, Teams references ---


class BehaviourEventRow(SQLModel, table=True):
    """One thing a user did with the bot, for push's profiles: asked, rated, clicked, (un)subscribed.

    `kind` is question, feedback, source_click, subscribe or unsubscribe. Feedback and clicks point
    at the question they are about through `question_id`. Question texts are stored redacted.
    `ref` names a question whose buttons were sent before its row was written (a Slack answer's
    event key: bot/store/claims.py `finish_event`); a click finds the row's id through it.
    """

    __tablename__ = "behaviour_events"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20, index=True)
    platform: str = Field(max_length=20)
    user_id: str = Field(max_length=200, index=True)
    channel: str = Field(default="", max_length=200)
    thread: str = Field(default="", max_length=200)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    question_id: int | None = Field(default=None, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ref: str | None = Field(default=None, max_length=200, index=True)


class SubscriptionRow(SQLModel, table=True):
    """A user's standing interest in a topic (`subscribe vpn`); push matches new documents to it."""

    __tablename__ = "subscriptions"

    platform: str = Field(primary_key=True, max_length=20)
    user_id: str = Field(primary_key=True, max_length=200)
    topic: str = Field(primary_key=True, max_length=200)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class DigestPrefRow(SQLModel, table=True):
    """How often a user wants the digest; `requested_at` is set by `digest now` for push to pick up."""

    __tablename__ = "digest_prefs"

    platform: str = Field(primary_key=True, max_length=20)
    user_id: str = Field(primary_key=True, max_length=200)
    cadence: str = Field(default="weekly", max_length=10, description="daily, weekly or off")
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    requested_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ProcessedEventRow(SQLModel, table=True):
    """An event a chat platform delivered and a replica claimed; the key makes redeliveries no-ops.

    `state` is claimed (being answered by `owner` until `lease_until`), answered, ignored (nothing to
    answer) or failed (given up after `attempts`). An expired claim is re-run from `payload` into the
    message `reply_ts`, so a replica that died after Slack's ack loses no question (migration 0009).
    """

    __tablename__ = "processed_events"

    event_id: str = Field(primary_key=True, max_length=200, description="platform:event id")
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    state: str = Field(default="answered", max_length=12, index=True)
    owner: str = Field(default="", max_length=100)
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    attempts: int = 0
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    reply_ts: str | None = Field(default=None, max_length=40)


class ConversationRefRow(SQLModel, table=True):
    """Where the bot can write to a user later (a Teams conversation reference), for push."""

    __tablename__ = "conversation_refs"

    platform: str = Field(primary_key=True, max_length=20)
    conversation_id: str = Field(primary_key=True, max_length=500)
    user_id: str = Field(max_length=200, index=True)
    service_url: str = Field(max_length=1000)
    reference: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


# --- web chat: conversations with their turns, per web user (bot/web/history.py) ---


class WebConversationRow(SQLModel, table=True):
    """One conversation of a web chat user, listed in the page's sidebar (newest first)."""

    __tablename__ = "web_conversations"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=200, index=True, description="the name after `web:`")
    title: str = Field(default="", max_length=200, description="the first question, redacted")
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class WebTurnRow(SQLModel, table=True):
    """A question (redacted) and the reply the page showed for it, as the page's JSON."""

    __tablename__ = "web_turns"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("web_conversations.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    question: str = Field(sa_column=Column(Text, nullable=False))
    reply: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
