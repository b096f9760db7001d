""" "What's new": time-scoped questions about change answer with a dated, cited, ACL-checked list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase
from knowledge.timefilter import MAX_LOOKBACK_DAYS, parse_time_scope
from knowledge.types import Document, Question, Section
from knowledge.whatsnew import LISTING_MODEL, read_listing, whats_new

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # a Thursday


def doc(key: str, title: str, body: str, age: timedelta, *, acl: tuple[str, ...] = ()) -> Document:
    return Document(
        id=f"news:{key}",
        source="news",
        uri=f"news/{key}.md",
        title=title,
        sections=(Section(body, headings=(title,), anchor=key),),
        updated_at=NOW - age,
        acl_groups=acl,
    )


DOCUMENTS = [
    doc("gifts", "Compliance: gift policy", "Compliance rules for gifts from suppliers.", timedelta(days=1)),
    doc("laptops", "IT: laptop refresh", "IT replaces laptops older than four years.", timedelta(days=2)),
    doc("salary", "HR salary bands", "Salary bands for 2027.", timedelta(hours=5), acl=("hr",)),
    doc("travel", "Travel policy", "Book trains for trips under four hours.", timedelta(days=60)),
    doc("gifts-zh", "合规：礼品规定", "合规部门更新了供应商礼品的规定。", timedelta(days=6)),
    doc("vpn-zh", "VPN 指南", "安装客户端后即可远程访问内网。", timedelta(days=40)),
]


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder) -> KnowledgeBase:
    kb = KnowledgeBase(settings, migrated, embedder=embedder)
    assert kb.ingest_documents("news", DOCUMENTS).ok
    return kb


def listed(kb: KnowledgeBase, text: str, groups: tuple[str, ...] = (), now: datetime = NOW) -> list[str]:
    answer = whats_new(kb.retriever, Question(text, groups=groups), now=now)
    assert answer is not None, text
    assert answer.model == LISTING_MODEL
    assert [c.number for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    return [c.title for c in answer.citations]


def test_without_a_topic_every_readable_change_in_the_window_newest_first(kb: KnowledgeBase) -> None:
    titles = ["Compliance: gift policy", "IT: laptop refresh", "合规：礼品规定"]
    assert listed(kb, "What changed in the last 7 days?") == titles
    assert listed(kb, "what changed in the last 7 days", groups=("hr",)) == ["HR salary bands", *titles]
    assert listed(kb, "last 7 days") == titles  # a question of only a date phrase
    assert listed(kb, "since October") == [*titles, "VPN 指南"]


def test_a_topic_limits_and_ranks_within_the_window(kb: KnowledgeBase) -> None:
    assert listed(kb, "compliance news of the last three days") == ["Compliance: gift policy"]
    assert listed(kb, "what's new in IT this week") == ["IT: laptop refresh"]
    assert listed(kb, "travel news of the last three days") == []  # changed, but 60 days ago


def test_chinese_questions_get_a_chinese_list(kb: KnowledgeBase) -> None:
    # 上周 is the calendar week before this one: 16 to 23 November.
    answer = whats_new(kb.retriever, Question("上周有什么更新"), now=NOW)
    assert answer is not None
    assert [c.title for c in answer.citations] == ["合规：礼品规定"]
    assert answer.text.startswith("2026-11-16 至 2026-11-23新增或更新的文档")
    assert "2026-11-20 — 合规：礼品规定 [1]" in answer.text
    assert listed(kb, "最近一周的合规新闻") == ["合规：礼品规定"]
    assert listed(kb, "最近三天的合规新闻") == []  # the Chinese page changed six days ago


def test_each_entry_is_dated_and_cited_with_its_section(kb: KnowledgeBase) -> None:
    answer = whats_new(kb.retriever, Question("what changed in the last 3 days"), now=NOW)
    assert answer is not None
    assert answer.text.splitlines() == [
        "Documents added or changed since 2026-11-23 (newest first):",
        "1. 2026-11-25 — Compliance: gift policy [1]",
        "2. 2026-11-24 — IT: laptop refresh [2]",
    ]
    first = answer.citations[0]
    assert (first.uri, first.section, first.document_id) == (
        "news/gifts.md#gifts",
        "Compliance: gift policy",
        "news:gifts",
    )


def test_numbers_past_the_bound_give_a_bounded_answer(kb: KnowledgeBase) -> None:
    for text in (
        "what changed in the last 1000000 days",
        "what changed in the last 10**30 days".replace("10**30", "9" * 30),
    ):
        answer = whats_new(kb.retriever, Question(text), now=NOW)
        assert answer is not None
        assert answer.text.startswith(f"I can look back at most {MAX_LOOKBACK_DAYS} days")
        assert len(answer.citations) == 5  # every public document
    scope = parse_time_scope("最近一百万天的更新", now=NOW)
    assert scope is not None and scope.clamped
    assert scope.after == NOW - timedelta(days=MAX_LOOKBACK_DAYS)


def test_an_empty_window_says_so(kb: KnowledgeBase) -> None:
    answer = whats_new(kb.retriever, Question("what changed today"), now=NOW + timedelta(days=30))
    assert answer is not None and answer.citations == []
    assert answer.text == "No document that you can read was added or changed since 2026-12-26."
    zh = whats_new(kb.retriever, Question("今天有什么更新"), now=NOW + timedelta(days=30))
    assert zh is not None and zh.text == "自 2026-12-26 以来，没有你可以查看的文档新增或更新。"


@pytest.mark.parametrize(
    "text",
    [
        "How do I reset my password?",
        "What is the hotel limit in the travel policy this year?",  # a question with a date, not a listing
        "may I work from home",
        "what is the expense limit for a 2 day trip",
        "since year 99999 what changed",  # no date dateparser can read: not a listing
    ],
)
def test_other_questions_are_not_listings(text: str) -> None:
    assert read_listing(text, now=NOW) is None


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("since October", datetime(2026, 10, 1, tzinfo=UTC)),
        ("travel policy changes since 3 Oct?", datetime(2026, 10, 3, tzinfo=UTC)),
        ("since last Friday what changed", datetime(2026, 11, 20, tzinfo=UTC)),
        ("自10月1日以来有什么变化", datetime(2026, 10, 1, tzinfo=UTC)),
        ("合规政策自2026年10月以来的更新", datetime(2026, 10, 1, tzinfo=UTC)),
        ("since 0001-01-01", NOW - timedelta(days=MAX_LOOKBACK_DAYS)),
    ],
)
def test_dates_after_since_are_read_by_dateparser_and_bounded(text: str, after: datetime) -> None:
    scope = parse_time_scope(text, now=NOW)
    assert scope is not None and scope.after == after


def test_the_service_answers_a_time_scoped_question_with_the_listing(kb: KnowledgeBase) -> None:
    # The service reads the clock: the documents are dated relative to NOW, so ask relative to it.
    days = (datetime.now(UTC) - NOW).days
    answer = kb.ask(Question(f"what changed in the last {days + 3} days", groups=("hr",)))
    assert answer.model == LISTING_MODEL
    assert [c.title for c in answer.citations] == [
        "HR salary bands",
        "Compliance: gift policy",
        "IT: laptop refresh",
    ]
    huge = kb.ask(Question("what changed in the last 1000000 days"))
    assert huge.text.startswith("I can look back at most") and not huge.refused
    assert kb.ask(Question("How do I book a train?")).model != LISTING_MODEL
