from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge.answer import _sentences, extractive_answer
from knowledge.embeddings import Embedder
from knowledge.types import Hit


def _hit(text: str, chunk_id: int = 1, score: float = 0.8) -> Hit:
    return Hit(
        chunk_id=chunk_id,
        score=score,
        text=text,
        section="Employee faq",
        anchor=f"q{chunk_id}",
        page=None,
        document_id="handbook:faq.jsonl",
        title="FAQ",
        uri="handbook/faq.jsonl",
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_extractive_answer_answers_instead_of_repeating_the_question(embedder: Embedder) -> None:
    question = "How many vacation days do I get?"
    hits = [
        _hit(
            "How many vacation days do I get? Full-time employees on a 5-day week get 30 working days "
            "per calendar year. Part-time staff get a pro-rata share."
        )
    ]
    answer = extractive_answer(embedder.encode([question])[0], hits, embedder=embedder, min_score=0.1)
    assert "30 working days" in answer.text
    assert "How many vacation days do I get?" not in answer.text
    assert answer.text.count("[1]") >= 1 and not answer.abstained


def test_a_passage_of_questions_only_still_gives_an_answer(embedder: Embedder) -> None:
    hits = [_hit("Where do I park my bike? Can I bring a guest to the canteen?")]
    answer = extractive_answer(
        embedder.encode(["bike parking"])[0], hits, embedder=embedder, min_score=0.1, max_sentences=1
    )
    assert answer.text == "Where do I park my bike? [1]"


NOTICE_TABLE = (
    "| Length of vacation | Request at least |\n|---|---|\n"
    "| Up to 2 days | 3 working days in advance |\n"
    "| 3 to 10 consecutive working days | 2 weeks in advance |\n"
    "| More than 10 consecutive working days | 6 weeks in advance |"
)
FAQ_ENTRY = (
    "How many vacation days do I get? Full-time employees on a 5-day week get 30 working days per "
    "calendar year; continuous three-shift workers get 2 more. Part-time staff get a pro-rata share. "
    "Your balance is in PeopleHub > Time Off. Can I carry days over? Up to 5 days, until 31 March."
)


def test_an_faq_entry_restating_the_question_answers_with_what_follows_it(embedder: Embedder) -> None:
    # `make run`'s first question: the table rows share more words with it than the FAQ's answer does.
    question = "How many vacation days do I get?"
    hits = [_hit(FAQ_ENTRY, 1, 0.67), _hit(NOTICE_TABLE, 2, 0.6)]
    answer = extractive_answer(embedder.encode([question])[0], hits, embedder=embedder, min_score=0.1)
    assert answer.text.startswith("Full-time employees on a 5-day week get 30 working days")
    assert "Request at least" not in answer.text and "carry" not in answer.text  # the next entry's
    assert answer.text.count("[1]") == 3


def test_without_a_restated_question_the_closest_sentences_answer(embedder: Embedder) -> None:
    question = "How far ahead must I request two weeks off?"
    hits = [_hit(FAQ_ENTRY, 1, 0.6), _hit(NOTICE_TABLE, 2, 0.67)]
    answer = extractive_answer(
        embedder.encode([question])[0], hits, embedder=embedder, min_score=0.1, max_sentences=2
    )
    assert "2 weeks in advance" in answer.text


def test_sentences_go_on_after_abbreviations_before_a_number_or_lower_case() -> None:
    text = (
        "Call the IT on-call on **ext. 4499** at night. For travel, e.g. to a customer, use the VPN. "
        "Reports are paid on the 20th. Approval takes approx. 5 days."
    )
    assert _sentences(text) == [
        "Call the IT on-call on ext. 4499 at night.",  # Markdown emphasis rendered plain
        "For travel, e.g. to a customer, use the VPN.",
        "Reports are paid on the 20th.",
        "Approval takes approx. 5 days.",
    ]


PARKING = (
    "Employees park in car park P2 behind Building B. The barrier opens with your badge. "
    "Visitors park in P1 at the main gate."
)
CANTEEN = (
    "The canteen in Building B serves lunch from 11:30. Employees pay with their badge. "
    "Visitors pay by card at the till."
)


@pytest.mark.parametrize(
    ("question", "expected", "cited", "not_cited"),
    [
        # Sentences stitched from several passages cite passages that do not hold the answer.
        ("Where do employees park their car?", "P2", "[1]", "[2]"),
        # The best-ranked passage holds none of the question's key terms: the closest sentence's.
        ("From what time is lunch served in the canteen?", "11:30", "[2]", "[1]"),
    ],
)
def test_the_answer_quotes_one_passage_so_every_citation_holds_what_it_is_cited_for(
    embedder: Embedder, question: str, expected: str, cited: str, not_cited: str
) -> None:
    hits = [_hit(PARKING, 1, 0.7), _hit(CANTEEN, 2, 0.6)]
    answer = extractive_answer(
        embedder.encode([question])[0], hits, embedder=embedder, min_score=0.1, question=question
    )
    assert expected in answer.text
    assert cited in answer.text and not_cited not in answer.text
