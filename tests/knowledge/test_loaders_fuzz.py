"""Damaged files never crash a loader: each mutation of a real fixture loads or raises LoadError.

Byte flips, cuts, insertions and deletions in the fixture files (and, for Word files, inside the
XML parts of the archive, where a flip would otherwise only break a checksum). Examples are
derandomised so that CI sees the same inputs on every run; raise FUZZ_EXAMPLES locally for a
longer search. Warnings are errors here as everywhere, so a leaked pypdf or bs4 warning fails too.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knowledge.errors import LoadError
from knowledge.loaders import load_file

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
TOKENS = [
    b"\x00",
    b"<",
    b">",
    b'"',
    b"\n",
    b"\r",
    b";",
    b",",
    b"{",
    b"]",
    b"%%EOF",
    b"obj",
    b"/Length 9999",
    b"\xff\xfe",
]

Mutation = tuple[str, int, bytes]


def _mutations() -> st.SearchStrategy[list[Mutation]]:
    position = st.integers(min_value=0, max_value=1 << 20)
    piece = st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=32))
    one = st.one_of(
        st.tuples(
            st.just("flip"), position, st.binary(min_size=1, max_size=1).filter(lambda b: b != b"\x00")
        ),
        st.tuples(st.just("cut"), position, st.just(b"")),
        st.tuples(st.just("insert"), position, piece),
        st.tuples(st.just("delete"), position, st.binary(min_size=1, max_size=16)),
    )
    return st.lists(one, min_size=1, max_size=4)


def _mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    for kind, where, piece in mutations:
        if not data:
            break
        at = where % len(data)
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ piece[0]]) + data[at + 1 :]
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + piece + data[at:]
        else:
            data = data[:at] + data[at + len(piece) :]
    return data


def _mutate_docx_part(data: bytes, part: str, mutations: list[Mutation]) -> bytes:
    """The Word file with one XML part mutated and the archive rebuilt, checksums and all."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            content = source.read(entry)
            target.writestr(
                entry.filename, _mutate(content, mutations) if entry.filename == part else content
            )
    return out.getvalue()


def _check(name: str, data: bytes) -> None:
    """Load the bytes as file `name`: documents that make sense, or a LoadError; nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            documents = load_file(path, root=path.parent, source="docs", max_bytes=1_000_000, on_note=print)
        except LoadError as exc:
            refusal = str(exc)
        else:
            refusal = ""
    if refusal:
        assert refusal.startswith(f"{path}: "), "a refusal names the file first"
        return
    assert documents, "a loader returns documents or raises"
    ids = [document.id for document in documents]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"docs:{name}") for i in ids)
    for document in documents:
        assert document.title.strip() and document.sections
        assert all(section.text.strip() for section in document.sections)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FILES = [
    "sphinx-module.html",
    "sphinx-legacy.html",
    "intranet-article.html",
    "expenses.pdf",
    "laptop-return.docx",
    "directory.csv",
    "faq.jsonl",
    "records.json",
]


@pytest.mark.parametrize("name", FILES)
def test_mutated_files_load_or_raise_load_error(name: str) -> None:
    original = (FIXTURES / name).read_bytes()

    @FUZZ
    @given(mutations=_mutations())
    def run(mutations: list[Mutation]) -> None:
        _check(name, _mutate(original, mutations))

    run()


@pytest.mark.parametrize(
    "part", ["word/document.xml", "word/styles.xml", "docProps/core.xml", "docProps/custom.xml"]
)
def test_word_files_with_damaged_xml_load_or_raise_load_error(part: str) -> None:
    original = (FIXTURES / "laptop-return.docx").read_bytes()

    @FUZZ
    @given(mutations=_mutations())
    def run(mutations: list[Mutation]) -> None:
        _check("laptop-return.docx", _mutate_docx_part(original, part, mutations))

    run()
