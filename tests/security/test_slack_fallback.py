"""Slack's notification `text` is mrkdwn too: an answer quoting `<!channel>` pinged the channel
through it while the blocks showed it escaped."""

from __future__ import annotations

from bot.render import render_answer
from bot.slack.blocks import draft_message, to_messages
from knowledge.types import Answer

QUOTED = "The runbook says: <!channel> the VPN is down, see <https://evil.example|the status page>."


def test_the_fallback_text_is_escaped_like_the_blocks() -> None:
    [message] = to_messages(render_answer(Answer(text=QUOTED), question_id=None))
    draft = draft_message(QUOTED)
    for text in (message.text, draft.text, message.blocks[0]["text"]["text"]):
        assert "<!channel>" not in text and "<https://evil.example" not in text
        assert "&lt;!channel&gt;" in text
