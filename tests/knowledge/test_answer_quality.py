from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from knowledge import answer_quality
from knowledge.answer_quality import (
    AnswerItem,
    AnswerScore,
    CitedPassage,
    aggregate,
    citation_markers,
    holds_answer,
    link_matches,
    load_answer_set,
    normalise,
    score_answer,
    unknown_links,
)
from knowledge.errors import KnowledgeError

SETS = Path(__file__).resolve().parents[2] / "bench" / "sets"
LEAVE = AnswerItem(
    "How long is partner leave?",
    ("10 working days", "10 个工作日"),
    ("hr/parental-leave.md#halden-partner-leave",),
)
UNANSWERABLE = AnswerItem("Can I bring my dog?", (), (), unanswerable=True)
PASSAGES = [
    CitedPassage(
        1, "handbook/hr/parental-leave.md#halden-partner-leave", "The second parent receives leave."
    ),
    CitedPassage(2, "handbook/hr/benefits.md#summary", "Partner leave: 10 working days, fully paid."),
    CitedPassage(3, "handbook/facilities/parking.md#p1", "Car park P1 has 420 spaces."),
]


def test_the_module_docstring_example_holds() -> None:
    assert doctest.testmod(answer_quality).failed == 0


def test_normalise_folds_case_markup_width_and_spaces_next_to_cjk() -> None:
    assert normalise("  You get **10  Working**\n days ") == "you get 10 working days"
    assert normalise("最多 **5 天**") == normalise("最多5天") == "最多5天"
    assert normalise("３０ 个工作日") == "30个工作日"  # full-width digits
    assert normalise("Monty Python’s “Circus”, 07:00–19:00") == 'monty python\'s "circus", 07:00-19:00'


def test_holds_answer_any_acceptable_string() -> None:
    assert holds_answer("Partner leave is `10 working days`.", LEAVE.answers)
    assert holds_answer("伴侣假为10个工作日。", LEAVE.answers)
    assert not holds_answer("Partner leave is two weeks.", LEAVE.answers)
    assert not holds_answer("anything", ["  ", "**"])  # nothing left after normalising matches nothing


def test_citation_markers_parse_lists_and_skip_years() -> None:
    assert citation_markers("a [1][2, 3] b [1]; c [source 4] d [2026] e [see below] ［５］") == [
        1,
        2,
        3,
        1,
        4,
        5,
    ]


def test_correct_answer_with_supported_and_invented_citations() -> None:
    score = score_answer(
        LEAVE, "You get 10 working days [1], see also [3] and [7].", PASSAGES, abstained=False
    )
    assert score.correct and not score.abstained
    assert (score.cited, score.supported, score.invented_citations) == (2, 1, 1)
    assert score.citation_precision == 0.5


def test_a_passage_supports_by_its_text_when_its_link_is_not_labelled() -> None:
    score = score_answer(LEAVE, "10 working days [2] [2]", PASSAGES, abstained=False)
    assert (score.cited, score.supported) == (1, 1)  # repeats count once


def test_uncited_passages_do_not_count_and_no_markers_means_no_precision() -> None:
    score = score_answer(LEAVE, "You get 10 working days.", PASSAGES, abstained=False)
    assert score.correct and score.cited == 0 and score.citation_precision is None


def test_an_abstention_is_wrong_on_answerable_and_right_on_unanswerable() -> None:
    text = "I could not find this in the documents (closest: 10 working days [1])."
    assert not score_answer(LEAVE, text, PASSAGES, abstained=True).correct
    assert score_answer(UNANSWERABLE, "Not in the documents.", [], abstained=True).correct
    answered = score_answer(UNANSWERABLE, "Dogs are welcome [1] [9].", PASSAGES, abstained=False)
    assert not answered.correct
    assert (answered.cited, answered.supported, answered.invented_citations) == (0, 0, 1)


def test_aggregate_rates_and_micro_averaged_precision() -> None:
    scores = [
        AnswerScore(True, False, False, cited=4, supported=4, invented_citations=0),
        AnswerScore(False, False, False, cited=1, supported=0, invented_citations=2),
        AnswerScore(False, True, False, cited=0, supported=0, invented_citations=0),
        AnswerScore(True, True, True, cited=0, supported=0, invented_citations=0),
        AnswerScore(False, False, True, cited=0, supported=0, invented_citations=1),
    ]
    result = aggregate(scores)
    assert (result.items, result.answerable, result.unanswerable) == (5, 3, 2)
    assert result.correct == pytest.approx(1 / 3)
    assert result.false_abstain == pytest.approx(1 / 3)
    assert result.abstain == 0.5
    assert result.citation_precision == 0.8  # 4 of 5 cited passages, not the mean of 1.0 and 0.0
    assert result.invented_citations == 3
    assert result.as_dict()["correct"] == 0.3333


def test_aggregate_of_nothing_has_no_rates() -> None:
    result = aggregate([])
    assert result.correct is None and result.abstain is None and result.citation_precision is None


def test_link_matching_agrees_with_the_retrieval_benchmark() -> None:
    from knowledge.evaluation import link_matches as retrieval_link_matches

    links = ["docs/faq/a.html#x", "docs/faq/a.html", "handbook/hr/b.md#y", "top.md#z"]
    entries = ["faq/a.html#x", "faq/a.html", "faq/a.html#y", "hr/b.md", "hr/b.md#y", "top.md#z", "z"]
    for link in links:
        for entry in entries:
            assert link_matches(link, entry) == retrieval_link_matches(link, entry), (link, entry)


def _write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    return path


def test_loader_reads_items_with_their_line_numbers(tmp_path: Path) -> None:
    good = {"query": "q", "answers": ["a"], "relevant": ["x.md#y"], "unanswerable": False}
    items = load_answer_set(
        _write(tmp_path, good, "", {"query": "u", "answers": [], "relevant": [], "unanswerable": True})
    )
    assert [(i.query, i.line, i.unanswerable) for i in items] == [("q", 1, False), ("u", 3, True)]
    assert items[0].answers == ("a",) and items[0].relevant == ("x.md#y",)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{not json", "not a labelled answer"),
        ('["a list"]', "JSON object"),
        ({"answers": ["a"]}, "'query'"),
        ({"query": "q", "answers": []}, "at least one acceptable"),
        ({"query": "q", "answers": "a"}, "'answers' must be a list"),
        ({"query": "q", "answers": ["a", ""]}, "'answers' must be a list"),
        ({"query": "q", "answers": ["a"], "relevant": [3]}, "'relevant' must be a list"),
        ({"query": "q", "answers": ["a"], "unanswerable": "no"}, "true or false"),
        ({"query": "q", "answers": ["a"], "unanswerable": True}, "empty 'answers'"),
    ],
)
def test_loader_names_the_bad_line(tmp_path: Path, bad: object, reason: str) -> None:
    path = _write(tmp_path, {"query": "fine", "answers": ["a"]}, bad)
    with pytest.raises(KnowledgeError, match=rf"line 2: .*{reason}"):
        load_answer_set(path)


def test_loader_refuses_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="no labelled questions"):
        load_answer_set(_write(tmp_path, ""))
    with pytest.raises(KnowledgeError, match="cannot read"):
        load_answer_set(tmp_path / "missing.jsonl")


def test_unknown_links_reports_labels_that_match_nothing() -> None:
    items = [
        AnswerItem("a", ("x",), ("hr/leave.md#sick-leave", "hr/leave.md", "faq/employee-faq.jsonl"), line=1),
        AnswerItem("b", ("x",), ("handbook/hr/leave.md#sick-leave", "hr/leave.md#gone"), line=2),
    ]
    known = ["handbook/hr/leave.md#sick-leave", "handbook/faq/employee-faq.jsonl"]
    missing = [(item.line, entry) for item, entry in unknown_links(items, known)]
    assert missing == [(2, "handbook/hr/leave.md#sick-leave"), (2, "hr/leave.md#gone")]


@pytest.mark.parametrize("name", ["handbook_answers.jsonl", "python_faq_answers.jsonl"])
def test_the_shipped_sets_load(name: str) -> None:
    items = load_answer_set(SETS / name)
    answerable = [i for i in items if not i.unanswerable]
    assert len(items) >= 55 and len(answerable) >= 40 and len(items) - len(answerable) >= 12
    assert all(i.relevant for i in answerable)
    assert len({i.query for i in items}) == len(items)
