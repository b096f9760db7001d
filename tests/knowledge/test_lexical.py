from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge.errors import VectorIndexError
from knowledge.lexical import LexicalIndex, tokenize


def test_english_is_stemmed_and_stop_words_dropped() -> None:
    assert tokenize("How do I reset my passwords? Resetting works!") == ["reset", "password", "reset", "work"]


def test_chinese_becomes_characters_and_bigrams() -> None:
    assert tokenize("年假天数") == ["年", "假", "天", "数", "年假", "假天", "天数"]


def test_mixed_language_text_keeps_both() -> None:
    terms = tokenize("VPN 连接")
    assert "vpn" in terms
    assert "连接" in terms


def test_search_ranks_by_bm25_and_respects_the_mask(tmp_path: Path) -> None:
    index = LexicalIndex.build(
        [10, 20, 30],
        [
            "Reset your password in the HaldenID portal",
            "VPN client setup guide",
            "员工每年享有二十五天带薪年假",
        ],
    )
    assert index.search("resetting passwords", 5)[0][0] == 10
    assert index.search("年假有多少天", 5)[0][0] == 30
    assert index.search("the and of", 5) == []
    assert [i for i, _ in index.search("password VPN", 5, mask=np.array([False, True, True]))] == [20]
    index.save(tmp_path)
    assert LexicalIndex.load(tmp_path).search("VPN", 1)[0][0] == 20


def test_empty_index_and_corrupt_file(tmp_path: Path) -> None:
    assert LexicalIndex.build([], []).search("anything", 3) == []
    (tmp_path / "lexical.pkl").write_bytes(b"not a pickle")
    with pytest.raises(VectorIndexError, match="cannot load the lexical index"):
        LexicalIndex.load(tmp_path)


@pytest.mark.parametrize(("given", "expected"), [(None, "cpu"), ("cuda", "cuda")])
def test_importing_the_index_keeps_jax_off_the_gpu_unless_the_operator_chose(
    given: str | None, expected: str
) -> None:
    # bm25s runs a JAX operation on import where JAX is installed: on a GPU machine that would
    # reserve most of the card before any training starts.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    if given is not None:
        env["JAX_PLATFORMS"] = given
    code = "import os, knowledge.lexical; print(os.environ['JAX_PLATFORMS'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
