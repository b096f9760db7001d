"""Ingest throughput on real mixed documents, against plain sentence-transformers encoding.

    make corpora && .venv/bin/python bench/ingest.py      # ~15 minutes on 2 cores

The corpus (bench/data/mixed): pages of the Python documentation (HTML, Debian's python3.11-doc),
real PDFs from Debian's texlive-latex-recommended-doc, and the .docx test files inside the
python-docx source distribution. Each configuration runs in its own process (so peak memory is
its own): a full `ingest` (load, chunk, embed, store, index) in fp32 and in bf16, then the raw
`SentenceTransformer.encode` in fp32 over the very same chunk texts, and nDCG@10 on the Python
FAQ set for each precision (quality must not move by more than 0.005).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import child_json, open_kb, write_results
from bench.python_faq import DEFAULT_DOCS, build

DATA = Path(__file__).resolve().parent / "data"
MIXED = DATA / "mixed"
TEXLIVE_DOCS = Path("/usr/share/doc/texlive-doc/latex")


def assemble(html_pages: int, pdfs: int) -> dict[str, int]:
    """Copy the corpus into bench/data/mixed (fresh each run, so the run is reproducible)."""
    shutil.rmtree(MIXED, ignore_errors=True)
    counts = {}
    html = sorted((DEFAULT_DOCS / "library").glob("*.html"))[:html_pages]
    if not html:
        raise SystemExit(f"no HTML under {DEFAULT_DOCS}/library: run `make corpora`")
    (MIXED / "html").mkdir(parents=True)
    for page in html:
        shutil.copy(page, MIXED / "html" / page.name)
    counts["html"] = len(html)
    candidates = sorted(p for p in TEXLIVE_DOCS.rglob("*.pdf") if p.stat().st_size < 1_500_000)
    if not candidates:
        raise SystemExit(f"no PDFs under {TEXLIVE_DOCS}: run `make corpora`")
    (MIXED / "pdf").mkdir()
    step = max(1, len(candidates) // pdfs)
    for pdf in candidates[::step][:pdfs]:
        shutil.copy(pdf, MIXED / "pdf" / f"{pdf.parent.name}-{pdf.name}")
    counts["pdf"] = len(list((MIXED / "pdf").iterdir()))
    (MIXED / "docx").mkdir()
    counts["docx"] = _docx_fixtures(MIXED / "docx")
    return counts


def _docx_fixtures(target: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "python-docx==1.2.0", "-d", tmp],
            check=True,
        )  # fmt: skip
        archive = next(Path(tmp).glob("python_docx-*.tar.gz"))
        shutil.unpack_archive(archive, tmp)
        for docx in Path(tmp).rglob("tests/test_files/*.docx"):
            shutil.copy(docx, target / docx.name)
    return len(list(target.glob("*.docx")))


def worker(precision: str) -> dict[str, Any]:
    """One configuration, in a process of its own."""
    from knowledge.evaluation import evaluate, ingest_throughput, load_queries

    with tempfile.TemporaryDirectory() as scratch:
        kb = open_kb(Path(scratch), database_url="", embedding_precision=precision)
        result = ingest_throughput(kb, MIXED, raw=precision == "fp32")
        result.pop("peak_rss_mb")  # measured at the end of the worker, FAQ run included
        faq = open_kb(Path(scratch) / "faq", database_url="", embedding_precision=precision)
        faq.ingest([DATA / "python-faq" / "docs"])
        queries = load_queries(DATA / "python-faq" / "queries.jsonl")
        result["faq_ndcg@10"] = {m: evaluate(faq, queries, mode=m)["ndcg@10"] for m in ("dense", "hybrid")}
        kb.store.engine.dispose()
        faq.store.engine.dispose()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html-pages", type=int, default=60)
    parser.add_argument("--pdfs", type=int, default=12)
    parser.add_argument("--worker", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    corpus = assemble(args.html_pages, args.pdfs)
    build(DEFAULT_DOCS, DATA / "python-faq")
    runs = {}
    for precision in ("fp32", "bf16"):
        print(f"ingest in {precision}…", file=sys.stderr, flush=True)
        runs[precision] = child_json(__file__, "--worker", precision)
    raw = runs["fp32"]["raw_encode_fp32_chunks_per_s"]
    ratio = round(runs["bf16"]["chunks_per_s"] / raw, 2)
    drift = round(abs(runs["bf16"]["faq_ndcg@10"]["hybrid"] - runs["fp32"]["faq_ndcg@10"]["hybrid"]), 4)
    results = {
        "corpus": corpus,
        "runs": runs,
        "ingest_bf16_vs_raw_fp32_encode_ratio": ratio,
        "ingest_fp32_vs_raw_fp32_encode_ratio": round(runs["fp32"]["chunks_per_s"] / raw, 2),
        "faq_ndcg@10_drift_bf16_vs_fp32": drift,
    }
    summary = (
        f"{runs['bf16']['documents']} docs / {runs['bf16']['chunks']} chunks (HTML, PDF, DOCX): ingest "
        f"{runs['bf16']['chunks_per_s']} chunks/s in bf16 = {ratio}x plain fp32 encode ({raw}/s); "
        f"nDCG@10 drift {drift}; peak RSS {runs['bf16']['peak_rss_mb']} MB"
    )
    print(summary)
    print(write_results("ingest", results, summary=summary))


if __name__ == "__main__":
    main()
