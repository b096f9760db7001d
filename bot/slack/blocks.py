"""RenderedReply -> Block Kit messages, split to fit Slack's limits.

A section's text holds at most 3000 characters and a message at most 50 blocks; a longer reply
becomes several messages, the first of which replaces the "searching…" message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.render import DEFAULT_GUARD
from bot.types import Action, Button, RenderedReply, SourceLink

SECTION_CHARS = 3000
MAX_BLOCKS = 50
FALLBACK_CHARS = 3000  # the notification text; Slack allows more, but nobody reads more in a preview
SOURCE_ACTION = "kb_source_"  # + number: action ids must be unique within a message
ACTION_IDS = {
    Action.FEEDBACK_UP: "kb_feedback_up",
    Action.FEEDBACK_DOWN: "kb_feedback_down",
    Action.MORE_SOURCES: "kb_more_sources",
}

Block = dict[str, Any]


# What Slack acts on rather than shows: left as built (a link target was cleaned as a citation).
_NOT_SHOWN = frozenset({"type", "action_id", "block_id", "value", "url", "style", "emoji", "verbatim"})


@dataclass(frozen=True, slots=True)
class SlackMessage:
    text: str
    blocks: list[Block]


def guarded(message: SlackMessage) -> SlackMessage:
    """The message with every shown string through the output guard: the last pass before Slack."""
    blocks: list[Block] = DEFAULT_GUARD.clean_payload(message.blocks, keep=_NOT_SHOWN)
    return SlackMessage(DEFAULT_GUARD.clean(message.text), blocks)


def split_text(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraph, line or word boundaries when possible."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        cut = cut if cut > limit // 2 else limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def escape(text: str) -> str:
    """Slack's mrkdwn needs only these three escaped; the rest is the answer's own formatting."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def source_block(source: SourceLink, *, question: str | None) -> Block:
    """A numbered source; its Open button's value is `question` (an id or a reference) and the number."""
    label = f"*[{source.number}]* " + escape(source.title)
    if source.section:
        label += f" — _{escape(source.section)}_"
    if source.url is None:
        return section(f"{label}\n`{escape(source.uri)}`"[:SECTION_CHARS])
    block = section(f"{label}\n<{source.url}|{escape(source.uri)}>"[:SECTION_CHARS])
    block["accessory"] = {
        "type": "button",
        "text": {"type": "plain_text", "text": "Open"},
        "action_id": f"{SOURCE_ACTION}{source.number}",
        "url": source.url,
        "value": f"{question or ''}:{source.number}",
    }
    return block


def button(item: Button) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": item.label, "emoji": True},
        "action_id": ACTION_IDS[item.action],
        "value": item.value,
    }
    return element


def reply_blocks(reply: RenderedReply) -> list[Block]:
    blocks = [section(escape(piece)) for p in reply.paragraphs for piece in split_text(p)]
    if reply.notices:
        notes = [{"type": "mrkdwn", "text": escape(n)[:SECTION_CHARS]} for n in reply.notices[:10]]
        blocks.append({"type": "context", "elements": notes})
    if reply.sources:
        blocks.append({"type": "divider"})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "*Sources*"}]})
        blocks += [source_block(s, question=reply.question) for s in reply.sources]
    if reply.buttons:
        blocks.append({"type": "actions", "elements": [button(b) for b in reply.buttons]})
    return blocks


def to_messages(reply: RenderedReply) -> list[SlackMessage]:
    """The reply as one or more messages of at most 50 blocks; the buttons stay on the last one."""
    blocks = reply_blocks(reply)
    # The notification text is mrkdwn too: unescaped, `<!channel>` in an answer would ping everyone.
    text = escape(reply.text[:FALLBACK_CHARS]) or "…"
    batches = [blocks[i : i + MAX_BLOCKS] for i in range(0, len(blocks), MAX_BLOCKS)] or [[]]
    return [
        guarded(SlackMessage(text if n == 0 else "(continued)", batch)) for n, batch in enumerate(batches)
    ]


WRITING = "_Writing the answer…_"


def draft_message(text: str) -> SlackMessage:
    """A streamed answer so far: its text in sections, with a note that more is coming."""
    sections = [section(escape(piece)) for piece in split_text(text)][: MAX_BLOCKS - 1]
    notes = {"type": "context", "elements": [{"type": "mrkdwn", "text": WRITING}]}
    return guarded(SlackMessage(escape(text[:FALLBACK_CHARS]) or "…", [*sections, notes]))


def sources_message(sources: tuple[SourceLink, ...], *, question: str) -> SlackMessage:
    """Every source of an answer, for "show more sources"."""
    blocks = [section("*All sources of this answer*")]
    blocks += [source_block(s, question=question) for s in sources[: MAX_BLOCKS - 1]]
    text = escape("\n".join(f"[{s.number}] {s.title}" for s in sources)[:FALLBACK_CHARS])
    return guarded(SlackMessage(text or "No sources.", blocks))


def home_view(*, subscriptions: list[str], cadence: str, recent: list[tuple[str, int]]) -> Block:
    """The App Home tab: what the user follows, the digest cadence, and recent questions."""
    follows = ", ".join(f"*{escape(t)}*" for t in subscriptions) or "nothing yet"
    lines = [f"• {escape(text)[:200]} ({count} sources)" for text, count in recent] or ["• nothing yet"]
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Knowledge assistant"}},
            section(f"You follow: {follows}\n`subscribe <topic>` and `unsubscribe <topic>` change that."),
            section(f"Digest: *{cadence}*. `digest daily|weekly|off|now` changes it."),
            {"type": "divider"},
            section("*Your recent questions*\n" + "\n".join(lines)),
        ],
    }
