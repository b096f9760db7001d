"""Everything a reply shows passes the output guard: a heading with an IBAN and a token came back
verbatim in a citation's section and its URI anchor (the guard checked only the answer's text).

The citation here is what an index written before heading redaction still holds; whatever the
index says, no surface may show it: not the reply's parts, the Answer the web chat sends as JSON,
the Block Kit messages with their fallback text, or the Adaptive Cards.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from bot.render import render_answer, source_links
from bot.slack.blocks import sources_message, to_messages
from bot.teams.cards import reply_cards, sources_card
from knowledge.types import Answer, Citation

IBAN = "DE89370400440532013000"
TOKEN = "xoxb-123456789012-abcdefghijkl"
HEADING = f"Refunds to {IBAN} with {TOKEN}"
ANCHOR = f"docs/finance.md#refunds-to-{IBAN.lower()}-with-{TOKEN}"


def _answer() -> Answer:
    cited = Citation(1, f"Finance {TOKEN}", ANCHOR, HEADING, f"Send refunds to {IBAN}.", 0.9)
    return Answer(text="Refunds go to the finance account [1].", citations=[cited], confidence=0.9)


def _shown(*payloads: object) -> str:
    return json.dumps(payloads, default=str, ensure_ascii=False).lower()


def test_no_reply_surface_shows_a_heading_s_personal_data() -> None:
    reply = render_answer(_answer(), question_id=7, link_base="https://wiki.example/")
    assert reply.answer is not None
    slack = [asdict(message) for message in to_messages(reply)]
    teams = reply_cards(reply)
    more = sources_message(source_links(_answer().citations, link_base="https://wiki.example/"), question="7")
    cards = sources_card(source_links(_answer().citations, link_base=None))
    shown = _shown(asdict(reply.answer), reply.sources, slack, teams, asdict(more), cards)
    assert IBAN.lower() not in shown and TOKEN not in shown
    assert "[iban]" in shown and "[secret]" in shown, "redacted in place, the rest of the reply intact"
    assert "refunds go to the finance account [1]." in shown
