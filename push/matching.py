"""Matching: which new and changed documents to propose to whom, and why.

For each recipient: the documents added or updated since their last digest (the change log;
deleted ones never), that they may read (their groups meet the document's ACL; no ACL = public),
that they have not seen, been cited or been pushed already, scored relevance x freshness, kept
when relevance reaches `push_min_relevance`, then diversified with MMR down to k. Relevance is the
best cosine between the document (normalized mean of its chunk vectors) and one of the person's
interests (push/profiles.py) or subscriptions, times that interest's gain w / (w + w_half).
The arithmetic is in push/scoring.py (batched matrix products over all users at once).

    matcher = Matcher(engine, embedder, settings)
    picks = matcher.match(recipients, since=last_digest, now=utcnow(), already_pushed=pushed)
    for c in picks["slack:U1"]:
        print(c.title, c.score, c.reason)   # "... because you asked about "VPN from home""
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.models import DocumentChangeRow, DocumentRow, as_utc
from core.settings import Settings
from knowledge.embeddings import Embedder
from privacy.access import can_read
from push.errors import PushError
from push.profiles import Interest, Profile, Profiles, document_vectors
from push.scoring import Documents, Matches, Users, score_blocks
from push.types import Candidate, Recipient

_DAY_S = 86_400.0
# Above this many users x documents the coarse stage multiplies in 128 principal dimensions (the
# exact stage still uses all 384); below it the full product is cheap and exactness is free.
_PROJECT_ABOVE = 50_000_000
COARSE_DIM = 128


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document changed in the window, as matching sees it (current title, uri and ACL)."""

    id: str
    title: str
    uri: str
    change: str
    changed_at: datetime
    acl_groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Preview:
    """What push believes about one person and what it would send them now, with the reasons."""

    recipient: Recipient
    interests: list[Interest]
    candidates: list[Candidate]


def changed_documents(engine: Engine, *, since: datetime, now: datetime) -> list[NewDocument]:
    """Documents whose latest change in (since, now] is an add or an update and that still exist.

    An add followed by an update in the window counts as added; the title, uri and ACL are the
    document's current ones (an ACL tightened after the change applies).
    """
    query = (
        select(DocumentChangeRow)
        .where(col(DocumentChangeRow.changed_at) > since, col(DocumentChangeRow.changed_at) <= now)
        .order_by(col(DocumentChangeRow.id))
    )
    latest: dict[str, DocumentChangeRow] = {}
    added: set[str] = set()
    with Session(engine) as session:
        for change in session.execute(query).scalars():
            latest[change.document_id] = change
            if change.kind == "added":
                added.add(change.document_id)
        alive = [d for d, c in latest.items() if c.kind != "deleted"]
        rows: dict[str, DocumentRow] = {}
        for start in range(0, len(alive), 500):
            chunk = alive[start : start + 500]
            rows.update(
                {
                    r.id: r
                    for r in session.execute(
                        select(DocumentRow).where(col(DocumentRow.id).in_(chunk))
                    ).scalars()
                }
            )
    return [
        NewDocument(
            id=d,
            title=rows[d].title,
            uri=rows[d].uri,
            change="added" if d in added else latest[d].kind,
            changed_at=as_utc(latest[d].changed_at),
            acl_groups=tuple(rows[d].acl_groups or ()),
        )
        for d in alive
        if d in rows
    ]


class Matcher:
    """Proposes new documents to people; see the module docstring."""

    def __init__(
        self, engine: Engine, embedder: Embedder, settings: Settings, *, profiles: Profiles | None = None
    ) -> None:
        self.engine, self.embedder, self.settings = engine, embedder, settings
        self.profiles = profiles or Profiles(engine, embedder, settings)
        self._topics: dict[str, np.ndarray] = {}

    def match(
        self,
        recipients: Sequence[Recipient],
        *,
        since: datetime | Mapping[str, datetime],
        now: datetime,
        k: int = 5,
        already_pushed: Mapping[str, set[str]] | None = None,
        refresh: bool = True,
    ) -> dict[str, list[Candidate]]:
        """Up to k candidates per recipient key, best first (every recipient gets a list, maybe empty).

        `since` is one time for everyone or a time per recipient key (their last digest; a missing
        key means nothing is new for them). With `refresh`, new behaviour events are folded into
        the profiles first.
        """
        if k < 1:
            raise PushError(f"k must be at least 1, not {k}", hint="ask for 1 or more documents per person")
        now = as_utc(now)
        people = list({r.key: r for r in recipients}.values())
        out: dict[str, list[Candidate]] = {r.key: [] for r in people}
        per_user = {key: as_utc(t) for key, t in since.items()} if isinstance(since, Mapping) else None
        people = [r for r in people if per_user is None or r.key in per_user]
        if not people:
            return out
        earliest = min(per_user.values()) if per_user else as_utc(since)  # type: ignore[arg-type]
        documents = changed_documents(self.engine, since=earliest, now=now)
        vectors = document_vectors(self.engine, [d.id for d in documents])
        documents = [d for d in documents if d.id in vectors]
        if not documents:
            return out
        if refresh:
            self.profiles.update()
        users, labels, readers = self._users(people, documents, per_user, already_pushed or {}, now)
        docs = self._documents(readers, documents, vectors, now)
        size = len(documents) * len(people)
        matches = score_blocks(
            users, docs, k=k, min_relevance=self.settings.push.min_relevance,
            mmr_lambda=self.settings.push.mmr_lambda, block_mb=self.settings.push.match_block_mb,
            coarse_dim=COARSE_DIM if size > _PROJECT_ABOVE else None,
        )  # fmt: skip
        for u, person in enumerate(people):
            out[person.key] = _candidates(matches, u, documents, labels[u])
        return out

    def explain(self, recipient: Recipient, *, now: datetime) -> list[Interest]:
        """Why push would write to this person at all: their interests, strongest first."""
        return self.profiles.interests(recipient.platform, recipient.user_id, now=as_utc(now))

    def preview(
        self,
        recipient: Recipient,
        *,
        since: datetime,
        now: datetime,
        k: int = 5,
        already_pushed: Mapping[str, set[str]] | None = None,
    ) -> Preview:
        """What would be sent to this person now and why (`kb push preview`); changes nothing but
        their profile, which is brought up to date first."""
        self.profiles.update(users=[(recipient.platform, recipient.user_id)])
        candidates = self.match(
            [recipient], since=since, now=now, k=k, already_pushed=already_pushed, refresh=False
        )[recipient.key]
        return Preview(recipient=recipient, interests=self.explain(recipient, now=now), candidates=candidates)

    # --- building the arrays --------------------------------------------------------------------

    def _users(
        self,
        people: list[Recipient],
        documents: list[NewDocument],
        per_user: dict[str, datetime] | None,
        already_pushed: Mapping[str, set[str]],
        now: datetime,
    ) -> tuple[Users, list[list[str]], list[frozenset[str]]]:
        pairs = [(r.platform, r.user_id) for r in people]
        profiles = self.profiles.load(pairs)
        subscriptions = self.profiles.subscriptions(pairs)
        self._embed_topics({t for topics in subscriptions.values() for t in topics})
        position = {d.id: i for i, d in enumerate(documents)}
        readers: dict[frozenset[str], int] = {}
        half_life, w_half = (
            self.settings.push.interest_half_life_days,
            self.settings.push.interest_weight_half,
        )
        sub_gain = self.settings.push.subscription_weight / (self.settings.push.subscription_weight + w_half)
        vectors: list[np.ndarray] = []
        gains: list[float] = []
        offsets, reader, labels = [0], [], []
        excluded_offsets, excluded = [0], []  # CSR of document positions to leave out
        for person in people:
            profile: Profile | None = profiles.get(person.key)
            topics = subscriptions.get(person.key, [])
            mine: list[str] = []
            if profile is not None and profile.labels:
                weights = profile.decayed(now, half_life_days=half_life)
                gain = weights / (weights + w_half)
                # gain x cosine can never reach the threshold below it: such faint interests cost
                # a row of the product and can change nothing.
                keep = np.flatnonzero(gain >= self.settings.push.min_relevance)
                vectors.append(profile.vectors[keep])
                gains.extend(gain[keep])
                mine += [profile.labels[i] for i in keep]
            if topics:
                vectors.append(np.stack([self._topics[t] for t in topics]))
                gains.extend([sub_gain] * len(topics))
                mine += [f'you subscribed to "{t}"' for t in topics]
            labels.append(mine)
            offsets.append(offsets[-1] + len(mine))
            reader.append(readers.setdefault(frozenset(g.casefold() for g in person.groups), len(readers)))
            skip = set(profile.seen if profile else ()) | set(already_pushed.get(person.key, ()))
            excluded.extend(sorted(position[d] for d in skip if d in position))
            excluded_offsets.append(len(excluded))
        dim = self.embedder.dim
        not_before = None
        if per_user is not None:
            not_before = np.array([per_user[p.key].timestamp() for p in people], dtype=np.float64)
        users = Users(
            vectors=np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32),
            gains=np.asarray(gains, dtype=np.float32), offsets=np.asarray(offsets, dtype=np.int64),
            reader=np.asarray(reader, dtype=np.int64),
            excluded_offsets=np.asarray(excluded_offsets, np.int64),
            excluded=np.asarray(excluded, dtype=np.int64), not_before=not_before,
        )  # fmt: skip
        return users, labels, list(readers)

    def _documents(
        self,
        readers: list[frozenset[str]],
        documents: list[NewDocument],
        vectors: dict[str, np.ndarray],
        now: datetime,
    ) -> Documents:
        """The documents' arrays; row g of `readable` says what readers with group set g may read."""
        half_life = self.settings.push.freshness_half_life_days
        ages = np.array([max(0.0, (now - d.changed_at).total_seconds()) / _DAY_S for d in documents])
        acls = [d.acl_groups for d in documents]
        readable = np.array([[can_read(groups, acl) for acl in acls] for groups in readers], dtype=bool)
        return Documents(
            vectors=np.stack([vectors[d.id] for d in documents]).astype(np.float32),
            freshness=np.power(0.5, ages / half_life).astype(np.float32),
            changed=np.array([d.changed_at.timestamp() for d in documents], dtype=np.float64),
            readable=readable.reshape(len(readers), len(documents)),
        )

    def _embed_topics(self, topics: set[str]) -> None:
        missing = sorted(topics - set(self._topics))
        if missing:
            self._topics.update(zip(missing, self.embedder.encode(missing), strict=True))


def _candidates(matches: Matches, u: int, documents: list[NewDocument], labels: list[str]) -> list[Candidate]:
    out = []
    for slot in range(matches.document.shape[1]):
        d = int(matches.document[u, slot])
        if d < 0:
            break
        document = documents[d]
        interest = int(matches.interest[u, slot])
        label = (
            labels[interest]
            if 0 <= interest < len(labels) and labels[interest]
            else "it matches your interests"
        )
        out.append(
            Candidate(
                document_id=document.id,
                title=document.title,
                uri=document.uri,
                change=document.change,
                changed_at=document.changed_at,
                score=round(float(matches.score[u, slot]), 6),
                relevance=round(float(matches.relevance[u, slot]), 6),
                freshness=round(float(matches.freshness[u, slot]), 6),
                novelty=1.0,
                reason=f"because {label}",
            )
        )
    return out
