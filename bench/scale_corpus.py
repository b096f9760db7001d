"""The corpus of the 1M real-embedding IVF run (`bench/scale.py prepare` and `device`).

`prepare` writes bench/data/scale-gpu: the text of Debian's Python 3.11 and TeX Live documentation,
the embedding model in fp16 and the faiss wheel for the GPU machine's Python 3.12, all compressed to
keep it and the working tree under the 64 MiB carry limit. `build_passages` (on the GPU machine)
cuts 40-160-word sentence windows from that text and the docstrings and prose files of the packages
installed there, then makes up any shortfall with passages of 4-8 sentences drawn in order from a
24-sentence neighbourhood of one document. Queries: the 175 Python FAQ questions and 825 sentences
of held-out documents (1 in 20 never enters the index).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data" / "scale-gpu"
PYTHON_DOCS = Path("/usr/share/doc/python3.11-doc/html")
TEXLIVE_DOCS = Path("/usr/share/doc/texlive-doc")
FAQ_QUERIES = REPO / "bench" / "data" / "python-faq" / "queries.jsonl"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_SPACE = re.compile(r"\s+")


def _html_paragraphs(path: Path) -> list[str]:
    import lxml.html  # type: ignore[import-untyped]

    tree = lxml.html.parse(str(path))
    nodes = tree.xpath("//p | //dd/p | //li[not(.//p)] | //dt | //pre")
    return [_SPACE.sub(" ", node.text_content()).strip() for node in nodes]


def _pdf_paragraphs(path: Path, deadline: float) -> list[str]:
    from pypdf import PdfReader

    out = []
    try:
        for page in PdfReader(str(path)).pages:
            if time.monotonic() > deadline:
                break
            out += [p for p in re.split(r"\n\s*\n|(?<=[.!?])\n", page.extract_text() or "")]
    except Exception as exc:  # a damaged PDF costs its own text only
        print(f"skip {path.name}: {exc}", file=sys.stderr)
    return [_SPACE.sub(" ", p).strip() for p in out]


def prepare(pdf_seconds: float) -> None:
    """Write DATA/corpus.jsonl.xz, DATA/model (fp16, xz) and DATA/whl (faiss for Python 3.12)."""
    DATA.mkdir(parents=True, exist_ok=True)
    documents: list[dict[str, Any]] = []
    for page in sorted(PYTHON_DOCS.rglob("*.html")):
        if "genindex" in page.name or "modindex" in page.name:
            continue
        documents.append({"doc": f"python/{page.relative_to(PYTHON_DOCS)}", "paras": _html_paragraphs(page)})
    for path in sorted(TEXLIVE_DOCS.rglob("*")):
        if path.suffix in (".tex", ".md", ".txt"):
            text = path.read_text(encoding="utf-8", errors="replace")
            documents.append(
                {"doc": f"texlive/{path.relative_to(TEXLIVE_DOCS)}", "paras": text.split("\n\n")}
            )
    deadline = time.monotonic() + pdf_seconds
    for path in sorted(TEXLIVE_DOCS.rglob("*.pdf"), key=lambda p: p.stat().st_size):
        if time.monotonic() > deadline:
            break
        documents.append(
            {"doc": f"texlive/{path.relative_to(TEXLIVE_DOCS)}", "paras": _pdf_paragraphs(path, deadline)}
        )
    if not FAQ_QUERIES.exists():  # a fresh machine: build the FAQ set from python3.11-doc first
        from bench.python_faq import build

        build(PYTHON_DOCS, FAQ_QUERIES.parent)
    faq = [json.loads(line)["query"] for line in FAQ_QUERIES.read_text().splitlines() if line.strip()]
    with lzma.open(DATA / "corpus.jsonl.xz", "wt", encoding="utf-8", preset=9) as handle:
        handle.write(json.dumps({"faq_queries": faq}) + "\n")
        for document in documents:
            document["paras"] = [p for p in document["paras"] if len(p.split()) >= 4]
            if document["paras"]:
                handle.write(json.dumps(document, ensure_ascii=False) + "\n")
    _prepare_model()
    _prepare_wheels()
    print(f"{len(documents)} documents; {DATA} holds {_size_mb(DATA):.1f} MB", file=sys.stderr)


def _prepare_wheels() -> None:
    """The faiss wheel for the GPU machine's Python 3.12, from PyPI, stored uncompressed then xz'd
    (about 4.5 MB smaller than the deflated wheel)."""
    import zipfile
    from importlib.metadata import version

    platforms = [f"manylinux_2_{glibc}_x86_64" for glibc in (28, 27, 17)] + ["manylinux2014_x86_64"]
    folder = DATA / "whl"
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
        + [arg for platform in platforms for arg in ("--platform", platform)]
        + [f"faiss-cpu=={version('faiss-cpu')}"],
        check=True,
    )
    for wheel in folder.glob("*.whl"):
        stored = wheel.with_suffix(".stored")
        with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as out:
            for info in source.infolist():
                out.writestr(info, source.read(info), compress_type=zipfile.ZIP_STORED)
        with stored.open("rb") as raw, lzma.open(f"{wheel}.xz", "wb", preset=9) as packed:
            shutil.copyfileobj(raw, packed)
        stored.unlink()
        wheel.unlink()


def unpack_wheels(destination: Path) -> None:
    """On the GPU machine: the carried `*.whl.xz` back into installable wheels (stdlib only)."""
    destination.mkdir(parents=True, exist_ok=True)
    for packed in (DATA / "whl").glob("*.whl.xz"):
        with lzma.open(packed, "rb") as source, (destination / packed.name[:-3]).open("wb") as out:
            shutil.copyfileobj(source, out)


def _prepare_model() -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from knowledge.embeddings import default_model_path

    source, target = default_model_path(), DATA / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("model.safetensors", "README.md", "*.json.bak")
    )
    state = load_file(str(source / "model.safetensors"))
    half = {name: tensor.to(torch.float16).contiguous() for name, tensor in state.items()}
    save_file(half, str(target / "model.safetensors"), metadata={"format": "pt"})
    subprocess.run(["xz", "-6", "-T2", "-f", str(target / "model.safetensors")], check=True)


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _sentences(paragraphs: list[str]) -> list[str]:
    out = []
    for paragraph in paragraphs:
        out += [s.strip() for s in _SENTENCE.split(paragraph) if len(s.split()) >= 3 and _clean(s)]
    return out


def _windows(sentences: list[str], *, low: int = 40, high: int = 160) -> list[str]:
    """Consecutive sentences packed into passages of `low`-`high` words, as chunking would."""
    passages: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in sentences:
        count = len(sentence.split())
        if current and words + count > high:
            if words >= low:
                passages.append(" ".join(current))
            current, words = [], 0
        current.append(sentence)
        words += count
    if current and words >= low:
        passages.append(" ".join(current))
    return passages


def _installed_file(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".py":
            nodes = ast.walk(ast.parse(text))
            kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            text = "\n\n".join(d for n in nodes if isinstance(n, kinds) and (d := ast.get_docstring(n)))
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return None
    sentences = _sentences([_SPACE.sub(" ", p).strip() for p in text.split("\n\n")])  # in the worker
    return {"doc": f"site/{path.parent.name}/{path.name}", "sentences": sentences} if sentences else None


def _installed_texts(limit_files: int) -> list[dict[str, Any]]:
    """Docstrings and prose files of the Python packages on this machine: real technical text."""
    from multiprocessing import get_context

    paths = sysconfig.get_paths()
    roots = {Path(paths["purelib"]), Path(paths["platlib"])}
    suffixes = (".py", ".md", ".rst", ".txt")
    files = sorted({f for root in roots for f in root.rglob("*") if f.suffix in suffixes and f.is_file()})
    print(f"reading {min(len(files), limit_files):,} of {len(files):,} installed files", flush=True)
    # spawn, not fork: a fork after torch/FAISS started OpenMP threads can hang the workers.
    with get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        found = pool.map(_installed_file, files[:limit_files], chunksize=64)
    return [document for document in found if document is not None]


def _clean(sentence: str) -> bool:
    """Sentences, not tables of contents or index lines."""
    words = sentence.split()
    return (
        ". . ." not in sentence
        and "...." not in sentence
        and sum(w.isalpha() for w in words) >= 0.6 * len(words)
    )


def build_passages(
    target: int, *, seed: int = 0, limit_files: int = 400_000
) -> tuple[list[str], list[str], dict[str, int]]:
    rng = random.Random(seed)
    with lzma.open(DATA / "corpus.jsonl.xz", "rt", encoding="utf-8") as handle:
        faq = json.loads(handle.readline())["faq_queries"]
        documents = [json.loads(line) for line in handle]
    documents = [d for d in documents if "genindex" not in d["doc"] and "modindex" not in d["doc"]]
    shipped = len(documents)
    documents += _installed_texts(limit_files) if limit_files else []
    print(f"{len(documents):,} documents", flush=True)
    base: list[list[str]] = []
    held_out: list[str] = []
    for document in documents:
        sentences = document.get("sentences") or _sentences(document["paras"])
        if int(hashlib.sha1(document["doc"].encode()).hexdigest(), 16) % 20 == 0:
            held_out += [s for s in sentences if 6 <= len(s.split()) <= 30]
        elif sentences:
            base.append(sentences)
    passages = list(dict.fromkeys(p for sentences in base for p in _windows(sentences)))
    print(f"{len(passages):,} real windows from {sum(map(len, base)):,} sentences", flush=True)
    real = len(passages)
    seen = set(passages)
    cumulative = list(itertools.accumulate(len(s) for s in base))  # documents drawn by sentence count
    while len(passages) < target:
        for pick in rng.choices(range(len(base)), cum_weights=cumulative, k=target - len(passages)):
            sentences = base[pick]
            start = rng.randrange(max(1, len(sentences) - 24))
            hood = sentences[start : start + 24]
            chosen = sorted(rng.sample(range(len(hood)), min(len(hood), rng.randint(4, 8))))
            passage = " ".join(hood[i] for i in chosen)
            if len(passage.split()) >= 25 and passage not in seen:
                seen.add(passage)
                passages.append(passage)
    rng.shuffle(held_out)
    queries = faq + held_out[: 1000 - len(faq)]
    counts = {
        "shipped_documents": shipped,
        "installed_documents": len(documents) - shipped,
        "real_windows": min(real, target),
        "recombined": max(0, target - real),
        "queries_faq": len(faq),
        "queries_held_out": len(queries) - len(faq),
    }
    return passages[:target], queries, counts
