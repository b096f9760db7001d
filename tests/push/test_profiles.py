"""Interest profiles: incremental updates, decay, several interests, negative feedback, explanations."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine

from core.db import session_scope
from core.models import BehaviourEventRow, utcnow
from core.settings import Settings
from knowledge.embeddings import Embedder
from push.behaviour import short_label
from push.profiles import Profile, Profiles
from tests.push.conftest import NOW, Behaviour, Library

ALICE = "slack:UALICE"


def test_updates_are_incremental_and_never_fold_an_event_twice(
    profiles: Profiles, behaviour: Behaviour
) -> None:
    first = behaviour.ask(ALICE, "How do I connect to the VPN from home?")
    second = behaviour.ask(ALICE, "The VPN client keeps disconnecting", at=NOW - timedelta(days=1))
    report = profiles.update()
    assert (report.events, report.profiles) == (2, 1)
    stored = profiles.load([("slack", "UALICE")])[ALICE]
    assert stored.last_event_id == second > first
    weight = stored.decayed(NOW, half_life_days=30).sum()

    assert profiles.update().events == 0  # nothing new: nothing folded
    assert profiles.update(users=[("slack", "UALICE")]).events == 0
    third = behaviour.ask(ALICE, "Which VPN gateway should I use in Orrenfeld?", at=NOW)
    assert profiles.update(users=[("slack", "UALICE")]).events == 1  # one person's update ...
    assert profiles.update().events == 0  # ... is not folded again by the full one
    again = profiles.load([("slack", "UALICE")])[ALICE]
    assert again.last_event_id == third
    assert again.decayed(NOW, half_life_days=30).sum() == pytest.approx(weight + 1.0, rel=0.02)


def test_concurrent_updates_fold_each_event_once(
    migrated: Engine, embedder: Embedder, settings: Settings, behaviour: Behaviour
) -> None:
    users = [f"slack:U{n}" for n in range(6)]
    for n in range(30):
        behaviour.ask(
            users[n % 6], f"How do I connect to the VPN from site {n}?", at=NOW - timedelta(hours=30 - n)
        )
    reference = Profiles(migrated, embedder, settings)
    with ThreadPoolExecutor(4) as pool:  # two full updates and two single-person ones, all at once
        jobs = [pool.submit(Profiles(migrated, embedder, settings).update) for _ in range(2)]
        jobs += [
            pool.submit(Profiles(migrated, embedder, settings).update, users=[("slack", "U0")])
            for _ in range(2)
        ]
        folded = sum(job.result().events for job in jobs)
    assert folded == 30
    loaded = reference.load([("slack", f"U{n}") for n in range(6)])
    for u in range(6):  # each event counted once, decayed from its own time (30 - n hours ago)
        expected = sum(0.5 ** ((30 - n) / 24 / 30) for n in range(u, 30, 6))
        assert loaded[f"slack:U{u}"].decayed(NOW, half_life_days=30).sum() == pytest.approx(
            expected, rel=1e-4
        )
    assert reference.update().events == 0


def test_weights_halve_every_half_life(
    make_settings: Callable[..., Settings], migrated: Engine, embedder: Embedder, behaviour: Behaviour
) -> None:
    settings = make_settings(push_interest_half_life_days=10)
    profiles = Profiles(migrated, embedder, settings)
    behaviour.ask(ALICE, "How do I book a meeting room?", at=NOW - timedelta(days=20))
    profiles.update()
    (interest,) = profiles.interests("slack", "UALICE", now=NOW)
    assert interest.weight == pytest.approx(0.25, rel=1e-3)
    (later,) = profiles.interests("slack", "UALICE", now=NOW + timedelta(days=10))
    assert later.weight == pytest.approx(0.125, rel=1e-3)
    # Far enough in the past an interest is forgotten when the next event arrives.
    behaviour.ask(ALICE, "What is on the canteen menu today?", at=NOW + timedelta(days=60))
    profiles.update()
    labels = [i.label for i in profiles.interests("slack", "UALICE", now=NOW + timedelta(days=60))]
    assert labels == ['you asked about "What is on the canteen menu today"']


def test_several_interests_survive_side_by_side(profiles: Profiles, behaviour: Behaviour) -> None:
    for text in (
        "How do I set up the VPN?",
        "VPN connection fails with error 809",
        "Is the VPN needed for email?",
    ):
        behaviour.ask(ALICE, text)
    for text in ("How long is parental leave?", "Can fathers take parental leave?"):
        behaviour.ask(ALICE, text)
    behaviour.ask(ALICE, "Where do I park my car at headquarters?")
    profiles.update()
    interests = profiles.interests("slack", "UALICE", now=NOW)
    assert len(interests) == 3
    text = " ".join(i.label for i in interests)
    assert "VPN" in text and "parental leave" in text and "park" in text
    assert interests[0].weight > interests[-1].weight  # three VPN questions outweigh one parking one


def test_the_weakest_interest_makes_room_past_the_maximum(
    make_settings: Callable[..., Settings], migrated: Engine, embedder: Embedder, behaviour: Behaviour
) -> None:
    profiles = Profiles(migrated, embedder, make_settings(push_interest_max=2))
    behaviour.ask(ALICE, "How do I reset my password?", at=NOW - timedelta(days=30))
    behaviour.ask(ALICE, "How long is parental leave?", at=NOW - timedelta(days=2))
    behaviour.ask(ALICE, "When does the shuttle bus to Orrenfeld leave?", at=NOW - timedelta(days=1))
    profiles.update()
    labels = [i.label for i in profiles.interests("slack", "UALICE", now=NOW)]
    assert len(labels) == 2
    assert not any("password" in label for label in labels)  # the oldest, weakest one went


def test_negative_feedback_pushes_an_interest_down(
    profiles: Profiles, behaviour: Behaviour, library: Library
) -> None:
    library.add("canteen.md", "Canteen", "The canteen serves lunch from 11:30 to 14:00 with a weekly menu.")
    bob, carol = "slack:UBOB", "slack:UCAROL"
    for user in (bob, carol):
        asked = behaviour.ask(user, "What is on the canteen menu this week?", cited=["canteen.md"])
        behaviour.rate(user, asked, 1 if user == bob else -1)
    profiles.update()
    liked = profiles.interests("slack", "UBOB", now=NOW)[0].weight
    disliked = profiles.interests("slack", "UCAROL", now=NOW)
    assert disliked == [] or disliked[0].weight < 0.5 * liked
    # Enough thumbs-down and the interest is gone.
    asked = behaviour.ask(bob, "Canteen opening hours?", cited=["canteen.md"], at=NOW - timedelta(days=1))
    for _ in range(4):
        behaviour.rate(bob, asked, -1, at=NOW - timedelta(days=1))
    profiles.update()
    assert profiles.interests("slack", "UBOB", now=NOW) == []


def test_interests_explain_themselves(profiles: Profiles, behaviour: Behaviour, library: Library) -> None:
    library.add("vpn.md", "VPN access with HaldenConnect", "Install HaldenConnect and sign in with HaldenID.")
    asked = behaviour.ask(ALICE, "How do I get VPN access?", cited=["vpn.md"])
    profiles.update()
    (interest,) = profiles.interests("slack", "UALICE", now=NOW)
    assert interest.reason == 'because you asked about "How do I get VPN access"'
    behaviour.click(ALICE, asked, "vpn.md")  # a click is stronger evidence: it names the interest now
    behaviour.subscribe(ALICE, "expenses")
    profiles.update()
    reasons = [i.reason for i in profiles.interests("slack", "UALICE", now=NOW)]
    assert reasons == [
        'because you subscribed to "expenses"',
        'because you opened "VPN access with HaldenConnect"',
    ]
    assert profiles.load([("slack", "UALICE")])[ALICE].seen == ["vpn.md"]


def test_events_that_say_nothing_are_skipped_but_consumed(profiles: Profiles, behaviour: Behaviour) -> None:
    asked = behaviour.ask(ALICE, "", refused=True)
    behaviour.rate(ALICE, asked, 0)  # a written comment
    behaviour.rate(ALICE, 999_999, 1)  # points at no question
    last = behaviour.click(ALICE, asked, "no-such-document.md")
    report = profiles.update()
    assert (report.events, report.signals) == (4, 1)  # the click resolves to nothing and folds nothing
    profile = profiles.load([("slack", "UALICE")])[ALICE]
    assert profile.last_event_id == last and profile.labels == []


def test_clicks_resolve_through_the_citation_number_and_the_anchor(
    profiles: Profiles, behaviour: Behaviour, library: Library
) -> None:
    # Two documents from one file (CSV rows share the file's uri); the anchor tells them apart.
    for doc_id, title, text in (
        ("phones#row-1", "IT service desk", "Call the IT service desk on ext. 4410."),
        ("phones#row-2", "Canteen", "The canteen office is on ext. 2210."),
    ):
        library.add(doc_id, title, text, uri="kb/phones.csv", sections=[(doc_id.split("#")[1], text)])
    asked = behaviour.ask(ALICE, "What is the number of the service desk?", cited=[])
    with session_scope(profiles.engine) as session:  # the answer cited the second row, as a link
        row = session.get(BehaviourEventRow, asked)
        assert row is not None
        row.data = {
            "citations": [{"number": 1, "title": "Canteen", "uri": "kb/phones.csv#row-2", "section": ""}]
        }
        session.add(row)
    # Slack hands back the button's full URL (KB_DOCS_BASE_URL in front): the number resolves it.
    behaviour.click(ALICE, asked, "ignored", number=1, uri="https://docs.example/kb/phones.csv#row-2")
    profiles.update()
    profile = profiles.load([("slack", "UALICE")])[ALICE]
    assert profile.seen == ["phones#row-2"]
    assert 'you opened "Canteen"' in profile.labels


def test_unknown_people_have_no_profile(profiles: Profiles) -> None:
    assert profiles.update().events == 0
    assert profiles.load([("slack", "UNOBODY")]) == {}
    assert profiles.interests("slack", "UNOBODY", now=NOW) == []
    assert profiles.forget("slack", "UNOBODY") is False


def test_forget_deletes_a_profile(profiles: Profiles, behaviour: Behaviour) -> None:
    behaviour.ask(ALICE, "How do I order a new laptop?")
    profiles.update()
    assert profiles.forget("slack", "UALICE") is True
    assert profiles.load([("slack", "UALICE")]) == {}


def test_a_late_event_counts_as_much_as_it_would_now(embedder: Embedder, settings: Settings) -> None:
    profile = Profile.empty("slack", "U", embedder.dim)
    vpn, leave = embedder.encode(["VPN access from home", "parental leave"])
    profile.fold(vpn, 1.0, "vpn", NOW, settings=settings)
    profile.fold(leave, 1.0, "leave", NOW - timedelta(days=30), settings=settings)  # arrives late
    assert profile.as_of == NOW
    assert np.allclose(sorted(profile.weights), [0.5, 1.0])


def test_short_labels_cut_at_a_word() -> None:
    long = "How do I request a replacement laptop when mine was damaged during a business trip abroad?"
    label = short_label(long)
    assert label.endswith("…") and len(label) <= 61 and label[:-1] in long


def _event_with_id(engine: Engine, event_id: int, text: str, at: datetime) -> None:
    """A question event with a chosen id: how a row committed out of id order looks to a reader."""
    row = BehaviourEventRow(
        id=event_id, kind="question", platform="slack", user_id="UALICE", channel="D1", thread="",
        text=text, data={}, at=at,
    )  # fmt: skip
    with session_scope(engine) as session:
        session.add(row)


@pytest.mark.parametrize("settle_s", [0.0, 30.0])
def test_a_row_committed_out_of_id_order_is_folded_after_the_settle_time(
    settle_s: float,
    make_settings: Callable[..., Settings],
    migrated: Engine,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two writers at once: id 2 is visible before id 1 commits. Without a settle time the update's
    cursor passes id 1 for good; with one, id 2 waits until it is older than the settle time."""
    import push.profiles

    now = utcnow()
    monkeypatch.setattr(push.profiles, "utcnow", lambda: now)
    profiles = Profiles(migrated, embedder, make_settings(push_event_settle_s=settle_s))
    _event_with_id(migrated, 2, "How do I book a meeting room?", now - timedelta(seconds=1))
    assert profiles.update().events == (1 if settle_s == 0 else 0)
    _event_with_id(migrated, 1, "What is on the canteen menu today?", now - timedelta(seconds=2))
    monkeypatch.setattr(push.profiles, "utcnow", lambda: now + timedelta(seconds=settle_s + 1))
    folded = profiles.update().events
    labels = {i.label for i in profiles.interests("slack", "UALICE", now=now)}
    if settle_s == 0:  # the failure the settle time prevents: the late row is never folded
        assert folded == 0
        assert labels == {'you asked about "How do I book a meeting room"'}
    else:
        assert folded == 2
        assert labels == {
            'you asked about "How do I book a meeting room"',
            'you asked about "What is on the canteen menu today"',
        }
