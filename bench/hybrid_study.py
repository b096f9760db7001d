"""Can anything beyond plain RRF lift hybrid retrieval on the Python FAQ? A study, not a product default.

    nice -n 19 .venv/bin/python bench/hybrid_study.py   # first run ingests both sets (~5 min), then ~minutes

Same protocol as bench/fusion_study.py: every method is tuned ONLY on the pseudo-queries from the
tutorial and HOWTOs (bench/python_pseudo.py, 392 section headings, headings removed from the
indexed copy), then its single pick is scored once on the 175 FAQ questions. Methods:

a. dense pseudo-relevance feedback into BM25 (RM3: the query's term weights mixed with terms
   drawn from the top-m dense hits; that weighted query through BM25; RRF with dense);
b. BM25 document expansion from the embedding side: each chunk's BM25 text gains (down-weighted)
   the terms of its nearest-neighbour chunks by embedding, or of its adjacent chunks; then RRF;
c. per-query adaptive fusion weight from the agreement of the two rankings (top-10 overlap and
   the dense score gap), its mapping fitted on the pseudo-queries;
d. cheap extras from the literature: distribution-based score fusion (z-scores, "DBSF"), fusion
   of the full score vectors instead of truncated lists, section-level score aggregation, and
   corpus-graph smoothing of the fused scores (the cluster hypothesis, as in graph-based
   adaptive re-ranking).

Everything runs from cached arrays (chunk embeddings, query embeddings from the product's own
query path, chunk texts) under /tmp/hybrid-cache, and BM25 is re-implemented as a sparse
matrix with bm25s's defaults (checked against the product's list on every query). Results go
to bench/results/hybrid_study.json (no BENCHMARKS.md row: a study, not a product figure).

Finding (2026-11-29, 175 FAQ / 392 pseudo queries): nothing beats the product's RRF on the FAQ by
more than the paired standard error (best: full z-score fusion + 3 embedding-nearest expansion
terms, +0.6 +- 1.1 points). The pseudo-queries (short headings, BM25 > dense there) pull every
tuned dense/lexical balance toward BM25, which costs 1-2 points on the FAQ (dense >> BM25); the
methods that keep the product's balance gain nothing. Full z-score fusion is the one robust
alternative: +4.0 +- 1.1 on the pseudo-queries, equal on the FAQ, flatter in its weight than RRF.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from scipy import sparse  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import python_faq, python_pseudo
from bench.common import machine, scratch_kb
from knowledge.lexical import tokenize

CACHE = Path("/tmp/hybrid-cache")
OUT = Path(__file__).resolve().parent / "results" / "hybrid_study.json"
Floats = npt.NDArray[np.float64]
T = TypeVar("T")
DEPTH = 20  # candidates per list, as the product's default
RRF_K, DENSE_W = 10, 0.7  # the product's default fusion


# --------------------------------------------------------------------------- data


@dataclass
class Corpus:
    """One scratch knowledge base flattened to arrays: chunks in id order, and its queries."""

    name: str
    ids: npt.NDArray[np.int64]
    links: list[str]  # hit.link: uri#anchor, the unit that is cited and de-duplicated
    documents: list[str]
    texts: list[str]  # what BM25 indexes (title, section, text), as the product does
    vectors: npt.NDArray[np.float32]  # unit chunk embeddings
    queries: list[str]
    relevant: list[tuple[str, ...]]
    query_vectors: npt.NDArray[np.float32]
    product: list[tuple[list[int], list[int]]]  # the product's own dense and BM25 id lists, depth 20
    link_ids: npt.NDArray[np.int64] = field(init=False)
    gold: list[npt.NDArray[np.bool_]] = field(init=False)  # per query: which link ids are relevant

    def __post_init__(self) -> None:
        names = {link: i for i, link in enumerate(dict.fromkeys(self.links))}
        self.link_ids = np.asarray([names[link] for link in self.links], dtype=np.int64)
        uris = [link.split("/", 1)[1] if "/" in link else link for link in names]
        self.gold = []
        for entries in self.relevant:
            hit = np.zeros(len(names), dtype=bool)
            for slot, uri in enumerate(uris):
                hit[slot] = any(uri == e if "#" in e else uri.split("#", 1)[0] == e for e in entries)
            self.gold.append(hit)


def _extract(name: str, docs: Path, queries_file: Path) -> Corpus:
    """Ingest `docs` into a scratch knowledge base under CACHE (kept) and flatten it."""
    from knowledge.evaluation import load_queries
    from knowledge.sync import embedding_text

    kb = scratch_kb(docs, CACHE / f"kb-{name}")
    rows = [row for batch in kb.store.iter_chunk_texts() for row in batch]
    ids = [row[0] for row in rows]
    hits = {hit.chunk_id: hit for hit, _ in kb.store.hits([(i, 0.0) for i in ids])}
    vectors = np.concatenate([v for _, v in kb.store.iter_embeddings()]).astype(np.float32)
    labelled = load_queries(queries_file)
    retriever = kb.retriever()
    query_vectors, product = [], []
    for item in labelled:
        vector = retriever.embed(item.query)
        (dense, lexical), _ = retriever.candidates(item.query, vector, DEPTH, mode="hybrid")
        query_vectors.append(vector)
        product.append(([i for i, _ in dense], [i for i, _ in lexical]))
    kb.store.engine.dispose()
    return Corpus(
        name=name,
        ids=np.asarray(ids, dtype=np.int64),
        links=[hits[i].link for i in ids],
        documents=[hits[i].document_id for i in ids],
        texts=[embedding_text(t, s, x) for _, t, s, x in rows],
        vectors=vectors,
        queries=[q.query for q in labelled],
        relevant=[q.relevant for q in labelled],
        query_vectors=np.stack(query_vectors).astype(np.float32),
        product=product,
    )


def load_corpus(name: str) -> Corpus:
    """The cached flattening of one query set, built (and its knowledge base ingested) on first use."""
    arrays, meta = CACHE / f"{name}.npz", CACHE / f"{name}.json"
    if arrays.exists() and meta.exists():
        data, info = np.load(arrays), json.loads(meta.read_text())
        return Corpus(
            name=name,
            ids=data["ids"],
            links=info["links"],
            documents=info["documents"],
            texts=info["texts"],
            vectors=data["vectors"],
            queries=info["queries"],
            relevant=[tuple(r) for r in info["relevant"]],
            query_vectors=data["query_vectors"],
            product=[(list(d), list(b)) for d, b in info["product"]],
        )
    folder = CACHE / "data" / name
    if name == "faq":
        python_faq.build(python_faq.DEFAULT_DOCS, folder)
    else:
        python_pseudo.build(python_faq.DEFAULT_DOCS, folder)
    corpus = _extract(name, folder / "docs", folder / "queries.jsonl")
    np.savez(arrays, ids=corpus.ids, vectors=corpus.vectors, query_vectors=corpus.query_vectors)
    info = {
        "links": corpus.links,
        "documents": corpus.documents,
        "texts": corpus.texts,
        "queries": corpus.queries,
        "relevant": [list(r) for r in corpus.relevant],
        "product": corpus.product,
    }
    meta.write_text(json.dumps(info))
    return corpus


# --------------------------------------------------------------------------- BM25 as a sparse matrix


class Lexicon:
    """Term counts of a corpus's chunk texts (the product's tokenizer), and BM25 over them.

    bm25s's default ("lucene") scoring: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    tf part = tf / (tf + k1 (1 - b + b dl / avgdl)), k1 = 1.5, b = 0.75; a query term that
    occurs twice counts twice. Counts may be fractional here (document expansion)."""

    def __init__(self, texts: list[str]) -> None:
        self.vocab: dict[str, int] = {}
        rows, cols, values = [], [], []
        for row, text in enumerate(texts):
            counts: dict[int, int] = {}
            for term in tokenize(text):
                column = self.vocab.setdefault(term, len(self.vocab))
                counts[column] = counts.get(column, 0) + 1
            rows += [row] * len(counts)
            cols += list(counts)
            values += list(counts.values())
        shape = (len(texts), len(self.vocab))
        self.tf = sparse.csr_matrix((np.asarray(values, float), (rows, cols)), shape=shape)
        self.df = np.asarray((self.tf > 0).sum(axis=0)).ravel().astype(float)
        n = len(texts)
        self.idf = np.log(1 + (n - self.df + 0.5) / (self.df + 0.5))

    def query(self, text: str) -> Floats:
        """A query's term weights over the vocabulary (its counts; unknown terms dropped)."""
        vector = np.zeros(len(self.vocab))
        for term in tokenize(text):
            if term in self.vocab:
                vector[self.vocab[term]] += 1
        return vector


def bm25_matrix(tf: sparse.csr_matrix, *, k1: float = 1.5, b: float = 0.75) -> sparse.csr_matrix:
    """Chunk x term BM25 weights of a (possibly expanded) count matrix; df from the same counts."""
    tf = sparse.csr_matrix(tf, dtype=float)
    n = tf.shape[0]
    df = np.asarray((tf > 0).sum(axis=0)).ravel().astype(float)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    length = np.asarray(tf.sum(axis=1)).ravel()
    norm = k1 * (1 - b + b * length / length.mean())
    out = tf.tocoo()
    data = out.data / (out.data + norm[out.row]) * idf[out.col]
    return sparse.csr_matrix((data, (out.row, out.col)), shape=tf.shape)


# --------------------------------------------------------------------------- rankings and nDCG

Ranked = list[tuple[int, float]]  # (chunk position, score), best first


def top(scores: Floats, depth: int = DEPTH, *, positive: bool = False) -> Ranked:
    """The `depth` best positions of a score vector (only scores > 0 with `positive`, as BM25)."""
    count = min(depth, int(np.count_nonzero(scores > 0)) if positive else len(scores))
    if count <= 0:
        return []
    best = np.argpartition(-scores, count - 1)[:count]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in best]


def rrf(lists: list[Ranked], weights: Iterable[float], k: float = RRF_K) -> Ranked:
    fused: dict[int, float] = {}
    for items, weight in zip(lists, weights, strict=True):
        for rank, (i, _) in enumerate(items, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def zfuse(lists: list[Ranked], weights: Iterable[float], *, dbsf: bool) -> Ranked:
    """Score fusion after per-list normalization: z-scores, or DBSF's (mean +- 3 sd) -> [0, 1]."""
    fused: dict[int, float] = {}
    for items, weight in zip(lists, weights, strict=True):
        if not items:
            continue
        values = np.asarray([s for _, s in items])
        mean, sd = values.mean(), values.std() or 1.0
        for i, s in items:
            value = (s - mean) / sd
            if dbsf:
                value = (value + 3) / 6
            fused[i] = fused.get(i, 0.0) + weight * value
    return sorted(fused.items(), key=lambda item: -item[1])


def ndcg(corpus: Corpus, query: int, ranked: Iterable[tuple[int, float]] | Iterable[int]) -> float:
    """nDCG@10 with one entry per section (link), as Retriever.search returns and bench/retrieval scores."""
    gold = corpus.gold[query]
    seen: set[int] = set()
    dcg = 0.0
    for item in ranked:
        position = item[0] if isinstance(item, tuple) else item
        link = int(corpus.link_ids[position])
        if link in seen:
            continue
        seen.add(link)
        if gold[link]:
            dcg += 1 / math.log2(len(seen) + 1)
        if len(seen) == 10:
            break
    wanted = min(len(corpus.relevant[query]), 10)
    return dcg / sum(1 / math.log2(r + 1) for r in range(1, wanted + 1))


# --------------------------------------------------------------------------- per-corpus state


_memo: dict[tuple[Any, ...], Any] = {}


def memo(key: tuple[Any, ...], make: Callable[[], T]) -> T:
    """A value computed once per key (per state and parameters) and reused by every config."""
    if key not in _memo:
        _memo[key] = make()
    return cast(T, _memo[key])


@dataclass
class State:
    """What every method reuses: the BM25 index, score matrices and neighbour lists."""

    corpus: Corpus
    lexicon: Lexicon
    bm25: sparse.csr_matrix  # chunk x term weights of the plain index
    query_terms: Floats  # query x term counts
    dense: Floats  # query x chunk cosine
    lexical: Floats  # query x chunk BM25
    neighbours: npt.NDArray[np.int64]  # chunk x 10 nearest other chunks by embedding
    similarity: Floats  # their cosines

    @classmethod
    def of(cls, corpus: Corpus) -> State:
        lexicon = Lexicon(corpus.texts)
        bm25 = bm25_matrix(lexicon.tf)
        terms = np.stack([lexicon.query(q) for q in corpus.queries])
        dense = corpus.query_vectors.astype(float) @ corpus.vectors.astype(float).T
        lexical = np.asarray((bm25 @ terms.T).T)
        cosine = corpus.vectors.astype(float) @ corpus.vectors.astype(float).T
        np.fill_diagonal(cosine, -np.inf)
        neighbours = np.argsort(-cosine, axis=1, kind="stable")[:, :10]
        similarity = np.take_along_axis(cosine, neighbours, axis=1)
        return cls(corpus, lexicon, bm25, terms, dense, lexical, neighbours, similarity)

    @property
    def product_dense(self) -> list[list[int]]:
        position = {int(c): i for i, c in enumerate(self.corpus.ids)}
        return memo(("pdense", id(self)), lambda: [[position[c] for c in d] for d, _ in self.corpus.product])

    @property
    def size(self) -> int:
        return len(self.corpus.queries)

    def dense_list(self, q: int) -> Ranked:
        """The product's dense top-20 order (its fp16 index orders near-ties differently from fp32
        in ~3% of queries, which moves RRF by up to 0.002), with fp32 cosines as scores."""
        return memo(
            ("dense", id(self), q), lambda: [(i, float(self.dense[q, i])) for i in self.product_dense[q]]
        )

    def lexical_list(self, q: int, scores: Floats | None = None) -> Ranked:
        return top(self.lexical[q] if scores is None else scores, positive=True)


def check_against_product(state: State) -> dict[str, float]:
    """Share of queries whose dense / BM25 top-20 here equals the product's list (same set, same order
    except for ties), and the mean top-20 overlap: the re-implementation must be the product's."""
    corpus, position = state.corpus, {int(c): i for i, c in enumerate(state.corpus.ids)}
    same = {"dense": 0, "bm25": 0}
    overlap = {"dense": 0.0, "bm25": 0.0}
    for q, (dense, lexical) in enumerate(corpus.product):
        for name, theirs, ours in (
            ("dense", dense, top(state.dense[q])),
            ("bm25", lexical, state.lexical_list(q)),
        ):
            mine = [i for i, _ in ours]
            theirs_pos = [position[c] for c in theirs]
            same[name] += mine == theirs_pos
            overlap[name] += len(set(mine) & set(theirs_pos)) / max(len(theirs_pos), 1)
    return {
        **{f"{n}_identical_share": round(v / state.size, 3) for n, v in same.items()},
        **{f"{n}_top20_overlap": round(v / state.size, 3) for n, v in overlap.items()},
    }


# --------------------------------------------------------------------------- methods
# Each method maps (state, config) to the per-query nDCG@10 of every query of the state's corpus.

Config = dict[str, Any]
Scorer = Callable[[State, Config], Floats]
WEIGHTS = [round(float(w), 2) for w in np.arange(0.3, 0.951, 0.05)]


def per_query(state: State, rank: Callable[[int], Iterable[Any]]) -> Floats:
    return np.asarray([ndcg(state.corpus, q, rank(q)) for q in range(state.size)])


def single(state: State, config: Config) -> Floats:
    if config["list"] == "dense":
        return per_query(state, state.dense_list)
    return per_query(state, state.lexical_list)


def plain_rrf(state: State, config: Config) -> Floats:
    w, k = config["dense_weight"], config.get("k", RRF_K)
    return per_query(state, lambda q: rrf([state.dense_list(q), state.lexical_list(q)], (w, 1 - w), k))


def normalized(state: State, config: Config) -> Floats:
    """Score fusion: z-scores or DBSF over the two top-20 lists, or z-scores over all chunks."""
    w = config["dense_weight"]
    if config["norm"] == "full":

        def rank(q: int) -> Ranked:
            return top(w * _z(state.dense[q]) + (1 - w) * _z(state.lexical[q]), 3 * DEPTH)

        return per_query(state, rank)
    if config["norm"] == "full_union":  # the same scores, candidates only from the two top-20 lists

        def union(q: int) -> Ranked:
            pool = np.asarray(list(dict.fromkeys(i for i, _ in state.dense_list(q) + state.lexical_list(q))))
            total = w * _z(state.dense[q])[pool] + (1 - w) * _z(state.lexical[q])[pool]
            return [(int(pool[j]), float(total[j])) for j in np.argsort(-total, kind="stable")]

        return per_query(state, union)
    if config["norm"] == "dense_pool":  # BM25 only re-orders the dense top-20, adds no candidate

        def rerank(q: int) -> Ranked:
            pool = np.asarray([i for i, _ in state.dense_list(q)])
            total = w * _z(state.dense[q])[pool] + (1 - w) * _z(state.lexical[q])[pool]
            return [(int(pool[j]), float(total[j])) for j in np.argsort(-total, kind="stable")]

        return per_query(state, rerank)
    dbsf = config["norm"] == "dbsf"
    return per_query(
        state, lambda q: zfuse([state.dense_list(q), state.lexical_list(q)], (w, 1 - w), dbsf=dbsf)
    )


def _z(values: Floats) -> Floats:
    spread = float(values.std()) or 1.0
    return np.asarray((values - values.mean()) / spread, dtype=np.float64)


# (a) dense pseudo-relevance feedback into BM25 ------------------------------------------------


def prf_scores(state: State, m: int, terms: int, keep: float, idf_select: bool) -> Floats:
    """Query x chunk BM25 scores of RM3-expanded queries, the feedback set being the top-m dense hits:
    P(w|R) = mean over them of tf(w, d) / |d| (times idf with `idf_select`, so that the chosen
    terms are distinctive ones), the best `terms` of it normalized, mixed with the query's own
    normalized term weights as keep * query + (1 - keep) * expansion."""

    def make() -> Floats:
        tf = state.lexicon.tf
        length = np.asarray(tf.sum(axis=1)).ravel()
        relative = sparse.diags(1 / np.maximum(length, 1)) @ tf
        out = np.zeros_like(state.lexical)
        for q in range(state.size):
            feedback = np.argsort(-state.dense[q], kind="stable")[:m]
            model = np.asarray(relative[feedback].mean(axis=0)).ravel()
            if idf_select:
                model = model * state.lexicon.idf
            chosen = np.argsort(-model, kind="stable")[:terms]
            expansion = np.zeros_like(model)
            expansion[chosen] = model[chosen]
            expansion /= expansion.sum() or 1.0
            own = state.query_terms[q]
            own = own / own.sum() if own.sum() else own
            out[q] = state.bm25 @ (keep * own + (1 - keep) * expansion)
        return out

    return memo(("prf", id(state), m, terms, keep, idf_select), make)


def fused(state: State, q: int, lexical: list[Floats], w: float, fusion: str) -> Ranked:
    """Dense fused with one or more lexical score vectors (sharing the lexical weight): RRF of the
    top-20 lists (k = 10), or z-scores over all chunks ("zfull")."""
    share = (1 - w) / len(lexical)
    if fusion == "zfull":
        total = w * _z(state.dense[q])
        for scores in lexical:
            total = total + share * _z(scores)
        return top(total, 3 * DEPTH)
    lists = [state.dense_list(q)] + [state.lexical_list(q, scores) for scores in lexical]
    return rrf(lists, (w, *[share] * len(lexical)))


def prf(state: State, config: Config) -> Floats:
    scores = prf_scores(state, config["m"], config["terms"], config["keep"], config["idf_select"])
    w, fusion, plain = config["dense_weight"], config["fusion"], config["also_plain_bm25"]
    return per_query(
        state,
        lambda q: fused(state, q, [scores[q], state.lexical[q]] if plain else [scores[q]], w, fusion),
    )


# (b) BM25 document expansion from the embedding side ------------------------------------------


def expanded_scores(state: State, source: str, n: int, alpha: float, top_terms: int) -> Floats:
    """Query x chunk BM25 over counts tf + alpha * sum of the neighbours' counts, each neighbour
    contributing only its `top_terms` most distinctive terms (tf x idf; 0 = all). Neighbours are
    the n nearest chunks by embedding ("knn"), or the chunks just before and after in the same
    document ("adjacent")."""

    def make() -> Floats:
        tf = state.lexicon.tf.tocsr()
        if top_terms:
            weighted = (tf @ sparse.diags(state.lexicon.idf)).tocsr()
            rows, cols, vals = [], [], []
            for row in range(tf.shape[0]):
                start, end = weighted.indptr[row], weighted.indptr[row + 1]
                order = np.argsort(-weighted.data[start:end], kind="stable")[:top_terms]
                columns = weighted.indices[start:end][order]
                rows += [row] * len(columns)
                cols += columns.tolist()
                vals += np.asarray(tf[row, columns].todense()).ravel().tolist()
            donor = sparse.csr_matrix((vals, (rows, cols)), shape=tf.shape)
        else:
            donor = tf
        links = neighbour_matrix(state, source, n)
        expanded = tf + alpha * (links @ donor)
        return np.asarray((bm25_matrix(expanded) @ state.query_terms.T).T)

    return memo(("exp", id(state), source, n, alpha, top_terms), make)


def neighbour_matrix(state: State, source: str, n: int) -> sparse.csr_matrix:
    chunks = len(state.corpus.ids)
    rows, cols = [], []
    if source == "knn":
        for row in range(chunks):
            rows += [row] * n
            cols += state.neighbours[row, :n].tolist()
    else:  # adjacent chunks of one document (ids follow document order)
        documents = state.corpus.documents
        for row in range(chunks):
            for other in (row - 1, row + 1):
                if 0 <= other < chunks and documents[other] == documents[row]:
                    rows.append(row)
                    cols.append(other)
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(chunks, chunks))


def docexp(state: State, config: Config) -> Floats:
    scores = expanded_scores(state, config["source"], config["n"], config["alpha"], config["top_terms"])
    w, fusion = config["dense_weight"], config["fusion"]
    return per_query(state, lambda q: fused(state, q, [scores[q]], w, fusion))


# (e) query term weights and expansion terms from the embedding of each index term ------------


def term_vectors(state: State) -> Floats:
    """Unit embedding of every index term (its most frequent surface word in the corpus), in the
    lexicon's column order; an index-time table, so a query only looks its terms up."""
    path = CACHE / f"{state.corpus.name}-terms.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=float)
    from knowledge.embeddings import default_model_path, get_embedder
    from knowledge.lexical import _WORD, STOP_WORDS, _stemmer

    surface: dict[str, dict[str, int]] = {}
    for text in state.corpus.texts:
        words = [w.group(0).lower() for w in _WORD.finditer(text)]
        words = [w.replace("\u2019", "'") for w in words if w not in STOP_WORDS]
        for word, stem in zip(words, _stemmer().stemWords(words), strict=True):
            forms = surface.setdefault(stem, {})
            forms[word] = forms.get(word, 0) + 1
    names = sorted(state.lexicon.vocab, key=state.lexicon.vocab.__getitem__)
    words = [max(surface[n], key=surface[n].__getitem__) if n in surface else n for n in names]
    embedder = get_embedder(default_model_path(), 64, 1, "fp32", query_encoder="torch")
    vectors = np.asarray(embedder.encode(words), dtype=float)
    np.save(path, vectors)
    return vectors


def term_scores(state: State, power: float, expand: int, gain: float) -> Floats:
    """Query x chunk BM25 where each query term counts max(0, cos(term, query)) ** power times
    (power 0: plain counts), plus the `expand` index terms nearest the query vector at
    gain * their cosine (an embedding-side query expansion)."""

    def make() -> Floats:
        similarity = np.asarray(state.corpus.query_vectors, dtype=float) @ term_vectors(state).T
        weights = state.query_terms * (np.maximum(similarity, 0) ** power if power else 1.0)
        if expand:
            for q in range(state.size):
                near = np.argsort(-similarity[q], kind="stable")[:expand]
                weights[q, near] += gain * np.maximum(similarity[q, near], 0)
        return np.asarray((state.bm25 @ weights.T).T)

    return memo(("terms", id(state), power, expand, gain), make)


def term_weighting(state: State, config: Config) -> Floats:
    scores = term_scores(state, config["power"], config["expand"], config["gain"])
    w, fusion = config["dense_weight"], config["fusion"]
    return per_query(state, lambda q: fused(state, q, [scores[q]], w, fusion))


# (c) adaptive fusion weight from the agreement of the two rankings -----------------------------

ADAPTIVE_WEIGHTS = [round(float(w), 2) for w in np.arange(0.3, 1.001, 0.05)]  # 1.0: dense alone


def rrf_table(state: State) -> Floats:
    """Query x weight nDCG of RRF(k=10) at each dense weight of ADAPTIVE_WEIGHTS."""

    def make() -> Floats:
        return np.stack([plain_rrf(state, {"dense_weight": w}) for w in ADAPTIVE_WEIGHTS], axis=1)

    return memo(("table", id(state)), make)


def agreement(state: State, feature: str) -> Floats:
    """Per-query features of the two lists: top-10 overlap, the dense top-1 - top-2 gap, the dense
    top-1 cosine, and the BM25 top-1 score over the top-10 mean."""

    def make() -> Floats:
        out = []
        for q in range(state.size):
            dense, lexical = state.dense_list(q), state.lexical_list(q)
            if feature == "overlap":
                out.append(len({i for i, _ in dense[:10]} & {i for i, _ in lexical[:10]}) / 10)
            elif feature == "dense_gap":
                out.append(dense[0][1] - dense[1][1])
            elif feature == "query_terms":
                out.append(float(state.query_terms[q].sum()))
            elif feature == "dense_top":
                out.append(dense[0][1])
            else:
                values = [s for _, s in lexical[:10]] or [0.0]
                out.append(float(values[0] / (np.mean(values) or 1.0)))
        return np.asarray(out)

    return memo(("feature", id(state), feature), make)


def adaptive(state: State, config: Config) -> Floats:
    """Dense weight w_low below a feature threshold and w_high at or above it (one step)."""
    table, values = rrf_table(state), agreement(state, config["feature"])
    low, high = ADAPTIVE_WEIGHTS.index(config["w_low"]), ADAPTIVE_WEIGHTS.index(config["w_high"])
    column = np.where(values < config["threshold"], low, high)
    return table[np.arange(state.size), column]


# (d) extras: section aggregation, corpus-graph smoothing ---------------------------------------


def sections(state: State, config: Config) -> Floats:
    """RRF, then each section scored by its best chunk plus gamma times the rest of its chunks."""
    w, gamma, links = config["dense_weight"], config["gamma"], state.corpus.link_ids

    def rank(q: int) -> list[int]:
        total: dict[int, float] = {}
        best: dict[int, int] = {}
        for i, score in rrf([state.dense_list(q), state.lexical_list(q)], (w, 1 - w)):
            link = int(links[i])
            if link in best:
                total[link] += gamma * score
            else:
                best[link], total[link] = i, score
        return [best[link] for link in sorted(total, key=lambda link: -total[link])]

    return per_query(state, rank)


def smoothed(state: State, config: Config) -> Floats:
    """Full-corpus z-score fusion, then each chunk's score plus beta times the cosine-weighted mean
    fused score of its n nearest chunks (the cluster hypothesis, as in graph adaptive re-ranking)."""
    w, beta, n = config["dense_weight"], config["beta"], config["n"]
    neighbours, similarity = state.neighbours[:, :n], np.maximum(state.similarity[:, :n], 0)
    share = similarity / np.maximum(similarity.sum(axis=1, keepdims=True), 1e-9)

    def rank(q: int) -> Ranked:
        fused = w * _z(state.dense[q]) + (1 - w) * _z(state.lexical[q])
        return top(fused + beta * (fused[neighbours] * share).sum(axis=1), 3 * DEPTH)

    return per_query(state, rank)


def context_dense(state: State, section: float, page: float) -> Floats:
    """Query x chunk cosine plus `section` x the cosine with the chunk's section centroid and
    `page` x the cosine with its page's centroid (means of stored chunk vectors: no re-encoding)."""

    def make() -> Floats:
        vectors = state.corpus.vectors.astype(float)
        out = state.dense.copy()
        for weight, groups in ((section, state.corpus.link_ids), (page, _page_ids(state.corpus))):
            if not weight:
                continue
            members = sparse.csr_matrix((np.ones(len(groups)), (groups, np.arange(len(groups)))))
            centroid = np.asarray(members @ vectors)
            centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
            out += weight * (state.corpus.query_vectors.astype(float) @ centroid.T)[:, groups]
        return out

    return memo(("ctx", id(state), section, page), make)


def _page_ids(corpus: Corpus) -> npt.NDArray[np.int64]:
    names = {d: i for i, d in enumerate(dict.fromkeys(corpus.documents))}
    return np.asarray([names[d] for d in corpus.documents], dtype=np.int64)


def hierarchical(state: State, config: Config) -> Floats:
    """Dense scores with section and page context, fused with BM25 (RRF k=10 or full z-scores)."""
    dense, w = context_dense(state, config["section"], config["page"]), config["dense_weight"]

    def rank(q: int) -> Ranked:
        if config["fusion"] == "zfull":
            return top(w * _z(dense[q]) + (1 - w) * _z(state.lexical[q]), 3 * DEPTH)
        if config["fusion"] == "dense_only":
            return top(dense[q])
        return rrf([top(dense[q]), state.lexical_list(q)], (w, 1 - w))

    return per_query(state, rank)


def grid(**axes: list[Any]) -> list[Config]:
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


FUSIONS = {"fusion": ["rrf", "zfull"], "dense_weight": [0.5, 0.6, 0.7, 0.8]}
PRODUCT_FUSION = {"fusion": ["rrf"], "dense_weight": [DENSE_W]}


def with_product_fusion(
    name: str, scorer: Scorer, tail: dict[str, list[Any]] | None = None, **axes: list[Any]
) -> dict[str, tuple[Scorer, list[Config]]]:
    """Method `name` tuned over FUSIONS, and `name`_rrf_default: the same axes under the product's RRF.

    `tail` holds axes that vary after the fusion's (the grid's order decides ties).
    """
    return {
        name: (scorer, grid(**axes, **FUSIONS, **(tail or {}))),
        f"{name}_rrf_default": (scorer, grid(**axes, **PRODUCT_FUSION, **(tail or {}))),
    }


METHODS: dict[str, tuple[Scorer, list[Config]]] = {
    "dense": (single, [{"list": "dense"}]),
    "bm25": (single, [{"list": "bm25"}]),
    "rrf_product": (plain_rrf, [{"dense_weight": DENSE_W, "k": RRF_K}]),
    "rrf_retuned": (plain_rrf, grid(dense_weight=WEIGHTS, k=[5, 10, 20, 60])),
    "d_score_fusion": (
        normalized,
        grid(norm=["z", "dbsf", "full", "full_union", "dense_pool"], dense_weight=WEIGHTS),
    ),
    **with_product_fusion(
        "a_dense_prf_rm3",
        prf,
        m=[3, 5, 10],
        terms=[10, 25, 50],
        keep=[0.3, 0.5, 0.7],
        idf_select=[False, True],
        tail={"also_plain_bm25": [False, True]},
    ),
    **with_product_fusion(
        "b_docexp_knn", docexp, source=["knn"], n=[1, 3, 5], alpha=[0.1, 0.25, 0.5, 1.0], top_terms=[0, 20]
    ),
    **with_product_fusion(
        "b_docexp_adjacent",
        docexp,
        source=["adjacent"],
        n=[2],
        alpha=[0.1, 0.25, 0.5, 1.0],
        top_terms=[0, 20],
    ),
    **with_product_fusion(
        "e_term_weights_and_expansion",
        term_weighting,
        power=[0, 1, 2, 4],
        expand=[0, 3, 10],
        gain=[0.25, 1.0],
    ),
    "d_hierarchical_dense": (
        hierarchical,
        grid(
            section=[0, 0.25, 0.5, 1.0],
            page=[0, 0.1, 0.25, 0.5],
            fusion=["rrf", "zfull"],
            dense_weight=[0.5, 0.6, 0.7, 0.8],
        ),
    ),
    "d_hierarchical_dense_only": (
        hierarchical,
        grid(
            section=[0, 0.25, 0.5, 1.0], page=[0, 0.1, 0.25, 0.5], fusion=["dense_only"], dense_weight=[1.0]
        ),
    ),
    "c_adaptive_weight": (
        adaptive,
        [
            {"feature": f, "threshold": t, "w_low": lo, "w_high": hi}
            for f, thresholds in (
                ("overlap", [0.1, 0.2, 0.3, 0.4, 0.5]),
                ("dense_gap", [0.01, 0.02, 0.04, 0.06, 0.1]),
                ("dense_top", [0.4, 0.5, 0.6, 0.7]),
                ("bm25_peak", [1.2, 1.4, 1.6, 2.0]),
                ("query_terms", [2, 3, 4, 5, 6]),
            )
            for t in thresholds
            for lo in ADAPTIVE_WEIGHTS
            for hi in ADAPTIVE_WEIGHTS
        ],
    ),
    "d_section_aggregation": (sections, grid(gamma=[0.1, 0.25, 0.5, 1.0], dense_weight=WEIGHTS)),
    "d_graph_smoothing": (
        smoothed,
        grid(beta=[0.1, 0.25, 0.5, 1.0], n=[3, 5, 10], dense_weight=[0.5, 0.6, 0.7, 0.8, 0.9]),
    ),
}


# --------------------------------------------------------------------------- the study


def paired(a: Floats, b: Floats) -> dict[str, float]:
    """Mean of a - b in nDCG points, its paired standard error, and how many queries moved."""
    diff = a - b
    return {
        "points": round(float(diff.mean()) * 100, 2),
        "paired_se_points": round(float(diff.std(ddof=1) / math.sqrt(len(diff))) * 100, 2),
        "queries_better": int((diff > 0).sum()),
        "queries_worse": int((diff < 0).sum()),
    }


def halves(values: Floats) -> dict[str, float]:
    return {
        "A": round(float(values[0::2].mean()), 4),
        "B": round(float(values[1::2].mean()), 4),
        "full": round(float(values.mean()), 4),
    }


def ceiling(faq: State, scorer: Scorer, configs: list[Config]) -> dict[str, float]:
    """Not a result: the method tuned on one FAQ half and scored on the other, to show how much
    the pseudo-queries' pick leaves on the table (a ceiling for the family, as fusion_study has)."""
    table = np.stack([scorer(faq, config) for config in configs])
    out = {}
    for tune_on, test_on in (("A", "B"), ("B", "A")):
        tune = table[:, 0::2] if tune_on == "A" else table[:, 1::2]
        test = table[:, 1::2] if tune_on == "A" else table[:, 0::2]
        out[f"{tune_on}->{test_on}"] = round(float(test[int(np.argmax(tune.mean(axis=1)))].mean()), 4)
    return out


def study(faq: State, pseudo: State, names: list[str]) -> dict[str, Any]:
    """Each method's configuration picked on the pseudo-queries, then scored once on the FAQ."""
    base = {
        name: (METHODS[name][0](faq, METHODS[name][1][0]), METHODS[name][0](pseudo, METHODS[name][1][0]))
        for name in ("dense", "rrf_product")
    }
    out: dict[str, Any] = {}
    for name in names:
        scorer, configs = METHODS[name]
        started = time.perf_counter()
        tuned = [float(scorer(pseudo, config).mean()) for config in configs]
        pick = int(np.argmax(tuned))  # the first of equals, in grid order
        on_pseudo = scorer(pseudo, configs[pick])
        on_faq = scorer(faq, configs[pick])
        out[name] = {
            "configs_tried": len(configs),
            "pick": configs[pick],
            "pseudo_ndcg@10": round(tuned[pick], 4),
            "pseudo_minus_rrf_product": paired(on_pseudo, base["rrf_product"][1]),
            "faq_ndcg@10": halves(on_faq),
            "faq_minus_rrf_product": paired(on_faq, base["rrf_product"][0]),
            "faq_B_minus_rrf_product": paired(on_faq[1::2], base["rrf_product"][0][1::2]),
            "faq_minus_dense": paired(on_faq, base["dense"][0]),
            "ceiling_tuned_on_faq_halves": ceiling(faq, scorer, configs),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{name:24s} pseudo {tuned[pick]:.4f}  faq {on_faq.mean():.4f}  {configs[pick]}", file=sys.stderr
        )
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extract", action="store_true", help="only build the cached arrays")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpora = [load_corpus(name) for name in ("faq", "pseudo")]
    if args.extract:
        return
    faq, pseudo = (State.of(c) for c in corpora)
    results: dict[str, Any] = {
        "protocol": "each method tuned on the pseudo-queries only; its pick scored once on the FAQ",
        "sets": {
            s.corpus.name: {
                "queries": s.size,
                "chunks": len(s.corpus.ids),
                "vocabulary": len(s.lexicon.vocab),
                "match_with_product_lists": check_against_product(s),
            }
            for s in (faq, pseudo)
        },
        "methods": study(faq, pseudo, args.methods),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    payload = {
        "benchmark": "hybrid_study",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        **results,
    }
    OUT.write_text(json.dumps(payload, indent=2) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
