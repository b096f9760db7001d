"""Block Kit rendering: Slack's size limits and what each block carries."""

from __future__ import annotations

from bot.render import render_answer
from bot.slack.blocks import MAX_BLOCKS, SECTION_CHARS, split_text, to_messages
from knowledge.types import Answer
from tests.bot.conftest import citation


def test_long_answers_are_split_at_slacks_limits() -> None:
    text = "\n\n".join(f"Paragraph {n}. " + "word " * 1000 for n in range(40))
    reply = render_answer(Answer(text=text, citations=[citation(1)]), question_id=7)
    messages = to_messages(reply)
    assert len(messages) > 1
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS
        sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
        assert all(len(s) <= SECTION_CHARS for s in sections)
    assert messages[-1].blocks[-1]["type"] == "actions", "the feedback buttons close the answer"
    joined = " ".join(b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section")
    assert joined.count("Paragraph") == 40, "nothing is lost in the split"


def test_split_prefers_word_boundaries_and_cuts_unbroken_text() -> None:
    assert split_text("aaa bbb ccc", 8) == ["aaa bbb", "ccc"]
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]


def test_mrkdwn_control_characters_are_escaped_and_sources_without_url_are_shown_as_text() -> None:
    answer = Answer(text="Use <b> & see [1].", citations=[citation(1, uri="docs/a.md#x")])
    [message] = to_messages(render_answer(answer, question_id=1))
    assert message.blocks[0]["text"]["text"] == "Use &lt;b&gt; &amp; see [1]."
    source = next(b for b in message.blocks if b["type"] == "section" and "*[1]*" in b["text"]["text"])
    assert "accessory" not in source and "`docs/a.md#x`" in source["text"]["text"]
