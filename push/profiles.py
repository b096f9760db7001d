"""Interest profiles: a few time-decayed centroids per person, learned from their behaviour events.

Each signal (push/behaviour.py) is a unit vector with a weight. Online clustering folds it into
the nearest interest when the cosine is at least `push_interest_merge_similarity`, else opens a new
interest; past `push_interest_max` the weakest interest is merged into its neighbour (when close)
or dropped. Weights halve every `push_interest_half_life_days`, so old interests fade and the ones a
person keeps coming back to stay; a thumbs-down lowers the interest it lands in. Each interest keeps
the label of its strongest signal, which is the explanation shown with a pushed document.

Updates are incremental: a full `update()` reads events after a watermark, and every profile
remembers the last event folded into it, so a per-person update (`update(users=[...])`) and a full
one never fold an event twice. The cursor is an id, and two writers at once (replicas on PostgreSQL)
can commit a smaller id after a larger one has been read: an update therefore stops at the first
event younger than `push_event_settle_s` (30 s), which leaves a late commit that long to appear.

    profiles = Profiles(engine, embedder, settings)
    profiles.update()
    for interest in profiles.interests("slack", "U1", now=utcnow()):
        print(interest.label, interest.weight)
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from core.db import session_scope
from core.models import ChunkRow, InterestProfileRow, InterestProfileStateRow, SubscriptionRow, as_utc, utcnow
from core.settings import Settings
from knowledge.embeddings import Embedder, Vectors
from push.behaviour import BehaviourReader, Signal

_STATE = "behaviour_events"
_BATCH = 500
_DAY_S = 86_400.0
PRUNE_WEIGHT = 0.05  # an interest this faint (a single question ~4 half-lives ago) is forgotten
_ATTEMPTS = 6
SEEN_LIMIT = 2000  # documents remembered as seen per person, newest kept


@dataclass(frozen=True, slots=True)
class Interest:
    """One interest as shown to a person: why we think they have it and how strong it is now."""

    label: str
    weight: float
    subscription: bool = False

    @property
    def reason(self) -> str:
        return f"because {self.label}"


@dataclass(slots=True)
class Profile:
    """One person's interests in memory; `weights` and `strengths` are as of `as_of`."""

    platform: str
    user_id: str
    vectors: Vectors
    weights: np.ndarray
    labels: list[str]
    strengths: np.ndarray
    seen: list[str] = field(default_factory=list)
    last_event_id: int = 0
    as_of: datetime | None = None

    @classmethod
    def empty(cls, platform: str, user_id: str, dim: int) -> Profile:
        return cls(platform, user_id, np.zeros((0, dim), np.float32), np.zeros(0), [], np.zeros(0))

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    def decayed(self, now: datetime, *, half_life_days: float) -> np.ndarray:
        """The interest weights as they stand at `now`."""
        return self.weights * _decay(self.as_of, now, half_life_days)

    def fold(
        self, vector: np.ndarray, weight: float, label: str, at: datetime, *, settings: Settings
    ) -> None:
        """Fold one signal in: decay to its time, then merge, open, or push down an interest."""
        half_life = settings.push.interest_half_life_days
        at = as_utc(at)
        if self.as_of is None or at >= self.as_of:
            factor = _decay(self.as_of, at, half_life)
            self.weights, self.strengths, self.as_of = self.weights * factor, self.strengths * factor, at
        else:  # an event older than what is folded in already: it counts as much as it would now
            weight *= _decay(at, self.as_of, half_life)
        sims = self.vectors @ vector if len(self.labels) else np.zeros(0, np.float32)
        nearest = int(np.argmax(sims)) if sims.size else -1
        if weight < 0:
            if nearest >= 0 and sims[nearest] >= settings.push.interest_merge_similarity:
                self.weights[nearest] = max(0.0, self.weights[nearest] + weight * float(sims[nearest]))
        elif weight > 0 and nearest >= 0 and sims[nearest] >= settings.push.interest_merge_similarity:
            self._merge_into(nearest, vector, weight, label, weight)
        elif weight > 0:
            if len(self.labels) >= settings.push.interest_max:
                self._make_room(settings.push.interest_merge_similarity)
            self.vectors = np.vstack([self.vectors, vector[None, :].astype(np.float32)])
            self.weights = np.append(self.weights, weight)
            self.strengths = np.append(self.strengths, weight)
            self.labels.append(label)
        self._prune()

    def mark_seen(self, documents: Iterable[str]) -> None:
        for document_id in documents:
            if document_id in self.seen:
                self.seen.remove(document_id)
            self.seen.append(document_id)
        del self.seen[:-SEEN_LIMIT]

    def _merge_into(self, i: int, vector: np.ndarray, weight: float, label: str, strength: float) -> None:
        merged = self.vectors[i] * self.weights[i] + vector * weight
        norm = float(np.linalg.norm(merged))
        if norm > 0:
            self.vectors[i] = merged / norm
        self.weights[i] += weight
        if label and strength >= self.strengths[i]:
            self.labels[i], self.strengths[i] = label, strength

    def _make_room(self, merge_similarity: float) -> None:
        """Merge the weakest interest into its nearest neighbour when they are related, else drop it."""
        weakest = int(np.argmin(self.weights))
        sims = self.vectors @ self.vectors[weakest]
        sims[weakest] = -np.inf
        neighbour = int(np.argmax(sims))
        # Looser than joining: two interests that both grew from the same area are worth keeping as one.
        if len(self.labels) > 1 and sims[neighbour] >= merge_similarity - 0.2:
            self._merge_into(
                neighbour, self.vectors[weakest], float(self.weights[weakest]),
                self.labels[weakest], float(self.strengths[weakest]),
            )  # fmt: skip
        self._drop([weakest])

    def _prune(self) -> None:
        self._drop([i for i, w in enumerate(self.weights) if w < PRUNE_WEIGHT])

    def _drop(self, indexes: Sequence[int]) -> None:
        if not indexes:
            return
        keep = np.setdiff1d(np.arange(len(self.labels)), indexes)
        self.vectors, self.weights, self.strengths = (
            self.vectors[keep],
            self.weights[keep],
            self.strengths[keep],
        )
        self.labels = [self.labels[i] for i in keep]


def _decay(since: datetime | None, now: datetime, half_life_days: float) -> float:
    if since is None:
        return 1.0
    days = max(0.0, (as_utc(now) - as_utc(since)).total_seconds() / _DAY_S)
    return math.pow(0.5, days / half_life_days)


@dataclass(slots=True)
class UpdateReport:
    events: int = 0
    signals: int = 0
    profiles: int = 0


class Profiles:
    """Builds, stores and reads interest profiles (table `interest_profiles`)."""

    def __init__(self, engine: Engine, embedder: Embedder, settings: Settings) -> None:
        self.engine, self.embedder, self.settings = engine, embedder, settings
        self.reader = BehaviourReader(engine)

    # --- updating -------------------------------------------------------------------------------

    def update(self, *, users: Iterable[tuple[str, str]] | None = None, batch: int = 2000) -> UpdateReport:
        """Fold new behaviour events into profiles: everyone's, or only these (platform, user) pairs."""
        report = UpdateReport()
        for user in dict.fromkeys(users) if users is not None else [None]:
            more = True
            while more:  # batch after batch until this user's (or everyone's) events are all folded
                more = self._retrying(report, batch=batch, user=user)
        return report

    def _retrying(self, report: UpdateReport, *, batch: int, user: tuple[str, str] | None) -> bool:
        """One batch, again after a conflict with a concurrent update (SQLite's stale snapshot, or two
        updaters inserting the same new profile): the batch's transaction was rolled back, and the
        retry re-reads what the other one folded, so nothing is folded twice."""
        for attempt in range(_ATTEMPTS):
            try:
                return self._update_batch(report, batch=batch, user=user)
            except (OperationalError, IntegrityError):
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt * (1 + random.random()))
        return False

    def _update_batch(self, report: UpdateReport, *, batch: int, user: tuple[str, str] | None) -> bool:
        """One batch in one transaction; False when there was nothing left to read."""
        with session_scope(self.engine) as session:
            state = None
            if user is None:
                # FOR UPDATE: two full updates at once on PostgreSQL take turns instead of double-folding.
                query = select(InterestProfileStateRow).where(col(InterestProfileStateRow.name) == _STATE)
                state = session.execute(query.with_for_update()).scalar_one_or_none()
                state = state or InterestProfileStateRow(name=_STATE, last_event_id=0, updated_at=utcnow())
                after = state.last_event_id
            else:
                row = session.get(InterestProfileRow, user, with_for_update=True)
                after = row.last_event_id if row is not None else 0
            settle = self.settings.push.event_settle_s
            settled = utcnow() - timedelta(seconds=settle) if settle > 0 else None  # 0: fold everything
            events = self.reader.events(after_id=after, limit=batch, user=user, settled_before=settled)
            if not events:
                return False
            rows = self._rows(session, {(e.platform, e.user_id) for e in events}, lock=True)
            profiles = {key: _from_row(row) for key, row in rows.items()}
            fresh = [e for e in events if e.id and e.id > _last_id(profiles, e.platform, e.user_id)]
            signals = self.reader.signals(fresh)
            self._fold(profiles, signals)
            for event in fresh:
                assert event.id is not None
                profile = profiles.setdefault(
                    (event.platform, event.user_id),
                    Profile.empty(event.platform, event.user_id, self.embedder.dim),
                )
                profile.last_event_id = max(profile.last_event_id, event.id)
            touched = {(e.platform, e.user_id) for e in fresh}
            for key in touched:
                session.add(_to_row(profiles[key], rows.get(key)))
            if state is not None:
                state.last_event_id = int(events[-1].id or after)
                state.updated_at = utcnow()
                session.add(state)
        # Counted once committed: a batch rolled back for a retry does not count twice.
        report.events += len(fresh)
        report.signals += len(signals)
        report.profiles += len(touched)
        return len(events) == batch

    def _fold(self, profiles: dict[tuple[str, str], Profile], signals: list[Signal]) -> None:
        texts = sorted({s.text for s in signals if s.text and s.weight})
        text_vectors = dict(zip(texts, self.embedder.encode(texts), strict=True))
        documents = document_vectors(self.engine, {d for s in signals if not s.text for d in s.documents})
        for signal in signals:
            profile = profiles.setdefault(
                (signal.platform, signal.user_id),
                Profile.empty(signal.platform, signal.user_id, self.embedder.dim),
            )
            profile.mark_seen(signal.seen)
            vector = text_vectors.get(signal.text) if signal.text else _mean(documents, signal.documents)
            if vector is not None and signal.weight:
                profile.fold(vector, signal.weight, signal.label, signal.at, settings=self.settings)

    @staticmethod
    def _rows(
        session: Session, keys: set[tuple[str, str]], *, lock: bool = False
    ) -> dict[tuple[str, str], InterestProfileRow]:
        user_ids = sorted({user for _, user in keys})
        out: dict[tuple[str, str], InterestProfileRow] = {}
        for start in range(0, len(user_ids), _BATCH):
            query = select(InterestProfileRow).where(
                col(InterestProfileRow.user_id).in_(user_ids[start : start + _BATCH])
            )
            for row in session.execute(query.with_for_update() if lock else query).scalars():
                if (row.platform, row.user_id) in keys:
                    out[(row.platform, row.user_id)] = row
        return out

    # --- reading --------------------------------------------------------------------------------

    def load(self, users: Iterable[tuple[str, str]]) -> dict[str, Profile]:
        """The stored profiles of these (platform, user) pairs by "platform:user"; unknown ones are absent."""
        keys = set(users)
        with Session(self.engine) as session:
            return {f"{p}:{u}": _from_row(row) for (p, u), row in self._rows(session, keys).items()}

    def subscriptions(self, users: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """Each person's subscribed topics, by "platform:user"."""
        keys = set(users)
        user_ids = sorted({user for _, user in keys})
        out: dict[str, list[str]] = defaultdict(list)
        with Session(self.engine) as session:
            for start in range(0, len(user_ids), _BATCH):
                query = select(SubscriptionRow).where(
                    col(SubscriptionRow.user_id).in_(user_ids[start : start + _BATCH])
                )
                for row in session.execute(query).scalars():
                    if (row.platform, row.user_id) in keys:
                        out[f"{row.platform}:{row.user_id}"].append(row.topic)
        return {key: sorted(topics) for key, topics in out.items()}

    def interests(self, platform: str, user_id: str, *, now: datetime) -> list[Interest]:
        """What we believe this person cares about, strongest first, subscriptions included."""
        profile = self.load([(platform, user_id)]).get(f"{platform}:{user_id}")
        out = [
            Interest(label=f'you subscribed to "{topic}"', weight=self.settings.push.subscription_weight,
                     subscription=True)
            for topic in self.subscriptions([(platform, user_id)]).get(f"{platform}:{user_id}", [])
        ]  # fmt: skip
        if profile is not None:
            weights = profile.decayed(now, half_life_days=self.settings.push.interest_half_life_days)
            out += [
                Interest(label=lab, weight=round(float(w), 4))
                for lab, w in zip(profile.labels, weights, strict=True)
            ]
        return sorted(out, key=lambda i: -i.weight)

    def forget(self, platform: str, user_id: str) -> bool:
        """Delete a person's profile (they left, or asked us to forget); True when there was one."""
        with session_scope(self.engine) as session:
            gone = session.execute(
                delete(InterestProfileRow).where(
                    col(InterestProfileRow.platform) == platform, col(InterestProfileRow.user_id) == user_id
                )
            ).rowcount  # type: ignore[attr-defined]
        return bool(gone)


def _last_id(profiles: dict[tuple[str, str], Profile], platform: str, user_id: str) -> int:
    profile = profiles.get((platform, user_id))
    return profile.last_event_id if profile is not None else 0


def _mean(vectors: dict[str, np.ndarray], documents: Sequence[str]) -> np.ndarray | None:
    found = [vectors[d] for d in documents if d in vectors]
    if not found:
        return None
    mean = np.mean(found, axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None


def document_vectors(engine: Engine, document_ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Each document's vector: the normalized mean of its chunks' embeddings (documents without
    chunks are left out)."""
    ids = sorted(set(document_ids))
    sums: dict[str, np.ndarray] = {}
    with Session(engine) as session:
        for start in range(0, len(ids), _BATCH):
            query = select(col(ChunkRow.document_id), col(ChunkRow.embedding)).where(
                col(ChunkRow.document_id).in_(ids[start : start + _BATCH])
            )
            for document_id, blob in session.execute(query):
                vector = np.frombuffer(blob, dtype=np.float32)
                sums[document_id] = sums[document_id] + vector if document_id in sums else vector.copy()
    out = {}
    for document_id, total in sums.items():
        norm = float(np.linalg.norm(total))
        if norm > 0:
            out[document_id] = (total / norm).astype(np.float32)
    return out


def _from_row(row: InterestProfileRow) -> Profile:
    n = len(row.labels)
    vectors = np.frombuffer(row.vectors, dtype=np.float32).reshape(n, row.dim).copy()
    return Profile(
        platform=row.platform, user_id=row.user_id, vectors=vectors,
        weights=np.asarray(row.weights, dtype=np.float64), labels=list(row.labels),
        strengths=np.asarray(row.strengths, dtype=np.float64), seen=list(row.seen),
        last_event_id=row.last_event_id, as_of=as_utc(row.as_of) if row.as_of else None,
    )  # fmt: skip


def _to_row(profile: Profile, row: InterestProfileRow | None) -> InterestProfileRow:
    row = row or InterestProfileRow(platform=profile.platform, user_id=profile.user_id, updated_at=utcnow())
    row.dim = int(profile.vectors.shape[1])
    row.vectors = np.ascontiguousarray(profile.vectors, dtype=np.float32).tobytes()
    row.weights = [float(w) for w in profile.weights]
    row.strengths = [float(s) for s in profile.strengths]
    row.labels = list(profile.labels)
    row.seen = list(profile.seen)
    row.last_event_id = profile.last_event_id
    row.as_of = profile.as_of
    row.updated_at = utcnow()
    return row
