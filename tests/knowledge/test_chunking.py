from __future__ import annotations

import itertools
from datetime import UTC, datetime

from knowledge.chunking import chunk_document
from knowledge.embeddings import Embedder
from knowledge.types import Document, Section


def _doc(*sections: Section) -> Document:
    return Document(
        id="s:d",
        source="s",
        uri="s/d",
        title="D",
        sections=sections,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _words(text: str) -> int:
    return len(text.split())


def test_small_sections_become_one_chunk_each_with_their_citation_data() -> None:
    doc = _doc(
        Section("Alpha beta.", headings=("A",), anchor="a"),
        Section("Gamma.", headings=("A", "B"), anchor="b", page=3),
    )
    chunks = chunk_document(doc, count_tokens=_words, max_tokens=50, overlap=5)
    assert [(c.ordinal, c.text, c.section, c.anchor, c.page) for c in chunks] == [
        (0, "Alpha beta.", "A", "a", None),
        (1, "Gamma.", "A > B", "b", 3),
    ]


def test_long_sections_respect_the_budget_and_overlap() -> None:
    sentences = [f"Sentence number {i} has six words." for i in range(60)]
    paragraphs = "\n\n".join(" ".join(sentences[i : i + 3]) for i in range(0, 60, 3))
    chunks = chunk_document(
        _doc(Section(paragraphs, headings=("Long",))), count_tokens=_words, max_tokens=40, overlap=18
    )
    assert len(chunks) > 5
    assert all(c.token_count <= 40 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.text.split("\n\n")[0] in before.text  # the tail of one chunk starts the next
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_one_giant_sentence_is_cut_into_windows() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    chunks = chunk_document(_doc(Section(text)), count_tokens=_words, max_tokens=100, overlap=0)
    assert len(chunks) == 10
    assert all(c.token_count <= 100 for c in chunks)


def test_chinese_text_without_spaces_is_cut_by_characters(embedder: Embedder) -> None:
    text = "员工每年享有二十五天带薪年假。" * 200
    chunks = chunk_document(
        _doc(Section(text)), count_tokens=embedder.count_tokens, max_tokens=128, overlap=16
    )
    assert len(chunks) > 3
    assert all(c.token_count <= 128 for c in chunks)


def test_real_tokenizer_budget_holds_on_the_handbook_sizes(embedder: Embedder) -> None:
    text = "\n\n".join(["The VPN client must be updated every quarter by the IT Service Desk."] * 80)
    chunks = chunk_document(
        _doc(Section(text)), count_tokens=embedder.count_tokens, max_tokens=200, overlap=32
    )
    assert all(c.token_count <= 200 for c in chunks)


def test_bf16_vectors_match_fp32(embedder: Embedder) -> None:
    import numpy as np

    from knowledge.embeddings import Embedder as Model

    texts = ["How do I reset my password?", "员工每年享有带薪年假。", "The VPN client updates quarterly."]
    fp32 = Model(embedder.path, precision="fp32").encode(texts)
    bf16 = Model(embedder.path, precision="bf16").encode(texts)
    assert bf16.dtype == np.float32
    assert float((fp32 * bf16).sum(axis=1).min()) > 0.999
