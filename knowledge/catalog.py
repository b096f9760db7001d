"""What each chunk may be shown to and filtered by, held in memory as arrays.

Retrieval turns the asker's groups and the question's filters (source, tags, updated_at range)
into one boolean mask over all chunks, and both indexes search only inside it: a restricted
chunk can never come back, and a user with few rights still gets k results when k exist.

Most questions come from a few group combinations with no metadata filter, so the mask and its
FAISS bitmap are cached per (groups, sources, tags), bounded (least recently used out). A catalog
never changes once built (its arrays are read-only): any change to any chunk's metadata builds a
new catalog, whose cache starts empty, so a cached mask cannot outlive the metadata it was
computed from. Time bounds differ on nearly every question ("in the last 3 days" moves with the
clock), so they are applied on top of the cached part, never cached themselves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from privacy.access import can_read

BoolArray = npt.NDArray[np.bool_]
Bitmap = tuple[int, npt.NDArray[np.uint8]]
T = TypeVar("T")
_Key = tuple[frozenset[str], frozenset[str], frozenset[str]]


@dataclass(frozen=True, slots=True)
class Filters:
    """Metadata limits a question may carry; empty means no limit."""

    sources: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of them
    updated_after: datetime | None = None
    updated_before: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.sources or self.tags or self.updated_after or self.updated_before)


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """One chunk's filterable metadata, as the store reads it."""

    chunk_id: int
    source: str
    acl_groups: tuple[str, ...]
    tags: tuple[str, ...]
    updated_at: datetime


class Allowed:
    """What one reader may get under one set of filters: the mask over the catalog's chunks
    (aligned with `ids`) and the same set as a FAISS bitmap over chunk ids (see `bitmap`).
    Both are read-only: they may be shared by every question that asks with the same key."""

    __slots__ = ("_bitmap", "_bitmap_of", "mask", "share")

    def __init__(self, mask: BoolArray, bitmap_of: Callable[[BoolArray], Bitmap]) -> None:
        mask.setflags(write=False)
        self.mask = mask
        self.share = float(np.count_nonzero(mask)) / max(1, len(mask))  # of the catalog allowed
        self._bitmap: Bitmap | None = None
        self._bitmap_of = bitmap_of

    @property
    def bitmap(self) -> Bitmap:
        """(size, little-endian bits) of the allowed chunk ids, built on first use (dense search only)."""
        if self._bitmap is None:  # two threads may both build it: same value, last one kept
            size, bits = self._bitmap_of(self.mask)
            bits.setflags(write=False)
            self._bitmap = (size, bits)
        return self._bitmap

    def permits(self, chunk_id: int) -> bool:
        """Whether `chunk_id` is in the bitmap (an id the catalog does not know is not)."""
        size, bits = self.bitmap
        return 0 <= chunk_id < size and bool(bits[chunk_id >> 3] >> (chunk_id & 7) & 1)


class ChunkCatalog:
    """Chunk metadata as parallel arrays sorted by chunk id; distinct ACLs, sources and tag sets
    are stored once and referred to by small integer codes."""

    def __init__(self, rows: list[ChunkMeta], *, cache_size: int = 32) -> None:
        rows = sorted(rows, key=lambda row: row.chunk_id)
        self.ids = np.fromiter((r.chunk_id for r in rows), dtype=np.int64, count=len(rows))
        self._acls, acl_codes = _encode([frozenset(g.casefold() for g in r.acl_groups) for r in rows])
        self._sources, source_codes = _encode([r.source for r in rows])
        self._tag_sets, tag_codes = _encode([frozenset(t.casefold() for t in r.tags) for r in rows])
        self.acl_code, self.source_code, self.tag_code = acl_codes, source_codes, tag_codes
        self.updated = np.fromiter(
            (r.updated_at.timestamp() for r in rows), dtype=np.float64, count=len(rows)
        )
        for array in (self.ids, self.acl_code, self.source_code, self.tag_code, self.updated):
            array.setflags(write=False)
        # One entry holds a mask (1 byte per chunk) and its bitmap (1 bit per id): at a million
        # chunks the default bound keeps the cache near 36 MB.
        self._cache: OrderedDict[_Key, Allowed | None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def cached(self) -> int:
        """How many (groups, sources, tags) selections the cache holds now."""
        return len(self._cache)

    def mask(self, groups: tuple[str, ...], filters: Filters | None = None) -> BoolArray | None:
        """Which chunks (aligned with `ids`) a reader in `groups` may get under `filters`;
        None when nothing is excluded, so the indexes can skip the selector."""
        allowed = self.allowed(groups, filters)
        return None if allowed is None else allowed.mask

    def allowed(self, groups: tuple[str, ...], filters: Filters | None = None) -> Allowed | None:
        """`mask` with its FAISS bitmap, cached (read-only) unless `filters` bound updated_at."""
        filters = filters or Filters()
        key: _Key = (
            frozenset(g.casefold() for g in groups),
            frozenset(filters.sources),
            frozenset(t.casefold() for t in filters.tags),
        )
        base = self._cached(key)
        if filters.updated_after is None and filters.updated_before is None:
            return base
        mask = np.ones(self.size, dtype=bool) if base is None else base.mask.copy()
        if filters.updated_after is not None:
            mask &= self.updated >= filters.updated_after.timestamp()
        if filters.updated_before is not None:
            mask &= self.updated < filters.updated_before.timestamp()
        return None if bool(mask.all()) else Allowed(mask, self.bitmap)

    def _cached(self, key: _Key) -> Allowed | None:
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        mask = self._compute(*key)  # outside the lock: two threads may both compute, same result
        allowed = None if bool(mask.all()) else Allowed(mask, self.bitmap)
        with self._cache_lock:
            self._cache[key] = allowed
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return allowed

    def _compute(self, groups: frozenset[str], sources: frozenset[str], tags: frozenset[str]) -> BoolArray:
        readable = np.fromiter(
            (can_read(groups, acl) for acl in self._acls), dtype=bool, count=len(self._acls)
        )
        mask = readable[self.acl_code] if len(self._acls) else np.ones(self.size, dtype=bool)
        if sources:
            wanted = np.array([s in sources for s in self._sources], dtype=bool)
            mask &= wanted[self.source_code]
        if tags:
            wanted = np.array([not tags.isdisjoint(s) for s in self._tag_sets], dtype=bool)
            mask &= wanted[self.tag_code]
        return mask

    def bitmap(self, mask: BoolArray) -> Bitmap:
        """The allowed chunk ids as a little-endian bitmap indexed by chunk id (FAISS IDSelectorBitmap)."""
        size = int(self.ids.max()) + 1 if self.size else 1
        bits = np.zeros(size, dtype=bool)
        bits[self.ids[mask]] = True
        return size, np.packbits(bits, bitorder="little")


def _encode(values: list[T]) -> tuple[list[T], npt.NDArray[np.int32]]:
    table: dict[T, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))
    return list(table), codes
