"""The database tables: the single source of truth that every package meets through.

FAISS and BM25 indexes are derived from these rows and can always be rebuilt from them.
Schema changes go through Alembic migrations in `core/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DocumentRow(SQLModel, table=True):
    """One source document (a file, a row of a table, a page of an API)."""

    __tablename__ = "documents"

    id: str = Field(primary_key=True, max_length=512, description="source:key, stable across runs")
    source: str = Field(index=True, max_length=200)
    uri: str = Field(max_length=1024)
    title: str = Field(max_length=500)
    content_hash: str = Field(max_length=64)
    text_hash: str = Field(default="", max_length=64, description="headings and text only (migration 0010)")
    size_bytes: int = 0
    acl_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ingested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ChunkRow(SQLModel, table=True):
    """A passage of a document; its id is also its id in the vector index."""

    __tablename__ = "chunks"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    document_id: str = Field(
        sa_column=Column(
            String(512), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    ordinal: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    section: str = Field(default="", max_length=1000, description="heading path, ' > '-joined")
    anchor: str = Field(default="", max_length=300)
    page: int | None = None
    token_count: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    flag: str = Field(
        default="", max_length=500, description="why the ingest scan distrusts it (empty: clean)"
    )


class IngestRunRow(SQLModel, table=True):
    """One `kb ingest` run and what it did, for `kb status` and the audit trail."""

    __tablename__ = "ingest_runs"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    status: str = Field(default="running", max_length=20)
    paths: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    chunks: int = 0
    problems: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    flagged: int = 0
    pid: int | None = Field(default=None, description="the ingesting process, to see that it died")
    host: str = Field(default="", max_length=255)
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class DocumentChangeRow(SQLModel, table=True):
    """One change to one document, in the order it was committed; push reads it to find news.

    Written in the same transaction as the change itself, so the log never disagrees with the
    documents table. Deleted documents keep their last title, uri and ACL here.
    """

    __tablename__ = "document_changes"

    id: int | None = Field(default=None, primary_key=True)
    document_id: str = Field(index=True, max_length=512)
    kind: str = Field(max_length=10, description="added, updated or deleted")
    title: str = Field(max_length=500)
    uri: str = Field(max_length=1024)
    content_hash: str = Field(max_length=64)
    text_hash: str = Field(default="", max_length=64, description="empty for changes before migration 0010")
    acl_groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ingest_run_id: int | None = None


class AuditRow(SQLModel, table=True):
    """One entry of the append-only, hash-chained audit log (see privacy/audit.py)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_column=Column(Integer, nullable=False, unique=True))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=200)
    action: str = Field(max_length=100, index=True)
    target: str = Field(default="", max_length=500)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=500)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The audit key that MACs this entry (privacy/audit_keys.py); empty: a legacy SHA-256 link.
    key_id: str = Field(default="", max_length=16)


class SourceStateRow(SQLModel, table=True):
    """Where one declared source (`kb sources`) stands: its incremental cursor and its last sync.

    `cursor` is the largest `updated` value seen, typed so that it binds back as the same kind of
    value it was read as (see knowledge/sources/sql.py); `problems` are the last sync's.
    """

    __tablename__ = "source_state"

    name: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=20)
    cursor: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    last_sync_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    status: str = Field(default="never", max_length=20, description="ok, partial or failed")
    documents: int = 0
    problems: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    ingest_run_id: int | None = None


# --- knowledge: who owns which documents, and what a sync removed (see knowledge/owners.py) ---


class DocumentSourceRow(SQLModel, table=True):
    """A source of documents: `key` is what its documents' ids and links start with.

    A folder source has its resolved absolute `root`; a declared SQL or API source has none (its
    key is its declared name). A `legacy` source was keyed by its folder's base name before roots
    were recorded: the first ingest of a folder whose files match its documents adopts it.
    """

    __tablename__ = "document_sources"

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=20, description="folder, named or legacy")
    root: str | None = Field(default=None, sa_column=Column(String(1024), nullable=True, unique=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    seen_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RemovedDocumentRow(SQLModel, table=True):
    """A document a sync removed, kept with its chunks until `kb sources restore` or the purge."""

    __tablename__ = "removed_documents"

    id: int | None = Field(default=None, primary_key=True)
    document_id: str = Field(index=True, max_length=512)
    source: str = Field(index=True, max_length=200)
    removed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    ingest_run_id: int | None = None
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class RemovedChunkRow(SQLModel, table=True):
    """A chunk of a removed document, with its embedding, so a restore needs no model."""

    __tablename__ = "removed_chunks"

    id: int | None = Field(default=None, primary_key=True)
    removed_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("removed_documents.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    ordinal: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    section: str = Field(default="", max_length=1000)
    anchor: str = Field(default="", max_length=300)
    page: int | None = None
    token_count: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    flag: str = Field(default="", max_length=500)


# --- bot: behaviour events for push, subscriptions, Slack dedup, Teams references ---


class BehaviourEventRow(SQLModel, table=True):
    """One thing a user did with the bot, for push's profiles: asked, rated, clicked, (un)subscribed.

    `kind` is question, feedback, source_click, subscribe or unsubscribe. Feedback and clicks point
    at the question they are about through `question_id`. Question texts are stored redacted.
    `ref` names a question whose buttons were sent before its row was written (a Slack answer's
    event key: bot/store.py `finish_event`); a click finds the row's id through it.
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


# --- training / privacy budget: the DP ledger (see privacy/budget.py) ---


class PrivacyLedgerRow(SQLModel, table=True):
    """One training run's claim on the privacy budget: reserved before it trains, settled after.

    A `reserved` row counts `epsilon_planned` against the budget, a `settled` row `epsilon_spent`.
    The run id is the key, so a resumed run finds its own reservation instead of making another.
    """

    __tablename__ = "privacy_ledger"

    run_id: str = Field(primary_key=True, max_length=200)
    dataset_hash: str = Field(max_length=128, index=True)
    status: str = Field(max_length=20, index=True, description="reserved or settled")
    epsilon_planned: float
    epsilon_spent: float | None = None
    delta: float
    actor: str = Field(default="", max_length=200)
    privacy_unit: str = Field(default="", max_length=200)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reserved_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    settled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class PrivacyLedgerLockRow(SQLModel, table=True):
    """The single row every ledger change updates first, to serialize budget checks across processes."""

    __tablename__ = "privacy_ledger_lock"

    id: int = Field(primary_key=True)
    version: int = 0


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


# --- training runs and the model registry (see training/runs.py and training/registry.py) ---


class TrainingRunRow(SQLModel, table=True):
    """One retrain request and its life: queued -> running -> succeeded | failed | cancelled.

    `params` are what was asked (ε, δ, epochs, student, LoRA rank); `progress` what the worker last
    reported (step, total, loss, ε so far); `report` the final figures. `worker` and `heartbeat_at`
    name the worker that runs it: a run whose heartbeat went stale lost its worker and is resumed.
    """

    __tablename__ = "training_runs"

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(max_length=20, index=True)
    requested_by: str = Field(max_length=200)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str = Field(default="", max_length=2000)
    dry_run: bool = False
    worker: str = Field(default="", max_length=200)
    attempts: int = 0
    cancel_requested: bool = False
    version: int | None = None
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ModelVersionRow(SQLModel, table=True):
    """A registered answer model: a LoRA adapter over a base (or the base itself, version 0).

    `manifest` is the immutable record written once at export (base, dataset hash, ε/δ, figures,
    teacher, who and when); `path` the adapter folder; `served_name` what vLLM serves it under.
    `status` is `registered`, `active`, `retired` or `rejected` (failed the gate); at most one row
    is `active`. `ab_share` is the share of questions a candidate answers in an A/B test (0: none).
    """

    __tablename__ = "model_versions"

    version: int = Field(primary_key=True)
    served_name: str = Field(max_length=200, unique=True)
    path: str = Field(default="", max_length=1000)
    status: str = Field(max_length=20, index=True)
    run_id: int | None = None
    manifest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    ab_share: float = 0.0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    activated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


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
