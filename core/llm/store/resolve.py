"""From what a person typed (`--model`, KB_LLM_MODEL) to a model folder vLLM can load.

A value that names a folder (it holds a path separator, starts with `.` or `~`, or exists) is a
Hugging Face folder, checked for what vLLM needs; anything else is a store name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.llm.store.fetch import ModelStoreError
from core.llm.store.store import ModelStore

# Any one of these is a tokenizer transformers (and so vLLM) can load.
_TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",))
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A loadable model folder and the name it is known by (store name or folder name)."""

    path: Path
    name: str
    from_store: bool


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith((".", "~")) or Path(spec).expanduser().is_dir()


def check_model_dir(path: Path) -> Path:
    """`path` if it is a Hugging Face model folder (config, weights, tokenizer); else one clear error."""
    path = path.expanduser()
    if not path.is_dir():
        raise ModelStoreError(
            f"no model folder at {path}",
            hint="give a Hugging Face folder (config.json, weights, tokenizer) or a `kb models list` name",
        )
    if not (path / "config.json").is_file():
        raise ModelStoreError(
            f"{path} is not a Hugging Face model folder: config.json is missing",
            hint="save the model with save_pretrained(), which writes config.json beside the weights",
        )
    if not any(all((path / name).is_file() for name in group) for group in _TOKENIZER_FILES):
        raise ModelStoreError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt)",
            hint="save the tokenizer into the folder too: tokenizer.save_pretrained(folder)",
        )
    if not any(next(path.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
        raise ModelStoreError(
            f"{path} has no weights (*.safetensors or pytorch_model*.bin)",
            hint="save the model with save_pretrained(), which writes the weights",
        )
    return path


def resolve_model(spec: str, store: ModelStore) -> ResolvedModel:
    """The folder for `spec`: a model folder path, or the name of a model in `store`."""
    if looks_like_path(spec):
        path = check_model_dir(Path(spec))
        return ResolvedModel(path, path.name, from_store=False)
    entry = store.get(spec)
    if entry is not None:
        return ResolvedModel(check_model_dir(entry.path), spec, from_store=True)
    if spec in store.catalog:
        raise ModelStoreError(
            f"model {spec} is not in the store ({store.root})",
            hint=f"run `kb models fetch {spec}` first",
        )
    store.known(spec)  # raises the unknown-name error that lists the known ones
    raise AssertionError("unreachable")
