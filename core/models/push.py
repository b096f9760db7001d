"""Tables of proactive push: deliveries, per-user state, cursors, the web inbox, interest profiles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary, String
from sqlmodel import Field, SQLModel

# --- push delivery: the exactly-once delivery log, per-user push state, cursors, web inbox ---
# APScheduler's own job table (`push_scheduler_jobs`) is created by migration 0008 too, but its rows
# belong to APScheduler's SQLAlchemyJobStore, so it has no model here.
EXTERNAL_TABLES = frozenset({"push_scheduler_jobs"})


class PushDeliveryRow(SQLModel, table=True):
    """One digest or notice to one person, keyed for exactly-once delivery; also the delivery log.

    The row is written with state `sending` before the platform is called; a restart finds it and
    asks the Sender whether a message with that key already went out. States: sending, sent, retry
    (`next_attempt_at`), failed, gone (the recipient left), deferred (quiet hours or frequency cap),
    skipped (opt-out, nothing readable), empty (a digest window with nothing worth sending).
    """

    __tablename__ = "push_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=Column(String(300), nullable=False, unique=True))
    kind: str = Field(max_length=10, description="digest or notice")
    platform: str = Field(max_length=20)
    user_id: str = Field(max_length=200, index=True)
    window_start: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    window_end: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state: str = Field(max_length=12, index=True)
    attempts: int = 0
    reason: str = Field(default="", max_length=500)
    documents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    message: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    channel: str = Field(default="", max_length=200)
    message_id: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), index=True))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    clicked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    dismissed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class PushUserStateRow(SQLModel, table=True):
    """Per-person push settings and learned state: time zone, digest hour, quiet hours, back-off level.

    `backoff` grows when digests are ignored (0: the chosen cadence; each level doubles the interval,
    daily becomes weekly at level 1) and drops to 0 at the first click.
    """

    __tablename__ = "push_user_state"

    platform: str = Field(primary_key=True, max_length=20)
    user_id: str = Field(primary_key=True, max_length=200)
    timezone: str = Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Berlin")
    digest_hour: int | None = Field(default=None, description="local hour; None: KB_PUSH_DIGEST_HOUR")
    quiet_start: int | None = Field(default=None, description="local hour; None: KB_PUSH_QUIET_START")
    quiet_end: int | None = Field(default=None, description="local hour; None: KB_PUSH_QUIET_END")
    backoff: int = 0
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PushCursorRow(SQLModel, table=True):
    """How far push has read an append-only log (e.g. `document_changes` for immediate notices)."""

    __tablename__ = "push_cursors"

    name: str = Field(primary_key=True, max_length=100)
    value: int = 0
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PushInboxRow(SQLModel, table=True):
    """A message for a web-chat user (the web Sender): the unique key makes a resend a no-op."""

    __tablename__ = "push_inbox"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=Column(String(300), nullable=False, unique=True))
    user_id: str = Field(max_length=200, index=True)
    message: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    read_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


# --- push profiles: per-person interest centroids learned from behaviour events ---


class InterestProfileRow(SQLModel, table=True):
    """One person's interests: a few centroids (float32 rows of `vectors`) with decaying weights.

    `weights` and `strengths` are as of `as_of` (the newest behaviour event folded in); readers decay
    them to their own time. `labels[i]` explains centroid i ("you asked about VPN access") and
    `strengths[i]` is the weight of the signal that label came from. `seen` lists the documents the
    person was shown, opened or rated (newest last, bounded), which are never pushed to them.
    """

    __tablename__ = "interest_profiles"

    platform: str = Field(primary_key=True, max_length=20)
    user_id: str = Field(primary_key=True, max_length=200)
    dim: int = 0
    vectors: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))
    weights: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    labels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    strengths: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seen: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_event_id: int = 0
    as_of: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class InterestProfileStateRow(SQLModel, table=True):
    """How far a full profile update has read `behaviour_events`: every event up to it is folded in."""

    __tablename__ = "interest_profile_state"

    name: str = Field(primary_key=True, max_length=50)
    last_event_id: int = 0
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
