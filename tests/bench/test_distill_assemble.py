"""The GPU machine's model assembly: carried pieces put together, checked by sha256, converted once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench.distill import write_pieces
from bench.distill_device import assemble
from tests.core.model_packages import tiny_llama_gguf


def _pieces(tmp_path: Path, name: str, *, sha: str | None = None) -> Path:
    gguf = tiny_llama_gguf(tmp_path / "whole.gguf")
    data = gguf.read_bytes()
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    size = len(data) // 3 + 1
    for i in range(3):
        (pieces / f"{name}.{i:02d}").write_bytes(data[i * size : (i + 1) * size])
    (pieces / "sha256.json").write_text(json.dumps({name: sha or hashlib.sha256(data).hexdigest()}))
    return pieces


def test_the_pieces_make_the_model_once(tmp_path: Path) -> None:
    pieces = _pieces(tmp_path, "tiny")
    folder = tmp_path / "device" / "tiny"
    folder.parent.mkdir()
    assert assemble(pieces, "tiny", folder) is True
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    assert not (folder.parent / "tiny.gguf").exists(), "the assembled GGUF is not kept"
    assert assemble(pieces, "tiny", folder) is False  # already converted: nothing done


def test_pieces_that_do_not_match_their_sha256_are_refused(tmp_path: Path) -> None:
    pieces = _pieces(tmp_path, "tiny", sha="0" * 64)
    folder = tmp_path / "device" / "tiny"
    folder.parent.mkdir()
    with pytest.raises(SystemExit, match="does not match its sha256"):
        assemble(pieces, "tiny", folder)
    assert not (folder / "config.json").exists()


def test_packing_again_at_another_size_leaves_no_stale_piece(tmp_path: Path) -> None:
    gguf = tiny_llama_gguf(tmp_path / "whole.gguf")
    data = gguf.read_bytes()
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    (pieces / "other.00").write_bytes(b"another model's piece")
    assert write_pieces(gguf, "tiny", pieces, len(data) // 5 + 1) == 5
    assert write_pieces(gguf, "tiny", pieces, len(data) // 3 + 1) == 3  # larger pieces: fewer
    assert sorted(p.name for p in pieces.glob("tiny.*")) == ["tiny.00", "tiny.01", "tiny.02"]
    assert (pieces / "other.00").exists()
    (pieces / "sha256.json").write_text(json.dumps({"tiny": hashlib.sha256(data).hexdigest()}))
    folder = tmp_path / "device" / "tiny"
    folder.parent.mkdir()
    assert assemble(pieces, "tiny", folder) is True
