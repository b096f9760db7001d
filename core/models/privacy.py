"""Tables of the privacy layer: the audit log and the DP budget ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer
from sqlmodel import Field, SQLModel


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
