"""Honest answers: the evidence gate, the citation check and repair, the repetition stop, the
abstention sentence, and Markdown rendered plain, against a recording FakeLLM (no real model)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge.answer import (
    ABSTAIN_TEXT,
    evidence,
    extractive_answer,
    key_terms,
    misses_amount,
    off_topic,
    plain_text,
    quotes_passage,
    weak_evidence,
)
from knowledge.citations import RepetitionStop, check_citations, restates, support
from knowledge.embeddings import Embedder
from knowledge.generation import FALLBACK_MODEL, generate_answer, stream_answer
from knowledge.prompt import NOT_FOUND, SYSTEM_PROMPT, build_prompt, could_be_not_found, is_not_found
from knowledge.types import Answer, Hit, Question
from tests.fakes import FakeLLM

LEAVE = ("Leave policy", "Annual leave", "Full-time employees get 30 working days of annual leave per year.")
BADGE = ("Badges", "Wallet", "The badge wallet holds at most EUR 150. Top it up at the cafeteria.")
VPN = ("VPN", "Session limits", "A VPN session ends after 12 hours. Idle sessions end after 30 minutes.")
LEAVE_ZH = ("休假制度", "年假天数", "全职员工每年享有 30 个工作日的年假。")
SICK = (
    "Sick leave",
    "Notice",
    "From the third calendar day of illness a doctor's note is required. "
    "In production an e-mail alone is not valid notice; call the shift lead.",
)


def _hits(*passages: tuple[str, str, str], scores: list[float] | None = None) -> list[Hit]:
    scores = scores or [0.7 - 0.05 * i for i in range(len(passages))]
    return [
        Hit(
            chunk_id=i,
            score=score,
            text=text,
            section=section,
            anchor=section.lower().replace(" ", "-"),
            page=None,
            document_id=f"doc-{i}",
            title=title,
            uri=f"handbook/{title.lower().replace(' ', '-')}.md",
            updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, ((title, section, text), score) in enumerate(zip(passages, scores, strict=False))
    ]


# The evidence gate -------------------------------------------------------------------------------


def test_key_terms_leave_out_how_a_question_is_asked() -> None:
    assert key_terms("How many vacation days do I get?") == ["vacat", "day"]
    assert "多少" not in key_terms("全职员工每年有多少天年假？")
    assert all(len(term) == 2 for term in key_terms("全职员工每年有多少天年假？"))


def test_the_gate_abstains_on_a_low_score_or_missing_key_terms() -> None:
    hits = _hits(LEAVE, BADGE, VPN)
    assert not weak_evidence("How many annual leave days?", hits, min_score=0.4, min_coverage=0.55)
    assert weak_evidence("How many annual leave days?", hits, min_score=0.8, min_coverage=0.55)
    # "Can I bring my dog?": nothing in the passages is about a dog or bringing one.
    found = evidence("Can I bring my dog to the office?", hits)
    assert found.missing == ("bring", "dog", "offic") and found.coverage == 0.0
    assert weak_evidence("Can I bring my dog to the office?", hits, min_score=0.4, min_coverage=0.55)
    assert not weak_evidence("Can I bring my dog to the office?", hits, min_score=0.4, min_coverage=0.0)
    assert weak_evidence("anything", [], min_score=-1.0)


def test_a_chinese_question_is_held_to_the_scaled_bar() -> None:
    hits = _hits(LEAVE_ZH)
    assert evidence("全职员工每年有多少天年假？", hits).chinese
    assert not weak_evidence("全职员工每年有多少天年假？", hits, min_score=0.4, min_coverage=0.55)
    assert weak_evidence("公司的股票价格是多少？", hits, min_score=0.4, min_coverage=0.55)


async def test_weak_evidence_abstains_before_the_model_is_asked(embedder: Embedder) -> None:
    llm = FakeLLM()
    question = Question("What is the stock price of Halden today?")
    parts = stream_answer(
        question, _hits(LEAVE, BADGE), llm=llm, query_vector=embedder.encode([question.text])[0],
        embedder=embedder, min_score=0.4, min_coverage=0.55,
    )  # fmt: skip
    answer = [part async for part in parts][-1]
    assert isinstance(answer, Answer) and answer.abstained and answer.text.startswith(ABSTAIN_TEXT)
    assert llm.history == []


def test_the_extractive_answer_abstains_through_the_same_gate(embedder: Embedder) -> None:
    question = "Can I bring my dog to the office?"
    answer = extractive_answer(
        embedder.encode([question])[0], _hits(LEAVE, BADGE), embedder=embedder, min_score=0.4,
        question=question, min_coverage=0.55,
    )  # fmt: skip
    assert answer.abstained and answer.text.startswith(ABSTAIN_TEXT) and len(answer.citations) == 2


# The prompt and the abstention sentence ----------------------------------------------------------


async def test_the_prompt_numbers_passages_and_asks_for_the_fixed_abstention_sentence() -> None:
    llm = FakeLLM()
    prompt = await build_prompt("休几天年假？", _hits(LEAVE_ZH, BADGE), llm=llm, max_context_tokens=500)
    system, user = prompt.messages
    assert f"reply with exactly: {NOT_FOUND}" in system["content"] == SYSTEM_PROMPT
    assert "same language as the question" in SYSTEM_PROMPT and "like [2]" in SYSTEM_PROMPT
    assert "[1] 全职员工每年享有 30 个工作日的年假。\n(Source: 休假制度 — 年假天数)" in user["content"]
    assert (
        "[2] The badge wallet holds at most EUR 150. Top it up at the cafeteria.\n(Source: Badges — Wallet)"
        in user["content"]
    )
    assert user["content"].rstrip().endswith("Question: 休几天年假？")  # the question comes last


@pytest.mark.parametrize(
    "reply", [NOT_FOUND, f"  {NOT_FOUND}", "**Not in the documents.**", "文档中没有相关信息。"]
)
def test_the_abstention_sentence_is_recognised_in_its_forms(reply: str) -> None:
    assert is_not_found(reply)
    assert could_be_not_found(reply[:4])


def test_an_answer_is_not_taken_for_the_abstention_sentence() -> None:
    assert not is_not_found("Not every document applies [1].")
    assert not could_be_not_found("Full-time employees")


async def test_the_model_abstaining_ends_in_the_products_abstention(embedder: Embedder) -> None:
    llm = FakeLLM(piece_chars=2)
    llm.enqueue(NOT_FOUND)
    question = Question("How many annual leave days?")
    parts = [
        part
        async for part in stream_answer(
            question, _hits(LEAVE, BADGE, scores=[0.5, 0.45]), llm=llm,
            query_vector=embedder.encode([question.text])[0], embedder=embedder, min_score=0.4,
            min_coverage=0.55,
        )
    ]  # fmt: skip
    assert parts[:-1] == []  # held back while it could still be the abstention sentence
    answer = parts[-1]
    assert isinstance(answer, Answer) and answer.abstained and answer.model == "fake-llm"


# The citation check and repair -------------------------------------------------------------------

PASSAGES = {1: f"{LEAVE[0]} {LEAVE[2]}", 2: f"{BADGE[0]} {BADGE[2]}", 3: f"{VPN[0]} {VPN[2]}"}


def test_a_claim_cited_to_the_passage_that_holds_it_is_kept() -> None:
    checked = check_citations("The wallet holds at most EUR 150 [2].", PASSAGES)
    assert (checked.text, checked.kept, checked.repaired, checked.unsupported) == (
        "The wallet holds at most EUR 150 [2].", 1, 0, 0,
    )  # fmt: skip


def test_a_claim_cited_to_the_wrong_passage_is_renumbered_to_the_right_one() -> None:
    checked = check_citations("A VPN session ends after 12 hours [1].", PASSAGES)
    assert checked.text == "A VPN session ends after 12 hours [3]." and checked.repaired == 1


def test_an_uncited_claim_gets_the_passage_that_holds_it() -> None:
    checked = check_citations("Full-time employees get 30 working days", PASSAGES)
    assert checked.text == "Full-time employees get 30 working days [1]"
    assert check_citations("You get 30 working days.", PASSAGES).text == "You get 30 working days [1]."


def test_a_claim_no_passage_holds_is_unsupported_and_uncited() -> None:
    checked = check_citations("The VPN bandwidth limit is EUR 5,000 [3].", PASSAGES)
    assert checked.unsupported == 1 and "[" not in checked.text
    assert support("The wallet holds EUR 999", PASSAGES[2]) == 0.0  # a number the passage lacks


def test_a_marker_after_according_to_is_the_next_claims_source_not_a_claim() -> None:
    checked = check_citations("According to [2], the wallet holds at most EUR 150.", PASSAGES)
    assert (
        checked.unsupported == 0 and checked.text == "According to [2], the wallet holds at most EUR 150 [2]."
    )
    zh = {1: LEAVE_ZH[2]}
    checked = check_citations(
        "根据第 [1] 条，全职员工每年享有30个工作日的年假 [1]。", zh, "全职员工有多少天年假？"
    )
    assert (checked.unsupported, checked.kept) == (0, 2)
    # The lead-in's marker follows the claim's evidence: re-numbered, or gone with nothing to hold it.
    assert check_citations("See [1]: a VPN session ends after 12 hours.", PASSAGES).text.startswith(
        "See [3]:"
    )
    checked = check_citations("According to [1], the VPN bandwidth limit is EUR 5,000.", PASSAGES)
    assert checked.unsupported == 1 and "[" not in checked.text


def test_invented_numbers_and_markers_before_any_claim_are_removed() -> None:
    checked = check_citations("[2] The wallet holds at most EUR 150 [2][7].", PASSAGES)
    assert checked.text == " The wallet holds at most EUR 150 [2]."


async def test_a_wrong_citation_is_repaired_in_the_final_answer(embedder: Embedder) -> None:
    llm = FakeLLM()
    llm.enqueue("The badge wallet holds at most EUR 150 [1].")
    question = Question("What is the most the badge wallet holds?")
    answer = await generate_answer(
        question, _hits(LEAVE, BADGE), llm=llm, query_vector=embedder.encode([question.text])[0],
        embedder=embedder, min_score=0.4,
    )  # fmt: skip
    assert answer.text == "The badge wallet holds at most EUR 150 [1]."
    assert [c.title for c in answer.citations] == ["Badges"]  # passage 2 of the prompt, now [1]


async def test_an_unsupported_claim_falls_back_to_the_extractive_answer(embedder: Embedder) -> None:
    llm = FakeLLM()
    llm.enqueue("The wallet holds EUR 999 and is free of charge [2].")
    question = Question("What is the most the badge wallet holds?")
    answer = await generate_answer(
        question, _hits(LEAVE, BADGE), llm=llm, query_vector=embedder.encode([question.text])[0],
        embedder=embedder, min_score=0.4,
    )  # fmt: skip
    assert answer.model == FALLBACK_MODEL and "999" not in answer.text and "150" in answer.text


@pytest.mark.parametrize(
    "reply",
    [
        "VPN — Session limits [1]",  # a passage's heading
        "How long can a VPN session last? [1]",  # the question
        "Session limits: how long a VPN session can last [1].",  # both, reworded
    ],
)
def test_an_answer_that_only_restates_the_question_or_a_heading_is_recognised(reply: str) -> None:
    assert restates(reply, "How long can a VPN session last?", ["VPN — Session limits"])


@pytest.mark.parametrize(
    "reply",
    [
        "A VPN session ends after 12 hours [1].",
        "It ends after twelve hours [1].",
        "Sessions end at midnight.",
    ],
)
def test_an_answer_with_a_fact_of_its_own_is_not_a_restatement(reply: str) -> None:
    assert not restates(reply, "How long can a VPN session last?", ["VPN — Session limits"])


@pytest.mark.parametrize(
    ("reply", "question", "heading"),
    [
        ("`__name__` [1]", "Which attribute holds a module's name?", "Modules — Names"),
        ("Reverse order: reversed() [1].", "How do I iterate in reverse order?", "Sequences — Reverse"),
        ("年假有 30 天 [1]。", "年假有多少天？", "休假 — 年假"),
    ],
)
def test_words_are_compared_as_written_not_as_index_terms(reply: str, question: str, heading: str) -> None:
    """Stemming or dropped underscores would make these answers' terms the question's own."""
    assert not restates(reply, question, [heading])
    assert restates("年假有多少天 [1]", "年假有多少天？", [heading])


async def _answered(question: Question, hits: list[Hit], reply: str, embedder: Embedder) -> Answer:
    """The product's answer when the model replies `reply`."""
    llm = FakeLLM()
    llm.enqueue(reply)
    return await generate_answer(
        question, hits, llm=llm, query_vector=embedder.encode([question.text])[0], embedder=embedder,
        min_score=0.4,
    )  # fmt: skip


async def test_an_answer_restating_a_heading_falls_back_to_the_extractive_answer(embedder: Embedder) -> None:
    question = Question("How long can a VPN session last?")
    for reply in ("VPN — Session limits [1]", "A VPN session ends after 12 hours [1]."):
        answer = await _answered(question, _hits(VPN, LEAVE), reply, embedder)
        assert "12 hours" in answer.text
        assert (answer.model == FALLBACK_MODEL) == (reply == "VPN — Session limits [1]")


SICK_QUESTION = "From which day of illness do I need a doctor's note?"


def test_an_answer_from_a_sentence_the_question_is_not_about_is_off_topic() -> None:
    assert off_topic("An e-mail alone is not valid notice [1].", [SICK[2]], SICK_QUESTION)
    assert not off_topic("From the third calendar day [1].", [SICK[2]], SICK_QUESTION)
    assert not off_topic("The third calendar day of illness [1].", [SICK[2], VPN[2]], SICK_QUESTION)


def test_off_topic_judges_nothing_it_cannot_see() -> None:
    # No sentence holds a key term (a question in another language than the passages).
    assert not off_topic("An e-mail alone is not valid notice [1].", [SICK[2]], "从第几天起需要医生证明？")
    # No sentence holds the answer: that is the citation check's call, not this one's.
    assert not off_topic("Ask your manager [1].", [SICK[2]], SICK_QUESTION)


async def test_an_off_topic_answer_falls_back_to_the_extractive_answer(embedder: Embedder) -> None:
    question = Question(SICK_QUESTION)
    for reply in ("An e-mail alone is not valid notice [1].", "From the third calendar day [1]."):
        answer = await _answered(question, _hits(SICK, LEAVE), reply, embedder)
        assert "third calendar day" in answer.text
        assert (answer.model == FALLBACK_MODEL) == reply.startswith("An e-mail")


BADGE_LOSS = (
    "Badges",
    "Lost badges",
    "Report a lost badge to the gatehouse at once. From the second loss within 24 months, "
    "EUR 25 is deducted from your salary.",
)
BADGE_QUESTION = "How much is deducted for losing my badge a second time within 24 months?"
SABBATICAL = "How far in advance do I apply for a sabbatical?"


@pytest.mark.parametrize(
    ("reply", "question", "misses"),
    [
        ("The second loss within 24 months is deducted from your salary [1].", BADGE_QUESTION, True),
        ("EUR 25 is deducted [1].", BADGE_QUESTION, False),
        ("Apply at least three months in advance [1].", SABBATICAL, False),
        ("Apply early in PeopleHub [1].", SABBATICAL, True),
        ("It runs every weekday [1].", "How often does the shuttle run?", False),
        ("需要提前三个月申请 [1]。", "休假需要提前多久申请？", False),
        ("在 PeopleHub 中申请 [1]。", "休假需要提前多久申请？", True),
        # Questions that do not ask for an amount are not judged.
        ("Forward it to the security team [1].", "Where do I forward a suspicious email?", False),
        ("After the probation period [1].", "When can I take parental leave?", False),
    ],
)
def test_an_answer_without_an_amount_asked_for_is_recognised(reply: str, question: str, misses: bool) -> None:
    assert misses_amount(reply, question) is misses


async def test_an_answer_without_the_amount_asked_for_falls_back_to_the_extractive_answer(
    embedder: Embedder,
) -> None:
    question = Question(BADGE_QUESTION)
    for reply in ("The second loss within 24 months is deducted from your salary [1].", "EUR 25 [1]."):
        answer = await _answered(question, _hits(BADGE_LOSS, LEAVE), reply, embedder)
        assert "EUR 25" in answer.text
        assert (answer.model == FALLBACK_MODEL) == reply.startswith("The second loss")


SABBATICAL_LEAVE = (
    "Leave policy",
    "Sabbaticals",
    "After two years of service you can apply for unpaid leave of 1 to 3 months. "
    "Apply at least **3 months** in advance in PeopleHub.",
)
TRAINING_EXEMPT = (
    "Compliance training",
    "Exemptions",
    "Employees on long-term sick leave, parental leave or a sabbatical are exempt. "
    "They complete the courses within **30 days** of returning. "
    "HR records exemptions automatically based on PeopleHub absence data.",
)
QUOTED = (
    "Employees on long-term sick leave, parental leave or a sabbatical are exempt. They complete the "
    "courses within 30 days of returning. HR records exemptions automatically based on PeopleHub "
    "absence data [1]."
)


@pytest.mark.parametrize(
    ("reply", "quoted"),
    [
        (QUOTED, True),
        # Two sentences are what the prompt asks for, quoted or not.
        ("Employees on long-term sick leave, parental leave or a sabbatical are exempt. They complete "
         "the courses within **30 days** of returning [1].", False),
        # Three sentences, one of them the model's own words.
        ("Employees on a sabbatical are exempt. They complete the courses within 30 days of returning. "
         "HR records exemptions automatically based on PeopleHub absence data [1].", False),
        # Three sentences from two passages: stitched, not one passage quoted.
        ("After two years of service you can apply for unpaid leave of 1 to 3 months. Apply at least "
         "3 months in advance in PeopleHub [1]. HR records exemptions automatically based on "
         "PeopleHub absence data [2].", False),
    ],
)  # fmt: skip
def test_a_passage_quoted_at_length_is_recognised(reply: str, quoted: bool) -> None:
    passages = [SABBATICAL_LEAVE[2], TRAINING_EXEMPT[2]]
    assert quotes_passage(reply, passages) is quoted


async def test_a_passage_quoted_instead_of_an_answer_falls_back_to_the_extractive_answer(
    embedder: Embedder,
) -> None:
    question = Question("How far in advance do I have to apply for a sabbatical?")
    hits = _hits(SABBATICAL_LEAVE, TRAINING_EXEMPT)
    quoted = QUOTED.replace("[1]", "[2]")
    for reply in (quoted, "Apply at least 3 months in advance in PeopleHub [1]."):
        answer = await _answered(question, hits, reply, embedder)
        assert "3 months" in answer.text
        assert (answer.model == FALLBACK_MODEL) == (reply == quoted)


# The repetition stop ------------------------------------------------------------------------------


def test_a_sentence_said_twice_is_cut_after_its_first_time() -> None:
    text = "The wallet holds EUR 150 [2]. Top it up at the cafeteria. The wallet holds EUR 150 [2]. The"
    keep = RepetitionStop().check(text)
    assert keep is not None and text[:keep] == "The wallet holds EUR 150 [2]. Top it up at the cafeteria."


def test_a_short_unit_on_repeat_is_cut_to_one_copy() -> None:
    text = "Rooms: A-404, " + "A-404, " * 6
    keep = RepetitionStop().check(text)
    assert keep is not None and text[:keep] == "Rooms: A-404, "


def test_ordinary_text_is_not_stopped() -> None:
    stop = RepetitionStop()
    assert (
        stop.check("Full-time employees get 30 days [1]. Part-time staff get a pro-rata share [1].") is None
    )
    assert stop.check("Call ext. 4410 or ext. 4499.") is None


async def test_a_runaway_reply_is_stopped_and_the_answer_kept(embedder: Embedder) -> None:
    llm = FakeLLM(piece_chars=3)
    loop = "The badge wallet holds at most EUR 150 [2]. " * 40
    llm.enqueue(loop)
    question = Question("What is the most the badge wallet holds?")
    parts = [
        part
        async for part in stream_answer(
            question, _hits(LEAVE, BADGE), llm=llm, query_vector=embedder.encode([question.text])[0],
            embedder=embedder, min_score=0.4,
        )
    ]  # fmt: skip
    answer = parts[-1]
    assert isinstance(answer, Answer) and answer.text == "The badge wallet holds at most EUR 150 [1]."
    assert len("".join(p for p in parts if isinstance(p, str))) < len(loop) / 4  # it stopped reading


# Markdown rendered plain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "plain"),
    [
        ("Report it **within 24 hours** at `ext. 4666`.", "Report it within 24 hours at ext. 4666."),
        ("See the [Remote work policy](../hr/remote.md) first.", "See the Remote work policy first."),
        ("## Opening hours", "Opening hours"),
        ("> Quoted *note* here", "Quoted note here"),
        ("| Menu 1 | EUR 4.20 |", "Menu 1; EUR 4.20"),
        ("Override __new__() and pass *args.", "Override __new__() and pass *args."),
    ],
)
def test_markdown_is_rendered_plain(markdown: str, plain: str) -> None:
    assert plain_text(markdown) == plain


def test_extractive_answers_are_plain_whole_sentences_without_faq_question_lines(embedder: Embedder) -> None:
    faq = (
        "Employee FAQ",
        "",
        "How many vacation days do I get?\n\nFull-time employees get **30 working days** per year. "
        "Your balance is in PeopleHub.",
    )
    question = "How many vacation days does a full-time employee get?"
    answer = extractive_answer(
        embedder.encode([question])[0], _hits(faq, BADGE), embedder=embedder, min_score=0.4,
        question=question, min_coverage=0.55,
    )  # fmt: skip
    assert "Full-time employees get 30 working days per year. [1]" in answer.text
    assert "**" not in answer.text and "How many vacation days do I get?" not in answer.text
