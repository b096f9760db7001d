"""Turn a GGUF file into a dense Hugging Face folder (safetensors + tokenizer) that vLLM serves.

transformers reads GGUF through the `gguf` package and dequantizes every tensor on load; dropping
the GGUF quantizer and its config afterwards makes `save_pretrained` write plain weights, which
vLLM's CPU and CUDA builds both load (vLLM's own GGUF path is CUDA-only and slow to start).
bfloat16 halves the dense copy (a 1.5B model: ~3 GB instead of ~6) and is what these models were
trained in; dequantized 4-bit values lose nothing that matters in it.
"""

from __future__ import annotations

import platform
import time
from importlib.metadata import version
from pathlib import Path

from core.llm.store.fetch import ModelStoreError

DEFAULT_DTYPE = "bfloat16"


def tool_versions() -> dict[str, str]:
    """What produced the dense weights, for the manifest."""
    versions = {"python": platform.python_version()}
    for package in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            versions[package] = version(package)
        except Exception:  # a missing optional package is recorded, never fatal
            versions[package] = "absent"
    return versions


def convert_gguf(gguf_path: Path, out_dir: Path, *, dtype: str = DEFAULT_DTYPE) -> dict[str, object]:
    """Write `out_dir` (config, safetensors, tokenizer) from `gguf_path`; return what the manifest records."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF; fail here with our own line)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise ModelStoreError(
            f"converting a GGUF model needs the `gguf` package ({exc})",
            hint="run `make install` (or pip install 'gguf==0.19.0') in the kb environment",
        ) from exc
    started = time.monotonic()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantize=True: dense weights, and no GGUF matmul kernel is looked up (from a hub).
        unpack = GgufConfig(gguf_file=name, dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=unpack, dtype=getattr(torch, dtype)
        )
    except Exception as exc:  # transformers raises many kinds on a GGUF it cannot map
        raise ModelStoreError(
            f"corrupt GGUF or unsupported architecture: transformers cannot load {name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            hint="use another model, or convert it yourself and serve the folder with KB_LLM_MODEL=/path",
        ) from exc
    # Dense weights on disk: without this, save_pretrained records a GGUF quantization nobody can load.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch's Module.__setattr__ typing
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "dtype": dtype,
        "architecture": type(model).__name__,
        "tools": tool_versions(),
        "seconds": round(time.monotonic() - started, 1),
    }
