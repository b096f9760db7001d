"""What each chunk may be shown to and filtered by, held in memory as arrays.

Retrieval turns the asker's groups and the question's filters (source, tags, updated_at range)
into one boolean mask over all chunks, and both indexes search only inside it: a restricted
chunk can never come back, and a user with few rights still gets k results when k exist.
At a million chunks the mask is a few vectorized comparisons, about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from privacy.access import can_read

BoolArray = npt.NDArray[np.bool_]
T = TypeVar("T")


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


class ChunkCatalog:
    """Chunk metadata as parallel arrays sorted by chunk id; distinct ACLs, sources and tag sets
    are stored once and referred to by small integer codes."""

    def __init__(self, rows: list[ChunkMeta]) -> None:
        rows = sorted(rows, key=lambda row: row.chunk_id)
        self.ids = np.fromiter((r.chunk_id for r in rows), dtype=np.int64, count=len(rows))
        self._acls, acl_codes = _encode([frozenset(g.casefold() for g in r.acl_groups) for r in rows])
        self._sources, source_codes = _encode([r.source for r in rows])
        self._tag_sets, tag_codes = _encode([frozenset(t.casefold() for t in r.tags) for r in rows])
        self.acl_code, self.source_code, self.tag_code = acl_codes, source_codes, tag_codes
        self.updated = np.fromiter(
            (r.updated_at.timestamp() for r in rows), dtype=np.float64, count=len(rows)
        )

    @property
    def size(self) -> int:
        return len(self.ids)

    def mask(self, groups: tuple[str, ...], filters: Filters | None = None) -> BoolArray | None:
        """Which chunks (aligned with `ids`) a reader in `groups` may get under `filters`;
        None when nothing is excluded, so the indexes can skip the selector."""
        readable = np.fromiter(
            (can_read(groups, acl) for acl in self._acls), dtype=bool, count=len(self._acls)
        )
        mask = readable[self.acl_code] if len(self._acls) else np.ones(self.size, dtype=bool)
        if filters is not None and not filters.empty:
            if filters.sources:
                wanted = np.array([s in filters.sources for s in self._sources], dtype=bool)
                mask &= wanted[self.source_code]
            if filters.tags:
                tags = {t.casefold() for t in filters.tags}
                wanted = np.array([not tags.isdisjoint(s) for s in self._tag_sets], dtype=bool)
                mask &= wanted[self.tag_code]
            if filters.updated_after is not None:
                mask &= self.updated >= filters.updated_after.timestamp()
            if filters.updated_before is not None:
                mask &= self.updated < filters.updated_before.timestamp()
        return None if bool(mask.all()) else mask

    def bitmap(self, mask: BoolArray) -> tuple[int, npt.NDArray[np.uint8]]:
        """The allowed chunk ids as a little-endian bitmap indexed by chunk id (FAISS IDSelectorBitmap)."""
        size = int(self.ids.max()) + 1 if self.size else 1
        bits = np.zeros(size, dtype=bool)
        bits[self.ids[mask]] = True
        return size, np.packbits(bits, bitorder="little")


def _encode(values: list[T]) -> tuple[list[T], npt.NDArray[np.int32]]:
    table: dict[T, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))
    return list(table), codes
