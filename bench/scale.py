"""Scale run: query latency at 100k chunks through the whole retrieval path, and the vector
index at 1M vectors, exact (flat) against approximate (IVF) with recall@10 against exact.

    .venv/bin/python bench/scale.py            # about 10 minutes on 2 cores, ~8 GB of memory
    .venv/bin/python bench/scale.py --quick    # 20k / 100k, for a smoke run

Part 1 stores 100k synthetic chunks (random unit vectors, Zipf-distributed generated text, 10%
of documents restricted) in SQLite, opens the real KnowledgeBase and times `retrieve` (embed +
dense + BM25 + fuse + ACL filter + row fetch) for 200 questions, as a public user and as a
user with one group; then the question encoder (ONNX, knowledge/onnx_encoder.py) against the
torch path it replaced, turn by turn; then the retrieve changes of session 3 against the code
before them (`before_after`: row fetch, cached ACL mask, post-filtered dense search) and where
the time goes now (`stages`). Part 2 compares IndexFlatIP and IndexIVFFlat at 1M vectors over
nprobe, on clustered vectors (like real embeddings, which gather by topic) and on uniform random ones
(no neighbourhood structure at all: the worst case for any approximate index).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlmodel import Session, col

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results
from core import db
from core.models import ChunkRow, DocumentRow, as_utc
from core.settings import load_settings
from knowledge.catalog import Allowed, ChunkCatalog
from knowledge.embeddings import Embedder
from knowledge.index import VectorIndex, ivf_lists
from knowledge.retrieval import FusionConfig, Retriever, fuse
from knowledge.service import KnowledgeBase
from knowledge.store import Store
from knowledge.types import Hit, Question

DIM = 384
CHUNKS_PER_DOC = 100


def _vocabulary(rng: np.random.Generator, size: int = 8000) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ten",
        "var",
        "sul",
        "pre",
        "dor",
        "ix",
        "ul",
        "ben",
        "tro",
        "ma",
        "sik",
        "zen",
    ]
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
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        }
        for label, groups in (("public_user", ()), ("finance_user", ("finance",))):
            for q in questions[:5]:  # warm up
                kb.retrieve(Question(q, groups=groups), 10)
            latencies = []
            for q in questions:
                begin = time.perf_counter()
                hits = kb.retrieve(Question(q, groups=groups), 10)
                latencies.append((time.perf_counter() - begin) * 1000)
                assert len(hits) == 10
            result[label] = _percentiles(latencies)
        # The tuned fusion against the one used before it (RRF k=60, 1:1, 50 candidates per list),
        # taking turns question by question so that both see the same machine state.
        tuned, previous = kb.retriever(), kb.retriever()
        previous.fusion = FusionConfig(
            method="rrf", rrf_k=60, dense_weight=1.0, lexical_weight=1.0, candidates=50
        )
        turns: dict[str, list[float]] = {"tuned": [], "previous": []}
        for q in questions:
            for name, retriever in (("tuned", tuned), ("previous", previous)):
                begin = time.perf_counter()
                retriever.search(Question(q), 10)
                turns[name].append((time.perf_counter() - begin) * 1000)
        result["fusion_side_by_side"] = {name: _percentiles(values) for name, values in turns.items()}
        # The flat index stored in fp16 (the default, KB_INDEX_PRECISION) against fp32, on the same
        # database and questions, taking turns as above.
        exact_settings = load_settings(
            data_dir=Path(tmp) / "fp32",
            database_url=settings.database_url,
            ann_threshold=10 * chunks,
            index_precision="fp32",
        )
        stores = {settings.index_precision: kb, "fp32": KnowledgeBase(exact_settings, engine)}
        stores["fp32"].retriever()
        storage: dict[str, list[float]] = {name: [] for name in stores}
        for q in questions:
            for name, base in stores.items():
                begin = time.perf_counter()
                base.retrieve(Question(q), 10)
                storage[name].append((time.perf_counter() - begin) * 1000)
        result["index_precision_side_by_side"] = {name: _percentiles(v) for name, v in storage.items()}
        result.update(_query_encoders(kb, questions))
        result["before_after"] = _before_after(kb, questions)
        result["stages"] = _stages(kb, questions)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        engine.dispose()
        return result


class _OrmStore(Store):
    """`Store.hits` as it was before it selected plain columns: whole ORM rows (kept here only
    to time the change side by side)."""

    def hits(self, scored: list[tuple[int, float]], *, query: Any = None) -> list[tuple[Hit, list[str]]]:
        if not scored:
            return []
        ids = [chunk_id for chunk_id, _ in scored]
        with Session(self.engine) as session:
            statement = (
                sa.select(ChunkRow, DocumentRow)
                .join(DocumentRow, col(DocumentRow.id) == col(ChunkRow.document_id))
                .where(col(ChunkRow.id).in_(ids))
            )
            rows = {chunk.id: (chunk, doc) for chunk, doc in session.execute(statement)}
        result = []
        for chunk_id, score in scored:
            if chunk_id not in rows:
                continue
            chunk, doc = rows[chunk_id]
            if query is not None:
                score = float(np.frombuffer(chunk.embedding, dtype=np.float32) @ query)
            hit = Hit(
                chunk_id=chunk_id, score=score, text=chunk.text, section=chunk.section,
                anchor=chunk.anchor, page=chunk.page, document_id=doc.id, title=doc.title,
                uri=doc.uri, updated_at=as_utc(doc.updated_at),
            )  # fmt: skip
            result.append((hit, list(doc.acl_groups)))
        return result


class _SelectorAlways(Retriever):
    """Dense search as it was before: always FAISS's per-vector selector when anything is excluded."""

    def _dense(self, query: Any, fetch: int, allowed: Allowed | None) -> list[tuple[int, float]]:
        return self.index.search(query, fetch, allowed=None if allowed is None else allowed.bitmap)


def _before_after(kb: KnowledgeBase, questions: list[str]) -> dict[str, Any]:
    """This change against the code before it, turn by turn on the same indexes: ORM rows in
    `hits`, a catalog mask and FAISS bitmap recomputed for every question and the FAISS selector
    always, against plain column tuples, the cached mask and bitmap, and the bitmap checked after
    an unfiltered search when most chunks are allowed. Both as a public user (10% of documents
    restricted, so a 100k-entry mask) and as a finance user (nothing excluded)."""
    after = kb.retriever()
    before = _SelectorAlways(
        _OrmStore(kb.store.engine),
        kb.embedder,
        after.index,
        after.lexical,
        ChunkCatalog(kb.store.catalog_rows(), cache_size=0),
        fusion=after.fusion,
    )
    out: dict[str, Any] = {}
    for label, groups in (("public_user", ()), ("finance_user", ("finance",))):
        times: dict[str, list[float]] = {"before": [], "after": []}
        for q in questions[:5]:
            for retriever in (before, after):
                retriever.search(Question(q, groups=groups), 10)
        for turn, q in enumerate(questions):
            order = [("before", before), ("after", after)]
            for name, retriever in order if turn % 2 == 0 else order[::-1]:
                begin = time.perf_counter()
                hits = retriever.search(Question(q, groups=groups), 10)
                times[name].append((time.perf_counter() - begin) * 1000)
                assert len(hits) == 10
        out[label] = {name: _percentiles(values) for name, values in times.items()}
        out[label]["p50_ratio_before_over_after"] = round(
            out[label]["before"]["p50_ms"] / out[label]["after"]["p50_ms"], 3
        )
    same = all(
        [h.chunk_id for h in before.search(Question(q), 10)]
        == [h.chunk_id for h in after.search(Question(q), 10)]
        for q in questions[:50]
    )
    out["same_hits_on_50_questions"] = same
    return out


def _stages(kb: KnowledgeBase, questions: list[str]) -> dict[str, Any]:
    """Where a public user's retrieve spends its time now, stage by stage (p50/p95 ms)."""
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
    return {name: _percentiles(values) for name, values in stages.items()}


def _query_encoders(kb: KnowledgeBase, questions: list[str]) -> dict[str, Any]:
    """The configured question encoder (ONNX unless onnxruntime is missing) against the torch path
    used before it (sentence-transformers, one thread), taking turns question by question: the
    whole retrieve, then the embedding alone."""
    settings = kb.settings
    torch_path = Embedder(
        settings.embedding_model,
        batch_size=settings.embedding_batch_size,
        threads=settings.torch_threads,
        precision=settings.embedding_precision,
        query_encoder="torch",
    )
    embedders = {"configured": kb.embedder, "torch": torch_path}
    retrievers = {name: kb.retriever() for name in embedders}
    retrievers["torch"].embedder = torch_path
    for q in questions[:5]:  # warm up
        for retriever in retrievers.values():
            retriever.search(Question(q), 10)
    retrieve: dict[str, list[float]] = {name: [] for name in embedders}
    embed: dict[str, list[float]] = {name: [] for name in embedders}
    for q in questions:
        for name, retriever in retrievers.items():
            begin = time.perf_counter()
            retriever.search(Question(q), 10)
            retrieve[name].append((time.perf_counter() - begin) * 1000)
        for name, embedder in embedders.items():
            begin = time.perf_counter()
            embedder.encode([q])
            embed[name].append((time.perf_counter() - begin) * 1000)
    similarity = min(float(kb.embedder.encode([q])[0] @ torch_path.encode([q])[0]) for q in questions[:50])
    return {
        "embed_only": _percentiles(embed["configured"]),
        "query_encoder_side_by_side": {
            "configured": kb.embedder.query_encoder,
            "retrieve": {name: _percentiles(values) for name, values in retrieve.items()},
            "embed_only": {name: _percentiles(values) for name, values in embed.items()},
            "min_cosine_to_torch": round(similarity, 6),
        },
    }


def _clustered(rng: np.random.Generator, rows: int, centers: npt.NDArray[np.float32], noise: float) -> Any:
    out = np.empty((rows, DIM), dtype=np.float32)
    for start in range(0, rows, 100_000):
        count = min(100_000, rows - start)
        picks = rng.integers(0, len(centers), count)
        out[start : start + count] = centers[picks] + noise * _unit(rng, count)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def ann_comparison(rows: int, rng: np.random.Generator, *, queries: int = 200) -> dict[str, Any]:
    faiss.omp_set_num_threads(1)  # as served: KB_FAISS_THREADS=1, one search per request thread
    centers = _unit(rng, 4000)
    datasets = {
        "clustered": (_clustered(rng, rows, centers, 1.2), _clustered(rng, queries, centers, 1.2)),
        "uniform_random": (_unit(rng, rows), _unit(rng, queries)),
    }
    out: dict[str, Any] = {"vectors": rows, "nlist": ivf_lists(rows)}
    ids = np.arange(1, rows + 1, dtype=np.int64)
    for name, (data, query) in datasets.items():
        flat = VectorIndex.build(DIM, model="bench", ids=ids, vectors=data, ann_threshold=rows)
        exact, flat_ms = [], []
        for q in query:
            begin = time.perf_counter()
            exact.append({i for i, _ in flat.search(q, 10)})
            flat_ms.append((time.perf_counter() - begin) * 1000)
        del flat
        begin = time.perf_counter()
        ivf = VectorIndex.build(DIM, model="bench", ids=ids, vectors=data, ann_threshold=0)
        build_s = time.perf_counter() - begin
        sweep = []
        for nprobe in (8, 16, 32, 64, 128, 256):
            ivf.nprobe = nprobe
            recalls, ms = [], []
            for q, truth in zip(query, exact, strict=True):
                begin = time.perf_counter()
                found = {i for i, _ in ivf.search(q, 10)}
                ms.append((time.perf_counter() - begin) * 1000)
                recalls.append(len(found & truth) / 10)
            sweep.append(
                {"nprobe": nprobe, "recall@10": round(float(np.mean(recalls)), 4), **_percentiles(ms)}
            )
        out[name] = {"flat": _percentiles(flat_ms), "ivf_build_s": round(build_s, 1), "ivf": sweep}
        del ivf
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k chunks and 100k vectors")
    parser.add_argument("--pipeline-chunks", type=int, default=100_000)
    parser.add_argument("--ann-vectors", type=int, default=1_000_000)
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="time only the 100k-chunk retrieve path; keep the IVF part of the last results file",
    )
    args = parser.parse_args()
    chunks, vectors = (20_000, 100_000) if args.quick else (args.pipeline_chunks, args.ann_vectors)
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
    side = pipeline["fusion_side_by_side"]
    storage = pipeline["index_precision_side_by_side"]
    uniform = max(s["recall@10"] for s in ann["uniform_random"]["ivf"])
    encoders = pipeline["query_encoder_side_by_side"]
    load = pipeline["load_average_before"][0]
    change, stages = pipeline["before_after"]["public_user"], pipeline["stages"]
    summary = (
        f"retrieve p95 {p95} ms at {chunks:,} chunks, load {load} (embed alone "
        f"{pipeline['embed_only']['p95_ms']} ms; {encoders['configured']} vs torch question encoder, "
        f"turn by turn: retrieve p95 {encoders['retrieve']['configured']['p95_ms']} vs "
        f"{encoders['retrieve']['torch']['p95_ms']} ms, embed p50 "
        f"{encoders['embed_only']['configured']['p50_ms']} vs "
        f"{encoders['embed_only']['torch']['p50_ms']} ms; "
        f"tuned vs previous fusion, turn by turn: p95 {side['tuned']['p95_ms']} vs "
        f"{side['previous']['p95_ms']} ms; fp16 vs fp32 flat index: p95 {storage['fp16']['p95_ms']} vs "
        f"{storage['fp32']['p95_ms']} ms); at {ann['vectors']:,} clustered vectors IVF nprobe "
        f"{best['nprobe']}: recall@10 {best['recall@10']}, "
        f"p95 {best['p95_ms']} ms vs flat {clustered['flat']['p95_ms']} ms "
        f"({clustered['flat']['p95_ms'] / max(best['p95_ms'], 1e-9):.0f}x); on uniform random vectors "
        f"(no neighbourhoods) IVF recall@10 is only {uniform} even at nprobe 256 (1M real embeddings: "
        f"the scale_gpu row); session 3 retrieve changes vs the code before, turn by turn, public "
        f"user: p50 {change['after']['p50_ms']} vs {change['before']['p50_ms']} ms, p95 "
        f"{change['after']['p95_ms']} vs {change['before']['p95_ms']} ms; stage p50s: embed "
        f"{stages['embed']['p50_ms']}, FAISS {stages['faiss']['p50_ms']}, BM25 {stages['bm25']['p50_ms']}, "
        f"fuse+rows {stages['fuse_and_rows']['p50_ms']}, ACL mask {stages['catalog']['p50_ms']} ms"
    )
    print(write_results("scale" if not args.quick else "scale_quick", results, summary=summary))


if __name__ == "__main__":
    main()
