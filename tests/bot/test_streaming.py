"""Streamed answers in Slack: "searching…", drafts at most once per interval, then the final answer.

The model is FakeLLM streaming its queued reply in small pieces with a delay per piece; the
knowledge base, retrieval, output guard, bolt and the Web API client are the real ones.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.slack.blocks import MAX_BLOCKS, WRITING
from bot.slack.sender import SEARCHING
from core.settings import Settings
from knowledge.citations import strip_markers
from knowledge.embeddings import Embedder
from knowledge.generation import HOLD_BACK_CHARS
from tests.bot.test_slack import PAGES, dm, mention, slack_harness
from tests.fakes import FakeLLM

INTERVAL = 0.25
ANSWER = " ".join(
    f"Step {n}: open the Software Center, find HaldenConnect and press install number {n} [1]."
    for n in range(1, 6)
)


def grounded(answer: str) -> dict[str, str]:
    """Pages that hold what the fake model writes, so the answer's citation check keeps it; in other
    words than the answer's ("open the" dropped), since a reply that only copies a passage falls back."""
    base = "Install HaldenConnect from the Software Center, then sign in.\n\n"
    page = strip_markers(answer).replace("open the ", "")
    return {**PAGES, "vpn.md": "# VPN\n\n## Installing\n\n" + base + page + "\n"}


def updates(calls: list[Any], ts: str) -> list[Any]:
    return [c for c in calls if c.method == "chat.update" and c.body["ts"] == ts]


def block_text(body: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section")


async def test_a_mention_streams_drafts_at_most_once_per_interval_then_the_final_answer(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    llm = FakeLLM(piece_chars=5, delay_s=0.02)  # ~85 pieces: about 1.7 s of writing
    llm.enqueue(ANSWER)
    async with slack_harness(
        make_settings, tmp_path, embedder, llm=llm, pages=grounded(ANSWER), bot_stream_interval_s=INTERVAL
    ) as harness:
        await harness.event(mention("How do I install the VPN client?"))
        calls = harness.slack.calls
    [searching] = [c for c in calls if c.method == "chat.postMessage"]
    assert searching.body["text"] == SEARCHING and searching.body["thread_ts"] == "1700000000.000100"
    ts = "1700000000.000001"
    *drafts, final = updates(calls, ts)
    assert len(drafts) >= 3, "the answer was shown while it was being written"
    times = [searching.at] + [c.at for c in [*drafts, final]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= INTERVAL * 0.9, f"two updates closer than the interval: {gaps}"
    writing = (times[-1] - times[0]) / INTERVAL
    assert len(drafts) <= writing + 1, "no more updates than the interval allows"
    final_text = block_text(final.body)
    assert "Step 5" in final_text and "[1]" in final_text
    for draft in drafts:
        assert draft.body["blocks"][-1]["elements"][0]["text"] == WRITING
        shown = block_text(draft.body)
        assert shown and ANSWER.startswith(shown), "a draft is a prefix of the answer"
        assert len(shown) <= len(ANSWER) - HOLD_BACK_CHARS, "the unfinished tail is held back"
    assert [len(block_text(d.body)) for d in drafts] == sorted(len(block_text(d.body)) for d in drafts)
    actions = [e["action_id"] for b in final.body["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert actions[:2] == ["kb_feedback_up", "kb_feedback_down"]
    assert any(b.get("accessory", {}).get("action_id") == "kb_source_1" for b in final.body["blocks"])
    assert WRITING not in json.dumps(final.body, ensure_ascii=False)
    assert [c.method for c in llm.calls] == ["stream_chat"]


async def test_a_long_streamed_answer_is_split_at_slacks_limits(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    # Seventy different claims, each held by the page: no numbers (a number the page lacks fails the
    # citation check) and enough different words not to read as a word on repeat. The test is about
    # Slack's limits, not about grounding.
    words = iter(a + b + c for a in "bcdfghklmnprst" for b in "aeiou" for c in "lnrstx")
    names = [f"{next(words)} {next(words)} {next(words)}" for _ in range(70)]
    paragraphs = [
        f"Part {name}: install HaldenConnect from the Software Center, then sign in [1]." for name in names
    ]
    llm = FakeLLM(piece_chars=400)
    llm.enqueue("\n\n".join(paragraphs))
    async with slack_harness(
        make_settings, tmp_path, embedder, llm=llm, pages=grounded(""), bot_stream_interval_s=0
    ) as harness:
        await harness.event(dm("How do I install the VPN client?"))
        final = harness.slack.calls_to("chat.update")[-1]
        [_, more] = harness.slack.calls_to("chat.postMessage")
    assert len(final["blocks"]) == MAX_BLOCKS and f"Part {names[0]}:" in block_text(final)
    assert f"Part {names[-1]}:" in block_text(more) and more["text"] == "(continued)"
    assert [b["type"] for b in more["blocks"]][-1] == "actions", "the buttons come last"


async def test_drafts_never_show_a_secret_that_the_final_answer_redacts(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    token = "xoxb-123456789012-abcdefghijkl"
    llm = FakeLLM(piece_chars=3, delay_s=0.005)  # a token written three characters at a time
    llm.enqueue(f"Sign in with the token {token} first [1]. {ANSWER}")
    pages = grounded(f"Sign in with the token [SECRET] first. {ANSWER}")
    async with slack_harness(
        make_settings, tmp_path, embedder, llm=llm, pages=pages, bot_stream_interval_s=0.05
    ) as harness:
        await harness.event(mention("How do I install the VPN client?"))
        *drafts, final = updates(harness.slack.calls, "1700000000.000001")
    shown = [block_text(d.body) for d in drafts]
    assert len(shown) >= 3 and any("[SECRET]" in text for text in shown)
    assert all("xoxb" not in text for text in shown), "not even half a token"
    assert token not in json.dumps(final.body)


async def test_commands_do_not_stream(
    make_settings: Callable[..., Settings], tmp_path: Path, embedder: Embedder
) -> None:
    async with slack_harness(make_settings, tmp_path, embedder, llm=FakeLLM()) as harness:
        await harness.event(mention("help"))
        [update] = harness.slack.calls_to("chat.update")
    assert "subscribe" in update["text"] and WRITING not in json.dumps(update, ensure_ascii=False)
