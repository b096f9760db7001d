"""The embedding model exported to ONNX and run by onnxruntime: the fast path for questions.

A question is one short text. Through sentence-transformers and torch it pays for the wrapper,
the padding logic and torch's per-operator dispatch, which on this 2-core CPU cost more than the
arithmetic: onnxruntime runs the same graph 3x faster on one thread, with cosine 1.00000 to the
fp32 torch vectors (docs/decisions/onnx-query-encoder.md). int8 dynamic quantization was
faster again (6x) but only reached cosine 0.989 on the FAQ questions, so it is not used.

The graph is exported from the LOCAL model folder (nothing is downloaded) on first use and cached
as `<cache>/<model>-<digest>.onnx`, where the digest covers the weights, the configuration, this
exporter's format number and the onnxruntime version: new weights mean a new export.

>>> encoder = load_onnx_encoder(default_model_path(), cache_dir=Path("/tmp/kb-models"))  # doctest: +SKIP
>>> encoder.encode(["How do I reset my password?"]).shape                               # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from knowledge.errors import KnowledgeError

log = logging.getLogger(__name__)

# The same array type as knowledge.embeddings.Vectors; named here so the encoder needs nothing from the
# module that loads it.
Vectors = npt.NDArray[np.float32]

# Bump when the exported graph changes (inputs, pooling, fusion): old cache files are then ignored.
EXPORT_FORMAT = 1
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SUPPORTED_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)


class OnnxUnavailable(KnowledgeError):
    """The ONNX path cannot serve this model here (no onnxruntime, an unsupported model...)."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "halden-kb" / "models"


def check_supported(model_path: Path) -> None:
    """Raise OnnxUnavailable unless the folder is a transformer + mean pooling (+ normalize) model,
    the only shape the exported graph reproduces."""
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        raise OnnxUnavailable(f"{model_path} has no modules.json")
    modules = json.loads(modules_file.read_text())
    kinds = [m.get("type", "") for m in modules]
    if not kinds or kinds[0] != _SUPPORTED_MODULES[0] or any(k not in _SUPPORTED_MODULES for k in kinds):
        raise OnnxUnavailable(f"modules {kinds} are not transformer + pooling + normalize")
    for module in modules:
        if module.get("type") == _SUPPORTED_MODULES[1]:
            pooling = json.loads((model_path / module["path"] / "config.json").read_text())
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
            if modes != ["pooling_mode_mean_tokens"]:
                raise OnnxUnavailable(f"pooling {modes} is not mean pooling")
    if not any((model_path / name).is_file() for name in _WEIGHT_FILES):
        raise OnnxUnavailable(f"no {' or '.join(_WEIGHT_FILES)} in {model_path}")


def model_digest(model_path: Path, runtime_version: str) -> str:
    """A hash of everything the exported graph depends on: weights, configurations, exporter, runtime."""
    digest = hashlib.sha256(f"format {EXPORT_FORMAT}; onnxruntime {runtime_version}\n".encode())
    names = [*_WEIGHT_FILES, "config.json", "modules.json", "1_Pooling/config.json"]
    for name in names:
        path = model_path / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:20]


def export_onnx(model_path: Path, target: Path, *, input_names: list[str]) -> None:
    """Export the model with mean pooling and L2 normalization inside the graph, written
    atomically to `target` (two processes exporting at once both end with a whole file)."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(descriptor)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The legacy exporter's deprecation notice, transformers' own deprecations, and tracer
            # notes on shape checks that are constant for this graph (the mask spans the input).
            warnings.simplefilter("ignore")
            model = _traceable(model_path, input_names)
            # Two texts of different lengths, so that the traced graph handles padding.
            mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
            example = {"input_ids": torch.arange(1, 13).reshape(2, 6) * mask, "attention_mask": mask}
            example["token_type_ids"] = torch.zeros_like(mask)
            torch.onnx.export(
                model,
                tuple(example[name] for name in input_names),
                scratch,
                input_names=input_names,
                output_names=["embedding"],
                dynamic_axes={
                    **{name: {0: "batch", 1: "tokens"} for name in input_names},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
            _fuse(Path(scratch), model.model.config)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)


def _fuse(path: Path, config: Any) -> None:
    """Fuse attention, layer norms and GELU into onnxruntime's transformer kernels (about 10% on
    one thread); a model the optimizer does not know keeps its plain, still correct, graph."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model  # type: ignore[import-untyped]

        optimized = optimize_model(
            str(path),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)),
            opt_level=0,
        )
        optimized.save_model_to_file(str(path))
    except Exception as exc:  # the optimizer is best effort; the unfused graph is exact
        log.info("onnx fusion skipped: %s", exc)


def _traceable(model_path: Path, input_names: list[str]) -> Any:
    """The model as one module from `input_names` (in order) to unit vectors, for the tracer."""
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax with an additive mask, which onnxruntime
    # fuses into its Attention kernel; the SDPA path traces shape checks into constants.
    encoder = AutoModel.from_pretrained(str(model_path), attn_implementation="eager", local_files_only=True)

    class MeanPooled(torch.nn.Module):
        """Transformer -> mean over real tokens -> unit length, as the sentence-transformers modules."""

        def __init__(self, model: Any, input_names: list[str]) -> None:
            super().__init__()
            self.model, self.input_names = model, input_names

        def forward(self, *inputs: Any) -> Any:
            features = dict(zip(self.input_names, inputs, strict=True))
            hidden = self.model(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed, p=2.0, dim=1)

    return MeanPooled(encoder, input_names).eval()


class OnnxEncoder:
    """Normalized float32 vectors for texts, from an exported graph; safe to call from many threads
    at once (onnxruntime sessions are), unlike a torch module."""

    def __init__(self, graph: Path, tokenizer: Any, *, threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads steal the other core from the bot and FAISS (see Embedder).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.graph = graph
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = tokenizer

    def encode(self, texts: list[str]) -> Vectors:
        encodings = (
            self._tokenizer.encode_batch(texts) if len(texts) > 1 else [self._tokenizer.encode(texts[0])]
        )
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (vectors,) = self._session.run(None, {name: feed[name] for name in self._inputs})
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_onnx_encoder(
    model_path: Path, *, cache_dir: Path | None = None, max_tokens: int = 256, threads: int = 1
) -> OnnxEncoder:
    """The cached ONNX export of `model_path` (exported now when missing), ready to encode.

    Raises OnnxUnavailable when onnxruntime/onnx are not installed or the model is not one the
    export reproduces; the caller then keeps the torch path.
    """
    check_supported(model_path)
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime is not installed ({exc})") from exc
    tokenizer_file = model_path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise OnnxUnavailable(f"no fast tokenizer (tokenizer.json) in {model_path}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    # One text at a time needs no padding; truncation as sentence-transformers' max_seq_length.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    name = model_path.name if model_path.name != "model" else model_path.parent.name
    graph = (cache_dir or default_cache_dir()) / f"{name}-{model_digest(model_path, ort.__version__)}.onnx"
    if graph.is_file():
        try:
            return OnnxEncoder(graph, tokenizer, threads=threads)
        except Exception as exc:  # a truncated or foreign file: export it again
            log.warning("the cached ONNX model %s does not load (%s): exporting it again", graph, exc)
    _export_for(model_path, graph)
    return OnnxEncoder(graph, tokenizer, threads=threads)


def _export_for(model_path: Path, graph: Path) -> None:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError as exc:
        raise OnnxUnavailable(f"the onnx package is not installed ({exc})") from exc
    inputs = ["input_ids", "attention_mask"]
    if json.loads((model_path / "config.json").read_text()).get("type_vocab_size", 0):
        inputs.append("token_type_ids")
    log.info("exporting %s to ONNX at %s (once per weights)", model_path, graph)
    export_onnx(model_path, graph, input_names=inputs)
