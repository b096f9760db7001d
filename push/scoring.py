"""The array core of matching: every user's interests against every new document, in blocks.

score(user, doc) = relevance x freshness (novelty is a mask: seen or pushed documents score
nothing), where relevance = max over the user's interests of gain(interest) x cosine. Documents a
user may not read are never scored for them: users are grouped by what they may read and each
group is multiplied only with its readable documents, so an ACL cannot leak through a masking bug.

Two stages keep 100,000 users x 10,000 documents inside seconds on a CPU:

1. coarse: one matrix product per block of users, in bf16 when the CPU has native bf16 (about 3x
   fp32 here), freshness folded into the document vectors and the interest gains into the
   interest vectors, so the product already is the score; top `pool` documents per user;
2. exact: float32 relevance, the matching interest (for the explanation) and greedy MMR over
   that pool, vectorized over the block's users.

Nothing here touches the database: `push.matching` prepares the arrays, `bench/push.py` calls
`score_blocks` directly for its scale run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from knowledge.embeddings import cpu_has_bf16

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16"]
Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Users:
    """All users' interests, flat: user u owns interests `offsets[u]:offsets[u + 1]`.

    `gains` in [0, 1] scale each interest's cosine (a faint interest counts less). `reader` is the
    user's row of `Documents.readable`; `not_before` (seconds, optional) hides documents changed at
    or before it (the user's last digest); `excluded` (CSR over `excluded_offsets`) lists document
    positions the user saw, was cited or was pushed already.
    """

    vectors: Floats
    gains: Floats
    offsets: Ints
    reader: Ints
    excluded_offsets: Ints
    excluded: Ints
    not_before: npt.NDArray[np.float64] | None = None

    @property
    def count(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True, slots=True)
class Documents:
    """The candidate documents: unit vectors, freshness in (0, 1], change times, and a readable
    mask per reader group (row g: which documents readers of group g may see)."""

    vectors: Floats
    freshness: Floats
    changed: npt.NDArray[np.float64]
    readable: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Matches:
    """Per user, up to k picks in MMR order; `document` -1 marks an empty slot."""

    document: npt.NDArray[np.int32]
    interest: npt.NDArray[np.int32]  # index into the user's own interests, for the reason
    score: Floats
    relevance: Floats
    freshness: Floats


def score_blocks(
    users: Users,
    documents: Documents,
    *,
    k: int = 5,
    min_relevance: float = 0.3,
    mmr_lambda: float = 0.7,
    pool: int | None = None,
    block_mb: int = 256,
    precision: Precision = "auto",
    coarse_dim: int | None = None,
) -> Matches:
    """Every user's top-k documents (see the module docstring); empty slots where fewer pass."""
    import torch

    n_users, n_docs = users.count, len(documents.vectors)
    out = Matches(
        document=np.full((n_users, k), -1, np.int32), interest=np.full((n_users, k), -1, np.int32),
        score=np.zeros((n_users, k), np.float32), relevance=np.zeros((n_users, k), np.float32),
        freshness=np.zeros((n_users, k), np.float32),
    )  # fmt: skip
    if n_users == 0 or n_docs == 0 or k <= 0:
        return out
    use_bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
    coarse_type = torch.bfloat16 if use_bf16 else torch.float32
    pool = max(k, pool or 4 * k)
    basis = _basis(documents.vectors, coarse_dim)
    coarse_interests = _coarse_interests(users, basis, coarse_type)
    counts = np.diff(users.offsets)
    # Users with the same readable set and interest count share one product shape.
    order = np.lexsort((counts, users.reader))
    order = order[counts[order] > 0]
    if len(order) == 0:
        return out
    sorted_reader, sorted_count = users.reader[order], counts[order]
    change = np.r_[True, (np.diff(sorted_reader) != 0) | (np.diff(sorted_count) != 0)]
    bounds = [*np.flatnonzero(change).tolist(), len(order)]
    cached_reader, cached = -1, None
    for lo, hi in itertools.pairwise(bounds):
        members = order[lo:hi]
        reader, m = int(users.reader[members[0]]), int(counts[members[0]])
        if reader != cached_reader:
            cached = _reader_documents(documents, reader, coarse_type, basis)
            cached_reader = reader
        assert cached is not None
        if len(cached.positions) == 0:
            continue
        row_bytes = len(cached.positions) * m * (2 if use_bf16 else 4) * 2
        block = max(1, int(block_mb * 2**20 // max(row_bytes, 1)))
        for start in range(0, len(members), block):
            _score_block(users, coarse_interests, documents, cached, members[start : start + block], m, out,
                         pool=pool, k=k, min_relevance=min_relevance, mmr_lambda=mmr_lambda)  # fmt: skip
    return out


@dataclass(slots=True)
class _ReaderDocuments:
    positions: Ints  # positions in Documents of what this reader group may read
    where: Ints  # Documents position -> position here, -1 when unreadable
    coarse: torch.Tensor  # (d, dim): freshness-scaled vectors in the coarse dtype


def _basis(vectors: Floats, coarse_dim: int | None) -> Floats | None:
    """The top `coarse_dim` principal directions of the documents (uncentered, so inner products
    are what is kept): the coarse stage then multiplies in that many dimensions instead of all."""
    if coarse_dim is None or coarse_dim >= vectors.shape[1]:
        return None
    _, eigenvectors = np.linalg.eigh(vectors.T.astype(np.float64) @ vectors)
    return np.ascontiguousarray(eigenvectors[:, ::-1][:, :coarse_dim], dtype=np.float32)


def _coarse_interests(users: Users, basis: Floats | None, dtype: torch.dtype) -> torch.Tensor:
    """Every interest x its gain, projected, in the coarse dtype: computed once, not once per block."""
    import torch

    out = torch.empty(
        (len(users.vectors), basis.shape[1] if basis is not None else users.vectors.shape[1]), dtype=dtype
    )
    step = 65_536
    for start in range(0, len(users.vectors), step):
        part = torch.from_numpy(users.vectors[start : start + step] * users.gains[start : start + step, None])
        out[start : start + step] = (part @ torch.from_numpy(basis) if basis is not None else part).to(dtype)
    return out


def _reader_documents(
    documents: Documents, reader: int, dtype: torch.dtype, basis: Floats | None
) -> _ReaderDocuments:
    import torch

    positions = np.flatnonzero(documents.readable[reader]).astype(np.int64)
    where = np.full(len(documents.vectors), -1, np.int64)
    where[positions] = np.arange(len(positions))
    fresh = documents.freshness[positions]
    vectors = documents.vectors[positions]
    if basis is not None:
        vectors = vectors @ basis
    scaled = torch.from_numpy(np.ascontiguousarray(vectors * fresh[:, None]))
    return _ReaderDocuments(positions, where, scaled.to(dtype))


def _score_block(
    users: Users,
    coarse_interests: torch.Tensor,
    documents: Documents,
    docs: _ReaderDocuments,
    members: Ints,
    m: int,
    out: Matches,
    *,
    pool: int,
    k: int,
    min_relevance: float,
    mmr_lambda: float,
) -> None:
    import torch

    rows = (users.offsets[members][:, None] + np.arange(m)[None, :]).reshape(-1)
    coarse = coarse_interests[torch.from_numpy(rows)] @ docs.coarse.T
    if m > 1:
        coarse = coarse.view(len(members), m, -1).amax(dim=1)
    # No threshold here: a pass over the whole block costs more than the top-k. Documents under the
    # threshold are dropped by the exact stage; one could only crowd a relevant one out of the pool
    # if `pool` of them all outscored it on freshness, which the pool of 4k makes unlikely.
    _mask_excluded(coarse, users, docs, members)
    if users.not_before is not None:
        changed = torch.from_numpy(documents.changed[docs.positions])
        hidden = changed[None, :] <= torch.from_numpy(users.not_before[members])[:, None]
        coarse.masked_fill_(hidden, float("-inf"))
    top = min(pool, coarse.shape[1])
    values, picked = torch.topk(coarse, top, dim=1)
    alive = torch.isfinite(values).numpy()
    candidates = docs.positions[picked.numpy()]  # (b, top) Documents positions

    # Exact stage, float32: relevance per interest, the best interest, then MMR.
    dvec = torch.from_numpy(documents.vectors[candidates])  # (b, top, dim)
    interests = users.vectors[rows] * users.gains[rows][:, None]  # (b*m, dim), exact
    ivec = torch.from_numpy(interests.reshape(len(members), m, -1))
    per_interest = torch.bmm(ivec, dvec.transpose(1, 2))  # (b, m, top)
    relevance, best = per_interest.max(dim=1)
    relevance_np = relevance.numpy()
    fresh = documents.freshness[candidates]
    score = relevance_np * fresh
    valid = alive & (relevance_np >= min_relevance)
    similar = torch.bmm(dvec, dvec.transpose(1, 2)).numpy()  # (b, top, top)
    chosen = _mmr(score, valid, similar, k=k, mmr_lambda=mmr_lambda)
    b_idx = np.arange(len(members))[:, None]
    ok = chosen >= 0
    slot = np.where(ok, chosen, 0)
    out.document[members] = np.where(ok, candidates[b_idx, slot], -1)
    out.interest[members] = np.where(ok, best.numpy()[b_idx, slot], -1)
    out.score[members] = np.where(ok, score[b_idx, slot], 0)
    out.relevance[members] = np.where(ok, relevance_np[b_idx, slot], 0)
    out.freshness[members] = np.where(ok, fresh[b_idx, slot], 0)


def _mask_excluded(coarse: torch.Tensor, users: Users, docs: _ReaderDocuments, members: Ints) -> None:
    starts, ends = users.excluded_offsets[members], users.excluded_offsets[members + 1]
    lengths = ends - starts
    if not lengths.any():
        return
    rows = np.repeat(np.arange(len(members)), lengths)
    # Positions starts[i] .. ends[i] - 1 for every member, without a Python loop.
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = users.excluded[np.repeat(starts, lengths) + within]
    cols = docs.where[flat]
    keep = cols >= 0
    if keep.any():
        import torch

        coarse[torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])] = float("-inf")


def _mmr(
    score: np.ndarray, valid: np.ndarray, similar: np.ndarray, *, k: int, mmr_lambda: float
) -> npt.NDArray[np.int64]:
    """Greedy maximal marginal relevance for many users at once: each step picks, per user, the
    candidate with the best lambda x score - (1 - lambda) x (similarity to what is already picked)."""
    b, top = score.shape
    chosen = np.full((b, k), -1, np.int64)
    taken = ~valid.copy()
    redundancy = np.zeros((b, top), np.float32)
    rows = np.arange(b)
    for step in range(min(k, top)):
        value = np.where(taken, -np.inf, mmr_lambda * score - (1 - mmr_lambda) * redundancy)
        pick = np.argmax(value, axis=1)
        ok = np.isfinite(value[rows, pick])
        chosen[:, step] = np.where(ok, pick, -1)
        taken[rows[ok], pick[ok]] = True
        redundancy = np.where(ok[:, None], np.maximum(redundancy, similar[rows, pick]), redundancy)
    return chosen
