"""Benchmark of push matching: are digests about what people care about, and does it scale?

    .venv/bin/python bench/push.py [--users 300] [--per-topic 8] [--seed 0] [--scale-users 100000]

Simulation: each topic is a page of examples/handbook; synthetic users have 1-3 current interests
and maybe one stale one, which drive the behaviour events the bot would record (questions from the
topic's headings and sentences, citations, clicks, ratings, a few subscriptions) over the last 45
days (the stale one 90-150 days ago). Then a week of new documents arrives: per topic a few notices
made of its sentences, plus unrelated company news. A digest pick is relevant when its topic is a
current interest. Compared on the same documents: our matcher (profiles + subscriptions), recency
only (the 5 newest readable documents), subscriptions only, and our matcher without time decay.

Scale: 100,000 users x 10,000 new documents through `push.scoring.score_blocks` (what Matcher runs
at that size) in a child process, its peak memory its own; documents are real embeddings mixed
pairwise, interests real profile centroids jittered.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HANDBOOK, child_json, write_results

if TYPE_CHECKING:
    from collections.abc import Iterable

    from push.matching import Matcher
    from push.profiles import Profile
    from push.types import Candidate

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)
K = 5
GROUPS: tuple[list[str], ...] = ([], ["hr"], ["finance"], ["hr", "managers"], ["security"])
TEMPLATES = (
    "How does {h} work?", "Where do I find the rules on {h}?", "What should I know about {h}?",
    "Can you explain {h} to me?", "I have a question about {t}: {h}",
)  # fmt: skip
UPDATES = ("update", "what changes next month", "new rules", "reminder", "clarification", "FAQ additions")
NEWS = (
    "The summer party takes place on the lawn behind building C.", "Our pump division won a new order.",
    "The works band is looking for a drummer.", "Results of the employee survey are now published.",
    "A new coffee machine has arrived on the third floor.", "The annual report is out.",
    "The football team won the regional cup.", "Please welcome our new head of design.",
    "The photo contest closes on Friday.", "We celebrate 75 years of Halden this spring.",
)  # fmt: skip


@dataclass
class Topic:
    key: str
    title: str
    tags: list[str]
    acl: list[str]
    sections: list[tuple[str, str, str]]  # heading, anchor, text
    sentences: list[str] = field(default_factory=list)

    @property
    def subscription(self) -> str:
        return next((t for t in self.tags[1:] if t not in ("zh",)), self.tags[0]).replace("-", " ")


def load_topics() -> list[Topic]:
    topics = []
    for path in sorted(HANDBOOK.glob("*/*.md")):
        if path.stem.endswith("-zh"):
            continue
        text = path.read_text(encoding="utf-8")
        meta, _, body = text.removeprefix("---\n").partition("\n---\n")
        fields = dict(line.split(":", 1) for line in meta.splitlines() if ":" in line)

        def listed(name: str, fields: dict[str, str] = fields) -> list[str]:
            return [x.strip() for x in fields.get(name, "").strip(" []").split(",") if x.strip()]

        sections: list[tuple[str, str, str]] = []
        heading, lines = fields["title"].strip(), list[str]()
        for line in [*body.splitlines(), "# end"]:
            if line.startswith("#"):
                if lines:
                    anchor = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
                    sections.append((heading, anchor, " ".join(lines)))
                heading, lines = line.lstrip("# ").strip(), []
            elif line.strip() and not line.startswith("|"):
                lines.append(re.sub(r"\[([^]]+)\]\([^)]+\)|[*_`]", r"\1", line.strip(" -")))
        sentences = [
            s for _, _, t in sections for s in re.split(r"(?<=[.!?])\s+", t) if 6 <= len(s.split()) <= 40
        ]
        topics.append(
            Topic(path.relative_to(HANDBOOK).as_posix(), fields["title"].strip(), listed("tags"),
                  listed("acl_groups"), sections, sentences)
        )  # fmt: skip
    return topics


def question(topic: Topic, rng: random.Random) -> str:
    if rng.random() < 0.5 and topic.sentences:
        words = rng.choice(topic.sentences).rstrip(".").split()
        return "Is it right that " + " ".join(words[: rng.randint(6, 12)]).lower() + "?"
    heading = rng.choice([h for h, _, _ in topic.sections[1:]] or [topic.title])
    return rng.choice(TEMPLATES).format(h=heading.lower(), t=topic.title)


@dataclass
class User:
    key: str
    groups: list[str]
    current: list[str]
    stale: list[str]
    subscriptions: list[str]


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    from core import db
    from core.models import BehaviourEventRow, DocumentChangeRow, SubscriptionRow
    from core.settings import load_settings
    from knowledge.embeddings import get_embedder
    from knowledge.store import Store
    from knowledge.types import Chunk, Document, Section
    from push.matching import Matcher
    from push.profiles import Profiles, document_vectors
    from push.types import Recipient

    rng = random.Random(args.seed)
    topics = load_topics()
    by_key = {t.key: t for t in topics}
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    settings = load_settings(data_dir=work)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    embedder = get_embedder(None)
    store = Store(engine)

    def put(doc_id: str, title: str, parts: list[tuple[str, str, str]], acl: list[str], at: datetime) -> None:
        document = Document(id=doc_id, source="sim", uri=f"sim/{doc_id}", title=title,
                            sections=tuple(Section(text=t, headings=(h,), anchor=a) for h, a, t in parts),
                            updated_at=at, acl_groups=tuple(acl))  # fmt: skip
        chunks = [Chunk(doc_id, i, t[:1500], h, a, None, 0) for i, (h, a, t) in enumerate(parts)]
        store.replace_document(
            document, chunks, embedder.encode([f"{title}\n{h}\n{t[:1500]}" for h, a, t in parts])
        )

    started = time.perf_counter()
    for topic in topics:
        put(topic.key, topic.title, topic.sections, topic.acl, NOW - timedelta(days=60))
    truth: dict[str, str | None] = {}
    for topic in topics:
        for n in range(args.per_topic):
            picked = rng.sample(topic.sentences, min(4, len(topic.sentences)))
            title = (
                f"{topic.title}: {rng.choice(UPDATES)}"
                if rng.random() < 0.7
                else f"Notice {rng.randint(100, 999)}"
            )
            doc_id = f"new/{topic.key}/{n}"
            put(doc_id, title, [(title, "", " ".join([*picked, rng.choice(NEWS)]))], topic.acl, NOW)
            truth[doc_id] = topic.key
    for n in range(args.per_topic * 6):
        doc_id = f"news/{n}"
        put(doc_id, f"Company news {n}", [("News", "", " ".join(rng.sample(NEWS, 3)))], [], NOW)
        truth[doc_id] = None
    with db.session_scope(engine) as session:  # a week of changes, in random order
        for change in session.execute(select(DocumentChangeRow)).scalars():
            if change.document_id in truth:
                change.changed_at = NOW - timedelta(hours=rng.uniform(0.5, 167))
            else:
                change.changed_at = NOW - timedelta(days=60)
    ingest_s = time.perf_counter() - started

    users = make_users(args.users, topics, rng)
    recipients: list[Recipient] = []
    events = 0
    with db.session_scope(engine) as session:
        for user in users:
            platform, user_id = user.key.split(":")
            recipients.append(Recipient(platform, user_id, groups=frozenset(user.groups)))
            plan = [(t, 45, 0) for t in user.current for _ in range(rng.randint(2, 6))]
            plan += [(t, 150, 90) for t in user.stale for _ in range(rng.randint(3, 6))]
            plan += [(t.key, 45, 0) for t in rng.sample(topics, rng.randint(1, 3))]  # idle curiosity
            for key, oldest, newest in plan:
                topic, at = by_key[key], NOW - timedelta(days=rng.uniform(newest, oldest))
                heading, anchor, _ = rng.choice(topic.sections)
                link = f"sim/{key}#{anchor}" if anchor else f"sim/{key}"
                citation = {"number": 1, "title": topic.title, "uri": link, "section": heading}
                row = BehaviourEventRow(
                    kind="question", platform=platform, user_id=user_id, text=question(topic, rng),
                    data={"citations": [citation]}, at=at,
                )  # fmt: skip
                session.add(row)
                session.flush()
                follow = []
                if key in user.current + user.stale and rng.random() < 0.5:
                    follow.append(("source_click", {"number": 1, "uri": link}))
                if key in user.current + user.stale and rng.random() < 0.3:
                    follow.append(("feedback", {"value": 1}))
                elif rng.random() < 0.05:
                    follow.append(("feedback", {"value": -1}))
                for kind, data in follow:
                    session.add(BehaviourEventRow(
                        kind=kind, platform=platform, user_id=user_id, question_id=row.id, data=data,
                        at=at + timedelta(minutes=2),
                    ))  # fmt: skip
                events += 1 + len(follow)
            for topic_name in user.subscriptions:
                session.add(
                    SubscriptionRow(platform=platform, user_id=user_id, topic=topic_name, created_at=NOW)
                )

    started = time.perf_counter()
    report = Profiles(engine, embedder, settings).update()
    profile_s = time.perf_counter() - started
    matcher = Matcher(engine, embedder, settings)
    started = time.perf_counter()
    ours = matcher.match(recipients, since=SINCE, now=NOW, k=K)
    match_s = time.perf_counter() - started
    methods = {"ours": _ids(ours)}
    interests, counts = _profile_vectors(engine)
    subscriptions_only = _without_behaviour(engine, embedder, settings)
    methods["subscription_baseline"] = _ids(
        subscriptions_only.match(recipients, since=SINCE, now=NOW, k=K, refresh=False)
    )
    methods["recency_baseline"] = recency(engine, recipients)
    methods["no_decay"] = no_decay(engine, embedder, settings, recipients)
    results: dict[str, Any] = {
        "users": len(users), "topics": len(topics), "new_documents": len(truth), "behaviour_events": events,
        "profile_update_s": round(profile_s, 2), "match_s": round(match_s, 2), "ingest_s": round(ingest_s, 1),
        "profiles_built": report.profiles,
    }  # fmt: skip
    for name, picks in methods.items():
        for metric, value in evaluate(users, picks, truth).items():
            suffix = "" if name == "ours" else f"_{name}"
            results[f"{metric}{suffix}"] = value
    docs = document_vectors(engine, list(truth))
    np.savez(work / "scale.npz", docs=np.stack(list(docs.values())), interests=interests, counts=counts)
    results["_scale_input"] = str(work / "scale.npz")
    return results


def make_users(n: int, topics: list[Topic], rng: random.Random) -> list[User]:
    weights = [1 / (i + 1) ** 0.7 for i in range(len(topics))]  # some topics are far more popular
    users = []
    for i in range(n):
        groups = rng.choices(GROUPS, [70, 10, 10, 5, 5])[0]
        readable = [
            (t, w) for t, w in zip(topics, weights, strict=True) if not t.acl or set(t.acl) & set(groups)
        ]
        chosen: list[str] = []
        while len(chosen) < rng.randint(1, 3) + 1:
            key = rng.choices([t.key for t, _ in readable], [w for _, w in readable])[0]
            if key not in chosen:
                chosen.append(key)
        current, stale = chosen[:-1], chosen[-1:] if rng.random() < 0.5 else []
        subscriptions = (
            [next(t for t in topics if t.key == current[0]).subscription] if rng.random() < 0.35 else []
        )
        users.append(User(f"slack:U{i:05d}", groups, current, stale, subscriptions))
    return users


def _without_behaviour(engine: Any, embedder: Any, settings: Any) -> Matcher:
    """Our matcher on profiles without behaviour: only subscriptions remain."""
    from push.matching import Matcher
    from push.profiles import Profiles

    class NoBehaviour(Profiles):
        def load(self, users: Iterable[tuple[str, str]]) -> dict[str, Profile]:
            return {}

    return Matcher(engine, embedder, settings, profiles=NoBehaviour(engine, embedder, settings))


def _ids(picks: dict[str, list[Candidate]]) -> dict[str, list[str]]:
    return {key: [c.document_id for c in candidates] for key, candidates in picks.items()}


def recency(engine: Any, recipients: list[Any]) -> dict[str, list[str]]:
    from privacy.access import can_read
    from push.matching import changed_documents

    newest = sorted(changed_documents(engine, since=SINCE, now=NOW), key=lambda d: d.changed_at, reverse=True)
    return {r.key: [d.id for d in newest if can_read(r.groups, d.acl_groups)][:K] for r in recipients}


def no_decay(engine: Any, embedder: Any, settings: Any, recipients: list[Any]) -> dict[str, list[str]]:
    """Our matcher with profiles rebuilt from scratch under a half-life of ~forever (an ablation)."""
    from sqlalchemy import delete

    from core.db import session_scope
    from core.models import InterestProfileRow, InterestProfileStateRow
    from push.matching import Matcher

    with session_scope(engine) as session:
        session.execute(delete(InterestProfileRow))
        session.execute(delete(InterestProfileStateRow))
    flat = settings.replace(push_interest_half_life_days=1e6)
    return _ids(Matcher(engine, embedder, flat).match(recipients, since=SINCE, now=NOW, k=K))


def evaluate(
    users: list[User], picks: dict[str, list[str]], truth: dict[str, str | None]
) -> dict[str, float]:
    precision, delivered, recall, stale, reached = [], [], [], [], 0
    for user in users:
        relevant = {d for d, t in truth.items() if t in user.current}
        got = picks.get(user.key, [])[:K]
        hits = sum(truth.get(d) in user.current for d in got)
        precision.append(hits / K)
        recall.append(hits / len(relevant) if relevant else 0.0)
        if got:
            reached += 1
            delivered.append(hits / len(got))
            stale.append(sum(truth.get(d) in user.stale for d in got) / len(got))

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), 4) if values else 0.0

    return {
        "precision@5": mean(precision), "precision@5_of_delivered": mean(delivered), "recall": mean(recall),
        "users_with_digest": round(reached / len(users), 4), "stale_interest_share": mean(stale),
    }  # fmt: skip


def _profile_vectors(engine: Any) -> tuple[np.ndarray, np.ndarray]:
    from sqlmodel import Session, select

    from core.models import InterestProfileRow

    with Session(engine) as session:
        rows = list(session.execute(select(InterestProfileRow)).scalars())
    vectors = [np.frombuffer(r.vectors, np.float32).reshape(len(r.labels), r.dim) for r in rows if r.labels]
    return np.vstack(vectors), np.array([len(v) for v in vectors])


def scale_child(path: str, n_users: int, n_docs: int, seed: int) -> dict[str, Any]:
    """Runs in its own process: builds the arrays, scores them, reports time and peak memory."""
    from push.matching import COARSE_DIM
    from push.scoring import Documents, Users, score_blocks

    rng = np.random.default_rng(seed)
    data = np.load(path)
    real, centroids, counts = data["docs"], data["interests"], data["counts"]
    dim = real.shape[1]

    def unit(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        return out

    def noise(rows: int, scale: float) -> np.ndarray:
        return scale * rng.standard_normal((rows, dim), dtype=np.float32)

    pairs = rng.integers(0, len(real), (n_docs, 2))
    docs = unit(real[pairs[:, 0]] + 0.5 * real[pairs[:, 1]] + noise(n_docs, 0.02))
    per_user = rng.choice(counts, n_users)
    offsets = np.r_[0, np.cumsum(per_user)].astype(np.int64)
    interests = unit(centroids[rng.integers(0, len(centroids), offsets[-1])] + noise(int(offsets[-1]), 0.03))
    restricted = rng.random(n_docs) < 0.1
    readable = np.ones((4, n_docs), bool)
    readable[0, restricted] = False
    for g in (1, 2, 3):
        readable[g, restricted & (rng.integers(1, 4, n_docs) != g)] = False
    excluded_len = rng.integers(0, 20, n_users)
    users = Users(
        vectors=interests, gains=rng.uniform(0.4, 0.9, offsets[-1]).astype(np.float32), offsets=offsets,
        reader=rng.choice(4, n_users, p=[0.85, 0.05, 0.05, 0.05]).astype(np.int64),
        excluded_offsets=np.r_[0, np.cumsum(excluded_len)].astype(np.int64),
        excluded=rng.integers(0, n_docs, excluded_len.sum()).astype(np.int64),
    )  # fmt: skip
    documents = Documents(docs, rng.uniform(0.5, 1.0, n_docs).astype(np.float32), np.zeros(n_docs), readable)
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now: the scoring's own peak
    started, cpu = time.perf_counter(), time.process_time()
    fast = score_blocks(users, documents, k=K, coarse_dim=COARSE_DIM)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    peak = _rss_mb("VmHWM")
    # How much the fast path (bf16, 128-d coarse stage) changes the picks, on a sample of users.
    sample = 2000
    head = Users(users.vectors[: offsets[sample]], users.gains[: offsets[sample]], offsets[: sample + 1],
                 users.reader[:sample], users.excluded_offsets[: sample + 1], users.excluded)  # fmt: skip
    exact = score_blocks(head, documents, k=K, precision="fp32")
    overlap = [
        len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (a >= 0).sum())
        for a, b in zip(exact.document, fast.document[:sample], strict=True)
    ]
    import torch

    score_ratio = float(fast.score[:sample].sum() / max(float(exact.score.sum()), 1e-9))
    return {
        "scale_100k_users_10k_docs_s": round(seconds, 2), "scale_cpu_s": round(cpu_seconds, 2),
        "scale_users": n_users, "scale_docs": n_docs, "scale_interests": int(offsets[-1]),
        "scale_peak_rss_mb": round(peak, 1), "scale_rss_before_scoring_mb": round(before, 1),
        "scale_users_with_picks": round(float((fast.document[:, 0] >= 0).mean()), 4),
        "scale_fast_vs_exact_overlap@5": round(float(np.mean(overlap)), 4),
        "scale_fast_vs_exact_score_ratio": round(score_ratio, 4),
        "scale_torch_threads": torch.get_num_threads(), "scale_load_average_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def _rss_mb(field_name: str) -> float:
    """VmRSS or VmHWM (peak) of this process from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--per-topic", type=int, default=8, help="new documents per handbook topic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale-users", type=int, default=100_000)
    parser.add_argument("--scale-docs", type=int, default=10_000)
    parser.add_argument("--scale-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child:
        import torch

        torch.set_num_threads(1)  # the scale figures are for one thread
        print(json.dumps(scale_child(args.scale_child, args.scale_users, args.scale_docs, args.seed)))
        return
    results = simulate(args)
    scale_input = results.pop("_scale_input")
    results |= child_json(__file__, *sys.argv[1:], "--scale-child", scale_input)  # the same options
    shutil.rmtree(Path(scale_input).parent, ignore_errors=True)  # the simulation's database and arrays
    for baseline in ("recency", "subscription"):
        ratio = results["precision@5"] / max(results[f"precision@5_{baseline}_baseline"], 1e-9)
        results[f"precision@5_vs_{baseline}_x"] = round(ratio, 2)
    r = results
    summary = (
        f"{r['users']} simulated users, {r['new_documents']} new docs: precision@5 {r['precision@5']} "
        f"= {r['precision@5_vs_recency_x']:.2f}x recency ({r['precision@5_recency_baseline']}), "
        f"subscriptions-only {r['precision@5_subscription_baseline']}; recall {r['recall']}; "
        f"{r['scale_users']:,} users x {r['scale_docs']:,} docs scored in "
        f"{r['scale_100k_users_10k_docs_s']} s ({r['scale_cpu_s']} s CPU, "
        f"peak RSS {r['scale_peak_rss_mb']} MB)"
    )
    path = write_results("push", results, summary=summary)
    print(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
