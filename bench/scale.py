"""Scale runs: retrieval latency at 100k chunks, and the vector index at 1M vectors.

    .venv/bin/python bench/scale.py                   # synthetic: ~10 minutes on 2 cores, ~8 GB
    .venv/bin/python bench/scale.py --quick           # 20k chunks / 100k vectors, a smoke run
    .venv/bin/python bench/scale.py --pipeline-only   # the 100k retrieve path only
    # 1M real embeddings (the scale_gpu row): prepare here, embed and sweep on a GPU machine, merge here
    .venv/bin/python bench/scale.py prepare           # bench/data/scale-gpu: text, fp16 model, faiss wheel
    python3 bench/scale.py unpack-wheels /tmp/whl     # on the GPU machine, carrying bench/data/scale-gpu
    python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/whl/*.whl
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/scale.py device --out $OUT 2>&1 | tee $OUT/log
    .venv/bin/python bench/scale.py merge DIR         # results JSON, table row, latency replayed here

The synthetic run stores 100k chunks (random unit vectors, Zipf-distributed text, 10% of documents
restricted) in SQLite and times the real KnowledgeBase's `retrieve` for 200 questions, as a public
user and as one with a group, and where the time goes (`stages`); then flat against IVF over nprobe
at 1M clustered vectors. Synthetic vectors say little about IVF recall (docs/decisions/ivf-at-scale.md),
hence the real-embedding run (bench/scale_ivf.py), whose device step needs a call of its own of
~10 minutes (never pipe its log through grep, which holds the output back).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scale_corpus, scale_ivf
from bench.common import RESULTS, load_average, p50_p95, timed_ms, write_results

if TYPE_CHECKING:
    import sqlalchemy as sa

    from knowledge.service import KnowledgeBase

DIM = 384
CHUNKS_PER_DOC = 100


def _vocabulary(rng: np.random.Generator, size: int = 8000) -> list[str]:
    syllables = "ka lo mi ten var sul pre dor ix ul ben tro ma sik zen".split()
    words = {"".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


def _texts(rng: np.random.Generator, vocabulary: list[str], count: int, length: int) -> list[str]:
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    picks = rng.choice(len(vocabulary), size=(count, length), p=weights)
    return [" ".join(vocabulary[i] for i in row) for row in picks]


def _unit(rng: np.random.Generator, rows: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((rows, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def populate(engine: sa.Engine, chunks: int, rng: np.random.Generator) -> list[str]:
    import sqlalchemy as sa

    from core.models import ChunkRow, DocumentRow

    vocabulary = _vocabulary(rng)
    now = datetime.now(UTC)
    documents = chunks // CHUNKS_PER_DOC
    with engine.begin() as connection:
        connection.execute(
            sa.insert(DocumentRow.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": f"synthetic:doc-{d}",
                    "source": "synthetic",
                    "uri": f"synthetic/doc-{d}",
                    "title": f"Synthetic document {d}",
                    "content_hash": f"{d:064x}",
                    "size_bytes": 0,
                    "acl_groups": ["finance"] if d % 10 == 0 else [],
                    "tags": [],
                    "updated_at": now,
                    "ingested_at": now,
                }
                for d in range(documents)
            ],
        )
    batch = 20_000
    for start in range(0, chunks, batch):
        count = min(batch, chunks - start)
        texts = _texts(rng, vocabulary, count, 120)
        vectors = _unit(rng, count)
        rows = [
            {
                "document_id": f"synthetic:doc-{(start + i) // CHUNKS_PER_DOC}",
                "ordinal": (start + i) % CHUNKS_PER_DOC,
                "text": texts[i],
                "section": "",
                "anchor": "",
                "page": None,
                "token_count": 120,
                "embedding": vectors[i].tobytes(),
            }
            for i in range(count)
        ]
        with engine.begin() as connection:
            connection.execute(sa.insert(ChunkRow.__table__), rows)  # type: ignore[attr-defined]
    return [" ".join(words) for words in (t.split()[:6] for t in _texts(rng, vocabulary, 200, 30))]


def pipeline_latency(chunks: int, rng: np.random.Generator) -> dict[str, Any]:
    from core import db
    from core.settings import load_settings
    from knowledge.service import KnowledgeBase
    from knowledge.types import Question

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), ann_threshold=10 * chunks)
        engine = db.make_engine(settings)
        db.upgrade(engine)
        started = time.perf_counter()
        questions = populate(engine, chunks, rng)
        populated = time.perf_counter()
        kb = KnowledgeBase(settings, engine)
        kb.retriever()  # builds FAISS, BM25 and the catalog from the database
        opened = time.perf_counter()
        result: dict[str, Any] = {
            "chunks": chunks,
            "populate_s": round(populated - started, 1),
            "open_and_build_indexes_s": round(opened - populated, 1),
            "query_encoder": kb.embedder.query_encoder,
            "load_average_before": load_average(),
        }
        for label, groups in (("public_user", ()), ("finance_user", ("finance",))):
            for q in questions[:5]:  # warm up
                kb.retrieve(Question(q, groups=groups), 10)
            latencies = []
            for q in questions:
                hits, ms = timed_ms(kb.retrieve, Question(q, groups=groups), 10)
                latencies.append(ms)
                assert len(hits) == 10
            result[label] = p50_p95(latencies)
        result["stages"] = _stages(kb, questions)
        result["load_average_after"] = load_average()
        engine.dispose()
        return result


def _stages(kb: KnowledgeBase, questions: list[str]) -> dict[str, Any]:
    """Where a public user's retrieve spends its time, stage by stage (p50/p95 ms)."""
    from knowledge.retrieval import fuse

    retriever = kb.retriever()
    stages: dict[str, list[float]] = {
        name: [] for name in ("catalog", "embed", "faiss", "bm25", "fuse_and_rows")
    }
    fetch = max(10, retriever.fusion.candidates)
    for q in questions:
        marks = [time.perf_counter()]
        allowed = retriever.catalog.allowed(())
        marks.append(time.perf_counter())
        vector = retriever.embed(q)
        marks.append(time.perf_counter())
        dense, _ = retriever.candidates(q, vector, fetch, allowed=allowed, mode="dense")
        marks.append(time.perf_counter())
        lexical, _ = retriever.candidates(q, None, fetch, allowed=allowed, mode="bm25")
        marks.append(time.perf_counter())
        fused = fuse(dense + lexical, [0.7, 0.3], retriever.fusion)
        kb.store.hits(fused[:30], query=vector)
        marks.append(time.perf_counter())
        for name, begin, end in zip(stages, marks, marks[1:], strict=False):
            stages[name].append((end - begin) * 1000)
    return {name: p50_p95(values) for name, values in stages.items()}


def _clustered(rng: np.random.Generator, rows: int, centers: npt.NDArray[np.float32], noise: float) -> Any:
    out = np.empty((rows, DIM), dtype=np.float32)
    for start in range(0, rows, 100_000):
        count = min(100_000, rows - start)
        picks = rng.integers(0, len(centers), count)
        out[start : start + count] = centers[picks] + noise * _unit(rng, count)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def ann_comparison(rows: int, rng: np.random.Generator, *, queries: int = 200) -> dict[str, Any]:
    import faiss

    from knowledge.index import VectorIndex, ivf_lists

    faiss.omp_set_num_threads(1)  # as served: KB_FAISS_THREADS=1, one search per request thread
    centers = _unit(rng, 4000)
    data, query = _clustered(rng, rows, centers, 1.2), _clustered(rng, queries, centers, 1.2)
    ids = np.arange(1, rows + 1, dtype=np.int64)
    flat = VectorIndex.build(DIM, model="bench", ids=ids, vectors=data, ann_threshold=rows)
    exact, flat_ms = scale_ivf.searches(flat, query)
    del flat
    begin = time.perf_counter()
    ivf = VectorIndex.build(DIM, model="bench", ids=ids, vectors=data, ann_threshold=0)
    build_s = time.perf_counter() - begin
    swept = scale_ivf.sweep(ivf, query, exact, (8, 16, 32, 64, 128, 256), 2)
    clustered = {"flat": p50_p95(flat_ms), "ivf_build_s": round(build_s, 1), "ivf": swept}
    return {"vectors": rows, "nlist": ivf_lists(rows), "clustered": clustered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step")
    sub.add_parser("prepare", help="the real-embedding run's data, here").add_argument(
        "--pdf-seconds", type=float, default=300
    )
    sub.add_parser("unpack-wheels", help="on the GPU machine").add_argument("destination", type=Path)
    dev = sub.add_parser("device", help="embed and sweep nprobe, on the GPU machine")
    dev.add_argument("--out", type=Path, required=True)
    dev.add_argument("--passages", type=int, default=1_000_000)
    dev.add_argument("--limit-files", type=int, default=20_000, help="installed files read for text")
    dev.add_argument("--on", default="cuda", help="torch device for embedding (cpu for a smoke run)")
    sub.add_parser("merge", help="the device's results, here").add_argument("directory", type=Path)
    parser.add_argument("--quick", action="store_true", help="20k chunks and 100k vectors")
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="time only the 100k-chunk retrieve path; keep the IVF part of the last results file",
    )
    args = parser.parse_args()
    if args.step == "prepare":
        scale_corpus.prepare(args.pdf_seconds)
    elif args.step == "unpack-wheels":
        scale_corpus.unpack_wheels(args.destination)
    elif args.step == "device":
        args.out.mkdir(parents=True, exist_ok=True)
        scale_ivf.device(args.out, args.passages, limit_files=args.limit_files, on=args.on)
    elif args.step == "merge":
        scale_ivf.merge(args.directory)
    if args.step:
        return
    chunks, vectors = (20_000, 100_000) if args.quick else (100_000, 1_000_000)
    rng = np.random.default_rng(7)
    print(f"pipeline at {chunks:,} chunks…", flush=True)
    pipeline = pipeline_latency(chunks, rng)
    print(pipeline, flush=True)
    previous = RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    if args.pipeline_only and previous.exists():
        ann = json.loads(previous.read_text())["ann"]
        ann["measured"] = "in an earlier run (this one used --pipeline-only)"
    else:
        print(f"flat vs IVF at {vectors:,} vectors…", flush=True)
        ann = ann_comparison(vectors, rng)
        print(ann, flush=True)
    clustered = ann["clustered"]
    best = next((s for s in clustered["ivf"] if s["recall@10"] >= 0.95), clustered["ivf"][-1])
    results = {
        "pipeline": pipeline,
        "ann": ann,
        "targets": {
            "pipeline_p95_ms_at_100k": pipeline["public_user"]["p95_ms"],
            "ivf_nprobe_for_recall_0.95": best["nprobe"],
            "ivf_recall@10": best["recall@10"],
            "ivf_p95_ms": best["p95_ms"],
            "flat_p95_ms": clustered["flat"]["p95_ms"],
        },
    }
    p95 = pipeline["public_user"]["p95_ms"]
    load = pipeline["load_average_before"][0]
    stages = pipeline["stages"]
    summary = (
        f"retrieve p95 {p95} ms at {chunks:,} chunks, load {load} ({pipeline['query_encoder']} question "
        f"encoder); at {ann['vectors']:,} clustered vectors IVF nprobe {best['nprobe']}: recall@10 "
        f"{best['recall@10']}, p95 {best['p95_ms']} ms vs flat {clustered['flat']['p95_ms']} ms "
        f"({clustered['flat']['p95_ms'] / max(best['p95_ms'], 1e-9):.0f}x; 1M real embeddings: the "
        f"scale_gpu row); stage p50s: embed {stages['embed']['p50_ms']}, FAISS {stages['faiss']['p50_ms']}, "
        f"BM25 {stages['bm25']['p50_ms']}, fuse+rows {stages['fuse_and_rows']['p50_ms']}, "
        f"ACL mask {stages['catalog']['p50_ms']} ms"
    )
    print(write_results("scale" if not args.quick else "scale_quick", results, summary=summary))


if __name__ == "__main__":
    main()
