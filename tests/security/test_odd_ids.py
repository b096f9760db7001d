"""A button naming question 10**23 (a forged Slack action, a Teams submit): past SQLite's 64-bit
integers, it ended in an OverflowError and no reply. Now it is an id no question has."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.settings import Settings
from knowledge.embeddings import Embedder
from tests.bot.test_slack import slack_harness

HUGE = str(10**23)


async def test_feedback_and_clicks_on_a_huge_question_id_are_kept_without_it(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder) as harness:
        assert (await harness.click({"action_id": "kb_feedback_down", "value": HUGE})).status == 200
        await harness.click(
            {"action_id": "kb_source_1", "value": f"{HUGE}:1", "url": "https://wiki.example/x"}
        )
        await harness.click({"action_id": "kb_more_sources", "value": HUGE})
        [feedback], [click] = harness.events("feedback"), harness.events("source_click")
        assert (feedback.question_id, feedback.data) == (None, {"value": -1})
        assert click.question_id is None
        texts = [reply.get("text", "") for reply in harness.slack.calls_to("response_url")]
        assert "Thanks, I will pass that on to the team." in texts
