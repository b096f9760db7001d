"""RenderedReply -> Adaptive Cards for Teams.

Buttons are Action.Submit with `{"kb_action": ..., "question_id": ...}` data, which Teams sends
back as a message activity whose `value` is that data. Teams rejects cards over about 28 KB, so a
long answer becomes several cards; the buttons go on the last one.
"""

from __future__ import annotations

from typing import Any

from bot.render import DEFAULT_GUARD
from bot.types import RenderedReply, SourceLink

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_TEXT_CHARS = 20_000  # leaves room under Teams' ~28 KB card limit for JSON and sources
ACTION_KEY = "kb_action"

Card = dict[str, Any]
# What Teams acts on rather than shows: left as built (a link target was cleaned as a citation).
_NOT_SHOWN = frozenset({"type", "$schema", "version", "data", "url", "style", "weight", "size", "spacing"})


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None) -> Card:
    """A card whose every shown string went through the output guard: the last pass before Teams."""
    card: Card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    guarded: Card = DEFAULT_GUARD.clean_payload(card, keep=_NOT_SHOWN)
    return guarded


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def source_line(source: SourceLink) -> str:
    title = f"[{source.title}]({source.url})" if source.url else f"{source.title} (`{source.uri}`)"
    return f"[{source.number}] {title}" + (f" — {source.section}" if source.section else "")


def sources_card(sources: tuple[SourceLink, ...]) -> Card:
    body = [_text("All sources of this answer", weight="Bolder")]
    body += [_text(source_line(s), spacing="Small") for s in sources]
    return _card(body)


def reply_cards(reply: RenderedReply) -> list[Card]:
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for paragraph in reply.paragraphs:
        for start in range(0, max(len(paragraph), 1), CARD_TEXT_CHARS):
            piece = paragraph[start : start + CARD_TEXT_CHARS]
            if size + len(piece) > CARD_TEXT_CHARS and batches[-1]:
                batches.append([])
                size = 0
            batches[-1].append(_text(piece))
            size += len(piece)
    last = batches[-1]
    last += [_text(notice, isSubtle=True, size="Small") for notice in reply.notices]
    if reply.sources:
        last.append(_text("Sources", weight="Bolder", separator=True))
        last += [_text(source_line(s), spacing="Small") for s in reply.sources]
    actions = [
        {
            "type": "Action.Submit",
            "title": b.label,
            "data": {ACTION_KEY: b.action.value, "question_id": b.value},
        }
        for b in reply.buttons
    ]
    return [_card(body, actions if n == len(batches) - 1 else None) for n, body in enumerate(batches)]
