"""Tables of training: runs and the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

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
    # When the admins were told in chat that the run ended (training/notify.py); None: not yet.
    notified_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


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
