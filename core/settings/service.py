"""Settings of the service around the knowledge base: HTTP server, answer model, privacy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, ConfigDict, Field, SecretStr, field_validator

from core.settings.base import Group, prefixed


class ServerSettings(Group):
    """The HTTP server of `kb serve`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_request_bytes: int = Field(default=64_000, ge=1024)
    max_question_chars: int = Field(default=4000, ge=10, description="Longer questions are refused.")
    web_user_groups: list[str] = Field(
        default_factory=list, description="Groups of whoever uses the local web chat (JSON list)."
    )
    # Who uses the web chat: without a header, only 127.0.0.1 as the one local user `web:web`; with
    # one, the user a trusted reverse proxy names in it (the proxy authenticates; we trust its address).
    web_identity_header: str | None = Field(
        default=None,
        description="Header in which a trusted reverse proxy names the web user, e.g. X-Forwarded-User.",
    )
    web_trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses or networks (CIDR) whose identity header is believed (JSON list).",
    )
    # The web surface's own guards (app/server/security.py): the Host names and page origins that are
    # this service, how long a client may take to send a request, and who may read /metrics.
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names it answers to besides loopback ones (JSON list); `.example.com`: subdomains.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Other origins (https://host[:port]) whose pages may post to the API (JSON list).",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to send a request's headers; also the idle keep-alive."
    )
    body_timeout_s: float = Field(default=10.0, gt=0, description="Seconds to send a request's body.")
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token /metrics requires; unset, only loopback may read it."
    )

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value


class LLMSettings(Group):
    """The answer model: vLLM's OpenAI-compatible server, and the vLLM environment that starts one."""

    model_config = ConfigDict(alias_generator=prefixed("llm_"))

    url: AnyHttpUrl | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    external: bool = Field(
        default=False, description="The model runs outside the company: prompts are redacted first."
    )
    vllm_python: Path | None = Field(
        default=None,
        alias="vllm_python",
        description="bin/python of the vLLM environment (default: the `make vllm-env` one).",
    )
    store: Path | None = Field(
        default=None,
        alias="model_store",
        description="Folder of fetched models (`kb models`); default ~/.cache/halden-kb/models.",
    )


class PrivacySettings(Group):
    """What redaction removes where, and the privacy budget of DP training runs."""

    index_kinds: list[str] = Field(
        default_factory=lambda: ["SECRET", "CARD", "IBAN", "SSN", "CN_ID"],
        alias="redact_index_kinds",
        description="PII kinds removed before indexing (secrets always); contact data stays by default.",
    )
    answer_kinds: list[str] = Field(
        default_factory=lambda: ["SECRET", "CARD", "IBAN", "SSN", "CN_ID"],
        alias="redact_answer_kinds",
        description="PII kinds the output guard removes from answers (secrets always).",
    )
    prompt_kinds: list[str] = Field(
        default_factory=lambda: ["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "CN_ID", "IP", "SECRET"],
        alias="redact_prompt_kinds",
        description="PII kinds removed from prompts to an external model (secrets always).",
    )
    budget_epsilon: float = Field(
        default=16.0,
        gt=0,
        alias="privacy_budget_epsilon",
        description="Total epsilon all DP training runs may spend (basic composition).",
    )
    budget_delta: float = Field(
        default=1e-4,
        gt=0,
        lt=1,
        alias="privacy_budget_delta",
        description="Total delta all DP training runs may spend (summed per run).",
    )
    # The audit log's key and checkpoints live outside the database (privacy/audit.py): whoever can
    # write the database cannot recompute the chain, nor delete its tail unseen.
    audit_key: SecretStr | None = Field(
        default=None,
        alias="audit_key",
        description="Key of the audit log's HMAC chain; default: the file KB_AUDIT_KEY_FILE names.",
    )
    audit_key_file: Path | None = Field(
        default=None,
        alias="audit_key_file",
        description="File holding the audit key; default data_dir/audit.key, created on the first entry.",
    )
    audit_checkpoint_path: Path | None = Field(
        default=None,
        alias="audit_checkpoint_path",
        description="Signed audit checkpoints are appended here; default data_dir/audit-checkpoints.jsonl.",
    )
    audit_checkpoint_every: int = Field(
        default=1,
        ge=1,
        alias="audit_checkpoint_every",
        description="Entries between two checkpoints; entries since the last one could be deleted unseen.",
    )
