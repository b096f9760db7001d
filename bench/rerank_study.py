"""Does a cross-encoder reranker, trained on other projects' FAQs, lift hybrid retrieval on the Python FAQ?

    .venv/bin/python bench/faq_pairs.py --out bench/data/faq-pairs   # training pairs from Debian docs
    .venv/bin/python bench/rerank_study.py prepare       # here: FAQ candidate lists, carried folder
    # on the GPU machine (the `run` tool), carrying bench/data/rerank and bench/data/scale-gpu/model:
    PYTHONUNBUFFERED=1 python3 bench/rerank_study.py device --out $OUT [--headings --no-save] \
        > $OUT/rerank.log 2>&1
    .venv/bin/python bench/rerank_study.py report DIR...  # here: nDCG@10 per variant, CPU latency

A study for issue #3's "+3 nDCG@10 over the better single list" target, which no fusion of the two
lists reaches (bench/router_study.py, bench/hybrid_study.py, bench/fusion_study.py). A reranker is
new relevance evidence: it reads the question and the passage together. None is packaged offline,
so one is trained here, and never on the test set: the training pairs are question headings and
the answers under them from 81 other Debian documentation packages (bench/faq_pairs.py; CPython's
own documentation is excluded, and queries repeating a test query are dropped).

Model: all-MiniLM-L6-v2 (the product's embedding model, the only transformer on hand) with a
linear head on [CLS], fed "[CLS] question [SEP] passage [SEP]" (256 tokens). Training: listwise
softmax cross-entropy over groups of 1 answer + 15 negatives (12 mined by the bi-encoder from all
8,498 sections, excluding the answer and any section containing it, + 3 random). About 10% of the
packages are held out; their questions rerank the bi-encoder's top 20 over all sections, and that
nDCG@10 picks the epoch. Nothing is chosen on the Python FAQ.

Scored on the FAQ: the product's own lists (Retriever.candidates at depth 50, as bench/retrieval.py
fetches them). The variant declared before looking is "rerank": the product hybrid's fused top 20
reordered by the reranker's score; the others are reported beside it.

The training pairs' Debian packages (2.1 GB installed; not part of `make corpora`):
    apt-get install -y --no-install-recommends $(cat bench/faq_pairs_packages.txt)

Finding (2026-11-29, bench/results/rerank_study.json): no. Two runs on the H200:
- the FAQ pairs alone (1,596 training questions; 4 epochs, lr 3e-5, 121 s): held-out packages
  0.611 reranked vs the bi-encoder's 0.638; Python FAQ alone 0.699, declared rerank 0.735;
- plus 4,332 heading -> section pairs from the same packages (`--headings`; 5,928 in all, 4 epochs,
  lr 5e-5, 239 s): held-out 0.681 vs 0.638 (epoch 2), but on the Python FAQ alone only 0.729,
  declared rerank 0.764, best fusion (RRF dense/BM25/reranker 0.5/0.2/0.3) 0.854.
Dense is 0.849 and the product's hybrid 0.860 there. More data helps the reranker on the packages
it was drawn from, not enough to approach the bi-encoder, trained on ~1B pairs, on Python's FAQ.
It would also cost 366 / 429 ms (p50 / p95) per question for 20 candidates on this CPU (one
thread, bf16 on AMX; fp32 909 / 1,015 ms), against the 25 ms the whole retrieval may take.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO / "bench" / "data" / "rerank"
PAIRS = REPO / "bench" / "data" / "faq-pairs"
MODEL = REPO / "bench" / "data" / "scale-gpu" / "model"
DEPTH = 50  # per list, as bench/retrieval.py's tune() fetches them
POOL = 30  # from each list, scored by the reranker
GROUP = 16  # 1 answer + 15 negatives
MAX_TOKENS = 256
PART_BYTES = 15 * 2**20  # the run tool returns files under 16 MiB


# --- prepare (here) ---------------------------------------------------------------------------


def prepare() -> None:
    from bench.common import scratch_kb
    from bench.python_faq import DEFAULT_DOCS, build
    from bench.retrieval import DATA as FAQ
    from knowledge.evaluation import load_queries

    if not (PAIRS / "pairs.jsonl").exists():
        raise SystemExit(f"{PAIRS}/pairs.jsonl is missing: run bench/faq_pairs.py first")
    if not (MODEL / "model.safetensors.xz").exists():
        from bench.scale_gpu import _prepare_model

        _prepare_model()
    if not (FAQ / "queries.jsonl").exists():
        build(DEFAULT_DOCS, FAQ)
    DATA.mkdir(parents=True, exist_ok=True)
    kb = scratch_kb(FAQ / "docs", DATA.parent / "rerank-kb")
    retriever = kb.retriever()
    rows: list[dict[str, Any]] = []
    ids: set[int] = set()
    for labelled in load_queries(FAQ / "queries.jsonl"):
        vector = retriever.embed(labelled.query)
        (dense, bm25), _ = retriever.candidates(labelled.query, vector, DEPTH, mode="hybrid")
        rows.append(
            {"query": labelled.query, "relevant": list(labelled.relevant), "dense": dense, "bm25": bm25}
        )
        ids.update(int(i) for i, _ in [*dense[:POOL], *bm25[:POOL]])
    hits = {hit.chunk_id: hit for hit, _ in kb.store.hits([(i, 0.0) for i in sorted(ids)])}
    for row in rows:
        pool = list(dict.fromkeys(i for i, _ in row["dense"][:POOL] + row["bm25"][:POOL]))
        row["pool"] = pool
    chunks = {str(i): {"text": hits[i].text, "link": hits[i].link} for i in sorted(ids)}
    kb.store.engine.dispose()
    with lzma.open(DATA / "faq_candidates.json.xz", "wt", encoding="utf-8") as handle:
        json.dump({"rows": rows, "chunks": chunks}, handle)
    for name in ("pairs.jsonl", "sections.jsonl"):
        with (PAIRS / name).open("rb") as raw, lzma.open(DATA / f"{name}.xz", "wb", preset=9) as packed:
            shutil.copyfileobj(raw, packed)
    print(f"{len(rows)} FAQ queries, {len(chunks)} candidate chunks; {DATA} ready", file=sys.stderr)


# --- device (GPU machine) -----------------------------------------------------------------------


def _read_jsonl_xz(path: Path) -> list[dict[str, Any]]:
    with lzma.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _package(doc: str) -> str:
    return doc.split("/", 1)[0]


def _split(pairs: list[dict[str, Any]], seed: int = 0) -> tuple[list[int], list[int]]:
    packages = sorted({_package(p["doc"]) for p in pairs})
    random.Random(seed).shuffle(packages)
    held, count = set(), 0
    for package in packages:  # whole packages out, until about a tenth of the pairs
        if count >= len(pairs) // 10:
            break
        if package in ("perl-doc",):  # a fifth of all pairs: never held out whole
            continue
        held.add(package)
        count += sum(_package(p["doc"]) == package for p in pairs)
    train = [i for i, p in enumerate(pairs) if _package(p["doc"]) not in held]
    val = [i for i, p in enumerate(pairs) if _package(p["doc"]) in held]
    return train, val


def _contains(a: str, b: str) -> bool:
    """One text holds the other (a parent section holds its questions' answers)."""
    head = b[:200]
    return bool(head) and head in a


def device(
    out: Path,
    *,
    epochs: int,
    lr: float,
    on: str,
    seed: int,
    headings: bool = False,
    save: bool = True,
    smoke: bool = False,
) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    began = time.perf_counter()
    model_dir = Path("/tmp/rerank-model")
    if not model_dir.exists():
        shutil.copytree(MODEL, model_dir)
        subprocess.run(["xz", "-d", str(model_dir / "model.safetensors.xz")], check=True)
    pairs = _read_jsonl_xz(DATA / "pairs.jsonl.xz")
    sections = [s for s in _read_jsonl_xz(DATA / "sections.jsonl.xz") if len(s["text"].split()) >= 5]
    with lzma.open(DATA / "faq_candidates.json.xz", "rt", encoding="utf-8") as handle:
        faq = json.load(handle)
    if smoke:  # a few of everything, to try the whole step on a CPU
        pairs = pairs[:: len(pairs) // 60][:60]
        docs = {p["doc"] for p in pairs}
        sections = [s for s in sections if s["doc"] in docs][:400]
        faq["rows"] = faq["rows"][:3]
    train, val = _split(pairs, seed)
    if headings:  # every other section's heading as a query for its text, outside the held-out packages
        held = {_package(pairs[i]["doc"]) for i in val}
        asked = {p["source"] for p in pairs}
        for section in sections:
            source = f"{section['doc']}#{section['anchor']}"
            if (
                source not in asked
                and _package(section["doc"]) not in held
                and len(section["heading"].split()) >= 2
                and len(section["text"].split()) >= 15
            ):
                train.append(len(pairs))
                pairs.append(
                    {
                        "query": section["heading"],
                        "positive": section["text"],
                        "source": source,
                        "doc": section["doc"],
                    }
                )
    print(
        f"{len(pairs)} pairs ({len(train)} train, {len(val)} validation), {len(sections)} sections",
        flush=True,
    )

    # Hard negatives: the bi-encoder's nearest sections to each question.
    encoder = SentenceTransformer(str(model_dir), device=on)
    encoder = encoder.half() if on == "cuda" else encoder.float()
    encoder.max_seq_length = MAX_TOKENS
    texts = [s["text"] for s in sections]
    svec = encoder.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_tensor=True)
    qvec = encoder.encode(
        [p["query"] for p in pairs], batch_size=256, normalize_embeddings=True, convert_to_tensor=True
    )
    top = torch.topk(qvec @ svec.T, 40, dim=1).indices.cpu().numpy()
    del encoder

    def is_answer(pair: dict[str, Any], n: int) -> bool:
        text = texts[n]
        return (
            f"{sections[n]['doc']}#{sections[n]['anchor']}" == pair["source"]
            or _contains(text, pair["positive"])
            or _contains(pair["positive"], text)
        )

    def group(i: int) -> list[str]:
        pair = pairs[i]
        hard = [n for n in top[i] if not is_answer(pair, n)][:12]
        while len(hard) < GROUP - 1:
            n = rng.randrange(len(sections))
            if not is_answer(pair, n) and n not in hard:
                hard.append(n)
        return [pair["positive"]] + [texts[n] for n in hard]

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, torch_dtype=torch.float32
    ).to(on)

    def scores(query_texts: list[str], passages: list[str], batch: int = 512) -> np.ndarray:
        model.eval()
        result = []
        with torch.no_grad(), torch.autocast(on, dtype=torch.bfloat16):
            for start in range(0, len(passages), batch):
                enc = tokenizer(
                    query_texts[start : start + batch],
                    passages[start : start + batch],
                    truncation="only_second",
                    max_length=MAX_TOKENS,
                    padding=True,
                    return_tensors="pt",
                ).to(on)
                result.append(model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(result) if result else np.zeros(0)

    def validate() -> dict[str, float]:
        base, reranked = [], []
        for i in val:
            pool = [int(n) for n in top[i][:20]]
            gold = [int(is_answer(pairs[i], n)) for n in pool]
            if not any(gold):  # the answer is not among the 20: reranking cannot move it
                base.append(0.0)
                reranked.append(0.0)
                continue
            s = scores([pairs[i]["query"]] * len(pool), [texts[n] for n in pool])
            order = np.argsort(-s, kind="stable")
            base.append(_binary_ndcg(gold))
            reranked.append(_binary_ndcg([gold[k] for k in order]))
        return {"bi_encoder": round(float(np.mean(base)), 4), "reranked": round(float(np.mean(reranked)), 4)}

    history: list[dict[str, Any]] = [{"epoch": 0, "validation_ndcg@10": validate()}]
    print(history[-1], flush=True)
    batch_groups = 16
    steps = epochs * math.ceil(len(train) / batch_groups)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup)))
    )
    best, best_state = -1.0, None
    for epoch in range(1, epochs + 1):
        model.train()
        order = train[:]
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_groups):
            chunk = order[start : start + batch_groups]
            queries, passages = [], []
            for i in chunk:
                queries += [pairs[i]["query"]] * GROUP
                passages += group(i)
            enc = tokenizer(
                queries,
                passages,
                truncation="only_second",
                max_length=MAX_TOKENS,
                padding=True,
                return_tensors="pt",
            ).to(on)
            with torch.autocast(on, dtype=torch.bfloat16):
                logits = model(**enc).logits[:, 0].float().view(len(chunk), GROUP)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.zeros(len(chunk), dtype=torch.long, device=on)
            )
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        history.append(
            {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "validation_ndcg@10": validate()}
        )
        print(history[-1], flush=True)
        if history[-1]["validation_ndcg@10"]["reranked"] > best:
            best = history[-1]["validation_ndcg@10"]["reranked"]
            best_state = {
                k: v.detach().to("cpu", torch.float16).clone() for k, v in model.state_dict().items()
            }
    assert best_state is not None
    model.load_state_dict({k: v.float() for k, v in best_state.items()})
    chosen = max(history[1:], key=lambda h: h["validation_ndcg@10"]["reranked"])["epoch"]

    faq_scores: dict[str, list[float]] = {}
    for n, row in enumerate(faq["rows"]):
        passages = [faq["chunks"][str(i)]["text"] for i in row["pool"]]
        faq_scores[str(n)] = [round(float(x), 4) for x in scores([row["query"]] * len(passages), passages)]
    (out / "faq_scores.json").write_text(json.dumps(faq_scores))
    (out / "rerank_device.json").write_text(
        json.dumps(
            {
                "pairs": len(pairs),
                "heading_pairs": headings,
                "train": len(train),
                "validation": len(val),
                "sections": len(sections),
                "epochs": epochs,
                "lr": lr,
                "chosen_epoch": chosen,
                "history": history,
                "seconds": round(time.perf_counter() - began, 1),
                "device": torch.cuda.get_device_name() if on == "cuda" else on,
            },
            indent=1,
        )
    )
    if save:
        _save_parts(model, tokenizer, out)
    print(f"done in {time.perf_counter() - began:.0f} s; chosen epoch {chosen}", flush=True)


def _save_parts(model: Any, tokenizer: Any, out: Path) -> None:
    """The reranker in fp16, xz'd and cut into parts the run tool can return."""
    from safetensors.torch import save_file

    folder = Path("/tmp/reranker")
    model.half().save_pretrained(str(folder), safe_serialization=False)
    tokenizer.save_pretrained(str(folder))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "pytorch_model.bin").unlink(missing_ok=True)
    archive = Path("/tmp/reranker.tar.xz")
    subprocess.run(["tar", "-cJf", str(archive), "-C", str(folder.parent), folder.name], check=True)
    data = archive.read_bytes()
    for n in range(0, len(data), PART_BYTES):
        (out / f"reranker.tar.xz.{n // PART_BYTES:02d}").write_bytes(data[n : n + PART_BYTES])


def _binary_ndcg(gains: list[int], k: int = 10) -> float:
    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains[:k]))
    ideal = sum(1 / math.log2(r + 2) for r in range(min(sum(gains), k)))
    return dcg / ideal if ideal else 0.0


# --- report (here) ------------------------------------------------------------------------------


def _ndcg(ids: list[int], relevant: list[str], links: dict[str, str], k: int = 10) -> float:
    """bench/retrieval.py's per-section nDCG@10: one chunk per section, scored by knowledge.evaluation."""
    from knowledge.evaluation import score_links

    ranking = list(dict.fromkeys(links[str(i)] for i in ids))
    return score_links(ranking, tuple(relevant), k=k)["ndcg@10"]


def _rrf(lists: list[list[int]], weights: list[float]) -> list[int]:
    """The product's reciprocal rank fusion with its defaults (k, candidates per list)."""
    from knowledge.retrieval import FusionConfig, reciprocal_rank_fusion

    config = FusionConfig()
    cut = [ranked[: config.candidates] for ranked in lists]
    return [i for i, _ in reciprocal_rank_fusion(cut, weights, k=config.rrf_k)]


def _hybrid(row: dict[str, Any]) -> list[int]:
    """The product's hybrid ranking of one FAQ question, from its two stored lists."""
    from knowledge.retrieval import FusionConfig

    config = FusionConfig()
    lists = [[i for i, _ in row["dense"]], [i for i, _ in row["bm25"]]]
    return _rrf(lists, [config.dense_weight, config.lexical_weight])


def variants(row: dict[str, Any], score: dict[int, float]) -> dict[str, list[int]]:
    dense, bm25 = [i for i, _ in row["dense"]], [i for i, _ in row["bm25"]]
    hybrid = _hybrid(row)
    alone = sorted(row["pool"], key=lambda i: -score[i])
    return {
        "dense": dense,
        "bm25": bm25,
        "hybrid (product RRF)": hybrid,
        "reranker alone (both lists, top 30 each)": alone,
        "rerank: hybrid top 20 reordered (declared)": sorted(hybrid[:20], key=lambda i: -score[i])
        + hybrid[20:],
        "rerank: hybrid top 10 reordered": sorted(hybrid[:10], key=lambda i: -score[i]) + hybrid[10:],
        "RRF of dense, BM25, reranker (1:1:1)": _rrf([dense, bm25, alone], [1, 1, 1]),
        "RRF of dense, BM25, reranker (0.5:0.2:0.3)": _rrf([dense, bm25, alone], [0.5, 0.2, 0.3]),
        "RRF of dense, reranker (1:1)": _rrf([dense, alone], [1, 1]),
    }


def _load_reranker(directory: Path) -> Path:
    folder = DATA.parent / "rerank-model"  # outside DATA, which travels to the device
    if not (folder / "reranker" / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = folder / "reranker.tar.xz"
        archive.write_bytes(b"".join(p.read_bytes() for p in sorted(directory.glob("reranker.tar.xz.*"))))
        subprocess.run(["tar", "-xJf", str(archive), "-C", str(folder)], check=True)
        archive.unlink()
    return folder / "reranker"


def latency(
    model_dir: Path, rows: list[dict[str, Any]], texts: dict[str, str], pool: int = 20
) -> dict[str, Any]:
    """Reranking `pool` candidates for one question on this CPU, as the product would: one torch thread,
    bf16 autocast where the CPU has it, fp32 otherwise, question after question."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from knowledge.embeddings import cpu_has_bf16

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), torch_dtype=torch.float32
    ).eval()
    bf16 = cpu_has_bf16()
    timings: dict[str, list[float]] = {"fp32": [], "bf16": []} if bf16 else {"fp32": []}
    for n, row in enumerate(rows[:40]):
        hybrid = _hybrid(row)[:pool]
        passages = [texts[str(i)] for i in hybrid]
        for name in timings:
            began = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                enc = tokenizer(
                    [row["query"]] * len(passages),
                    passages,
                    truncation="only_second",
                    max_length=MAX_TOKENS,
                    padding=True,
                    return_tensors="pt",
                )
                model(**enc)
            if n >= 3:  # warm-up out of the figures
                timings[name].append((time.perf_counter() - began) * 1000)
    return {
        name: {
            "p50_ms": round(float(np.percentile(v, 50)), 1),
            "p95_ms": round(float(np.percentile(v, 95)), 1),
        }
        for name, v in timings.items()
    } | {"candidates": pool, "questions": len(rows[:40]) - 3, "torch_threads": 1}


def _score_run(faq: dict[str, Any], directory: Path) -> dict[str, Any]:
    """One trained reranker's figures: its training record and nDCG@10 of every variant on the FAQ."""
    scores = json.loads((directory / "faq_scores.json").read_text())
    links = {i: c["link"] for i, c in faq["chunks"].items()}
    table: dict[str, list[float]] = {}
    for n, row in enumerate(faq["rows"]):
        score = dict(zip(row["pool"], scores[str(n)], strict=True))
        for name, ranked in variants(row, score).items():
            table.setdefault(name, []).append(_ndcg(ranked, row["relevant"], links))
    dense = np.array(table["dense"])
    by_variant = {}
    for name, values in table.items():
        diff = np.array(values) - dense
        by_variant[name] = {
            "ndcg@10": round(float(np.mean(values)), 4),
            "minus_dense_points": round(float(diff.mean()) * 100, 2),
            "paired_se_points": round(float(diff.std(ddof=1) / math.sqrt(len(diff))) * 100, 2),
        }
    trained = json.loads((directory / "rerank_device.json").read_text())
    best_validation = max(h["validation_ndcg@10"]["reranked"] for h in trained["history"][1:])
    return {"training": trained, "best_validation_ndcg@10": best_validation, "variants": by_variant}


def report(directories: list[Path]) -> None:
    """Every run's figures; the headline run is the one best on the held-out packages (not on the FAQ)."""
    from bench.common import write_results

    with lzma.open(DATA / "faq_candidates.json.xz", "rt", encoding="utf-8") as handle:
        faq = json.load(handle)
    runs = [_score_run(faq, directory) for directory in directories]
    headline = max(runs, key=lambda run: run["best_validation_ndcg@10"])
    saved = [d for d in directories if any(d.glob("reranker.tar.xz.*"))]
    texts = {i: c["text"] for i, c in faq["chunks"].items()}
    timing = latency(_load_reranker(saved[0]), faq["rows"], texts)  # same architecture in every run
    results = {"queries": len(faq["rows"]), "runs": runs, "latency_here_20_candidates": timing}
    trained, by_variant = headline["training"], headline["variants"]
    declared = by_variant["rerank: hybrid top 20 reordered (declared)"]
    best = max(by_variant.items(), key=lambda item: item[1]["ndcg@10"])
    alone = by_variant["reranker alone (both lists, top 30 each)"]["ndcg@10"]
    p95 = timing.get("bf16", timing["fp32"])["p95_ms"]
    summary = (
        f"{len(runs)} rerankers trained on other Debian docs' questions; the best on held-out packages "
        f"({trained['train']} training pairs, headings included: {trained.get('heading_pairs', False)}) "
        f"reranks them at {headline['best_validation_ndcg@10']} vs the bi-encoder's "
        f"{trained['history'][0]['validation_ndcg@10']['bi_encoder']}. Python FAQ nDCG@10: dense "
        f"{by_variant['dense']['ndcg@10']}, hybrid {by_variant['hybrid (product RRF)']['ndcg@10']}, reranker "
        f"alone {alone}, declared rerank {declared['ndcg@10']} ({declared['minus_dense_points']:+} points "
        f"over dense), best variant '{best[0]}' {best[1]['ndcg@10']} ({best[1]['minus_dense_points']:+} "
        f"+- {best[1]['paired_se_points']}); rerank of 20 on this CPU p95 {p95} ms"
    )
    print(summary)
    print(write_results("rerank_study", results, summary=summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare")
    dev = sub.add_parser("device")
    dev.add_argument("--out", type=Path, required=True)
    dev.add_argument("--epochs", type=int, default=4)
    dev.add_argument("--lr", type=float, default=3e-5)
    dev.add_argument("--on", default="cuda", help="torch device (cpu for a smoke run)")
    dev.add_argument("--seed", type=int, default=0)
    dev.add_argument("--headings", action="store_true", help="add heading -> section pairs to training")
    dev.add_argument("--no-save", action="store_true", help="keep the trained model on the device")
    dev.add_argument("--smoke", action="store_true", help="60 pairs, 400 sections, 3 FAQ queries")
    rep = sub.add_parser("report")
    rep.add_argument("directories", type=Path, nargs="+", help="device output folders, one per run")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare()
    elif args.step == "device":
        args.out.mkdir(parents=True, exist_ok=True)
        device(
            args.out,
            epochs=args.epochs,
            lr=args.lr,
            on=args.on,
            seed=args.seed,
            headings=args.headings,
            save=not args.no_save,
            smoke=args.smoke,
        )
    else:
        report(args.directories)


if __name__ == "__main__":
    main()
