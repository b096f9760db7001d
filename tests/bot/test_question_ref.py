"""A Slack answer's question is recorded after the answer is delivered, its buttons naming it by the event.

Nothing waits for the database between the answer and its final chat.update: the buttons carry the
event's key, and the question event is written with the claim's close (one transaction), so push
and training never see a question row before its answer is final, and a re-run records it once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import Engine

from bot.store import ANSWERED, BotStore
from bot.types import UnrecordedQuestion
from knowledge.types import Answer, Citation
from tests.bot.test_claims import QUESTION, expire
from tests.bot.test_slack import Harness, mention

CITED = Citation(1, "VPN", "vpn.md#installing", "Installing", "", 0.9, "doc-vpn", (3, 4))
ANSWER = Answer(text="Install HaldenConnect [1].", citations=[CITED], confidence=0.9, model="m")


def final_blocks(harness: Harness) -> list[dict[str, Any]]:
    [final] = [c for c in harness.slack.calls_to("chat.update") if "Writing" not in json.dumps(c)]
    blocks: list[dict[str, Any]] = final["blocks"]
    return blocks


def buttons(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """action_id -> value of every button in the message, the sources' Open buttons included."""
    found = {b["accessory"]["action_id"]: b["accessory"]["value"] for b in blocks if "accessory" in b}
    for block in blocks:
        if block["type"] == "actions":
            found |= {e["action_id"]: e["value"] for e in block["elements"]}
    return found


def test_the_question_is_written_with_the_claims_close(migrated: Engine) -> None:
    store = BotStore(migrated)
    assert store.claim_event("slack:EvRef", QUESTION)
    assert store.question_by_ref("slack:EvRef") is None, "nothing is written before the answer is out"
    question_id = store.finish_event(
        "slack:EvRef", question=UnrecordedQuestion(QUESTION, ANSWER, "slack:EvRef")
    )
    assert question_id is not None and store.question_by_ref("slack:EvRef") == question_id
    row = store.question(question_id)
    assert row is not None and (row.kind, row.text, row.ref) == ("question", QUESTION.text, "slack:EvRef")
    assert row.data["answer"] == ANSWER.text and row.data["citations"][0]["chunk_ids"] == [3, 4]
    claim = store.claim_state("slack:EvRef")
    assert claim is not None and (claim.state, claim.payload) == (ANSWERED, None)
    store.close()


def test_a_question_that_cannot_be_written_still_closes_its_claim(migrated: Engine) -> None:
    store = BotStore(migrated)
    assert store.claim_event("slack:EvBroken", QUESTION)
    unwritable = Citation(1, object(), "vpn.md", "", "", 0.9)  # type: ignore[arg-type]  # not JSON
    broken = Answer(text="Install HaldenConnect [1].", citations=[unwritable], confidence=0.9)
    assert (
        store.finish_event("slack:EvBroken", question=UnrecordedQuestion(QUESTION, broken, "slack:EvBroken"))
        is None
    )
    claim = store.claim_state("slack:EvBroken")
    assert claim is not None and claim.state == ANSWERED, "the answer was delivered: it is not re-run"
    assert store.question_by_ref("slack:EvBroken") is None and store.recent_questions("slack", "U0HR") == []
    store.close()


async def test_the_buttons_name_the_question_by_its_event_and_clicks_find_it(harness: Harness) -> None:
    await harness.event(mention("How do I install the VPN client?"), event_id="EvButtons")
    [question] = harness.events("question")
    assert question.ref == "slack:EvButtons" and question.data["answer"]
    values = buttons(final_blocks(harness))
    assert values["kb_feedback_up"] == "slack:EvButtons"
    assert values["kb_source_1"] == "slack:EvButtons:1"
    await harness.click({"action_id": "kb_feedback_up", "value": values["kb_feedback_up"]})
    await harness.click(
        {"action_id": "kb_source_1", "value": values["kb_source_1"], "url": "https://wiki.example/x"}
    )
    [feedback], [click] = harness.events("feedback"), harness.events("source_click")
    assert (feedback.question_id, feedback.data) == (question.id, {"value": 1})
    assert (click.question_id, click.data) == (question.id, {"number": 1, "uri": "https://wiki.example/x"})


async def test_a_click_before_the_question_is_written_waits_for_it(harness: Harness) -> None:
    conversation = harness.bot.conversation
    store = conversation.store
    assert await store.run(store.claim_event, "slack:EvLate", QUESTION)
    looking = asyncio.ensure_future(conversation.question_id("slack:EvLate"))
    await asyncio.sleep(0.25)
    assert not looking.done()
    written = await store.run(
        store.finish_event, "slack:EvLate", question=UnrecordedQuestion(QUESTION, ANSWER, "slack:EvLate")
    )
    assert written is not None and await looking == written
    assert await conversation.question_id("slack:EvNever", patience_s=0.2) is None
    assert await conversation.question_id(str(written)) == written, "an id is taken as it is"


async def test_an_undelivered_answer_records_nothing_and_its_rerun_records_it_once(harness: Harness) -> None:
    harness.slack.canned["chat.update"] = {"ok": False, "error": "message_not_found"}
    await harness.event(mention("How do I install the VPN client?"), event_id="EvUndelivered")
    assert harness.events("question") == [], "a question whose answer did not go out is not recorded"
    del harness.slack.canned["chat.update"]
    expire(harness.engine, "slack:EvUndelivered")
    assert await harness.bot.handlers.recover() == 1
    await harness.bot.tasks.drain()
    [question] = harness.events("question")
    assert question.ref == "slack:EvUndelivered"
    finals = [c for c in harness.slack.calls_to("chat.update") if "Writing" not in json.dumps(c)]
    assert buttons(finals[-1]["blocks"])["kb_feedback_up"] == "slack:EvUndelivered"
    row = BotStore(harness.engine).claim_state("slack:EvUndelivered")
    assert row is not None and row.state == ANSWERED
