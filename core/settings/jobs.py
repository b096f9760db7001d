"""Settings of the background jobs: proactive push and training runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, SecretStr

from core.settings.base import Group, prefixed


class PushSettings(Group):
    """Proactive push: digests, notices, the scheduler, rate limits, interest profiles and matching."""

    model_config = ConfigDict(alias_generator=prefixed("push_"))

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

    model_config = ConfigDict(alias_generator=prefixed("train_"))

    enabled: bool = Field(default=False, description="Run the training worker inside `kb serve`.")
    student: Path | None = Field(
        default=None, description="The student's base model folder (HF); the adapter is trained over it."
    )
    teacher: Path | None = Field(
        default=None,
        description="The teacher's model folder (HF): the student's tokenizer, or both byte-level BPE.",
    )
    served_base: str = Field(
        default="", description="The name vLLM serves the student base under; default: KB_LLM_MODEL."
    )
    dir: Path = Field(default=Path("var/training"), description="Runs, checkpoints and the model registry.")
    epsilon: float = Field(default=4.0, gt=0, le=64, description="Target ε of a retrain that names none.")
    epochs: int = Field(default=2, ge=1, le=50, description="Epochs of a retrain that names none.")
    max_epochs: int = Field(default=50, ge=1, description="The most epochs a retrain may ask for.")
    # A DP run's noise grows with the square root of what it trains: the rank-2 adapter of q_proj and
    # v_proj at an expected batch of 128 learned on the handbook at ε 8, a rank-8 adapter of every
    # projection at 64 did not (docs/decisions/dp-distillation-recipe.md).
    lora_rank: int = Field(default=2, ge=1, le=256, description="Rank of the LoRA adapter a run trains.")
    lora_targets: str = Field(
        default="q_proj,v_proj",
        pattern=r"^[a-z_]+(,[a-z_]+)*$",
        description="The projections the adapter adapts, comma-separated (q_proj ... down_proj).",
    )
    batch_size: int = Field(default=128, ge=1, description="Expected batch of DP-SGD (Poisson sampling).")
    max_examples: int = Field(default=2000, ge=10, description="Distillation examples per run at most.")
    max_len: int = Field(
        default=1024,
        ge=256,
        le=8192,
        description="Tokens of one training example: the bot's system rules, passages, question and answer.",
    )
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
    notify_s: float = Field(
        default=15.0, gt=0, description="How often the leader looks for ended runs to tell the admins about."
    )
    refresh_enabled: bool = Field(default=False, description="Schedule retrains when new data accumulates.")
    refresh_hours: float = Field(default=24.0, gt=0, description="How often the refresh job looks.")
    refresh_min_documents: int = Field(default=20, ge=1, description="New or changed documents to retrain.")
    refresh_min_rated: int = Field(default=20, ge=0, description="New 👍-rated questions to retrain.")
