"""Settings of the chat surfaces: Slack, Teams, and the conversation they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, ConfigDict, Field, SecretStr, model_validator

from core.settings.base import Group, prefixed


class SlackSettings(Group):
    """The Slack app: tokens, the signing secret, the Web API address."""

    model_config = ConfigDict(alias_generator=prefixed("slack_"))

    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    directory_ttl_s: float = Field(
        default=300.0, ge=0.0, description="Cache time of Slack user groups and channel members."
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        """A blank token or secret counts as unset: a secret of spaces verifies nothing.

        `kb serve` refuses a bot token without a signing secret unless Socket Mode is on (its app
        token authenticates the connection); push alone needs only the bot token.
        """
        if isinstance(values, dict):
            for name in ("bot_token", "app_token", "signing_secret"):
                for key in (name, f"slack_{name}"):
                    value = values.get(key)
                    if isinstance(value, SecretStr):
                        value = value.get_secret_value()
                    if isinstance(value, str) and not value.strip():
                        values = {**values, key: None}
        return values


class TeamsSettings(Group):
    """The Teams bot's Entra app registration."""

    model_config = ConfigDict(alias_generator=prefixed("teams_"))

    app_id: str | None = None
    app_password: SecretStr | None = None
    tenant_id: str | None = Field(default=None, description="For single-tenant Entra apps.")


class BotSettings(Group):
    """The conversation on every chat surface: who is admin, users' groups, streaming, event claims."""

    model_config = ConfigDict(alias_generator=prefixed("bot_"))

    admins: list[str] = Field(
        default_factory=list, description='Admins, e.g. ["slack:U0ADMIN", "teams:<aad-object-id>"] (JSON).'
    )
    user_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='Chat users\' groups, e.g. {"slack:U0HR": ["hr"]} (JSON).'
    )
    admin_ingest_roots: list[Path] = Field(
        default_factory=list,
        alias="admin_ingest_roots",
        description="Folders `admin ingest` in chat may read (JSON list).",
    )
    docs_base_url: str | None = Field(
        default=None, alias="docs_base_url", description="Base URL that makes document paths links."
    )
    stream_interval_s: float = Field(
        default=1.0, ge=0.0, le=60.0, description="Least time between two updates of a streamed answer."
    )
    status_interval_s: float = Field(
        default=5.0, gt=0.0, le=300.0,
        description="How often `admin status` edits its Slack message or Teams card while a run is live.",
    )  # fmt: skip
    status_max_s: float = Field(
        default=1800.0, ge=0.0, le=86_400.0, description="How long `admin status` goes on editing it at most."
    )
    claim_lease_s: float = Field(
        default=120.0, gt=0, description="How long a claimed event is held before another replica re-runs it."
    )
    claim_sweep_s: float = Field(
        default=60.0, gt=0, description="How often unanswered claims are re-run and old claims pruned."
    )
    claim_attempts: int = Field(default=3, ge=1, le=20, description="Tries per event before giving up.")
    event_retention_hours: float = Field(
        default=48.0, ge=0.0, description="Processed event ids are kept this long (Slack retries within 1 h)."
    )
    # The event loop's priorities in `kb serve`; bot/tasks.py explains them.
    worker_nice: int = Field(
        default=10, ge=0, le=19, description="Niceness of the threads that retrieve and answer; 0: off."
    )
    switch_interval_ms: float = Field(
        default=0.0, ge=0.0, le=100.0, description="GIL switch interval in `kb serve`; 0: Python's (5 ms)."
    )
    ack_first_wait_s: float = Field(
        default=0.2, ge=0.0, le=5.0, description="Longest a retrieval waits for acks in flight; 0: off."
    )
