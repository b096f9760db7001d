"""The platform-neutral shapes of the conversation: what came in, and the reply each platform renders.

Slack turns a RenderedReply into Block Kit, Teams into an Adaptive Card, the web chat into JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from knowledge.types import Answer


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message to the bot, already stripped of platform syntax such as the leading @mention.

    `private` is true in a direct message or an ephemeral exchange that only the asker sees: only
    then may the answer draw on the asker's own groups.
    """

    platform: str
    user: str
    text: str
    channel: str = ""
    thread: str | None = None
    private: bool = False

    @property
    def who(self) -> str:
        """The user as settings and the audit log name them: ``slack:U123``."""
        return f"{self.platform}:{self.user}"

    def to_json(self) -> dict[str, Any]:
        """What an event claim keeps so that another replica can answer the message again."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Incoming:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True, slots=True)
class UnrecordedQuestion:
    """A question answered but not written yet: `incoming` holds its text, `ref` names it meanwhile.

    A reference is never all digits (a button's all-digit value is a recorded question's id).
    """

    incoming: Incoming
    answer: Answer
    ref: str


class Action(StrEnum):
    """What a button does; platforms encode it in their own action ids."""

    FEEDBACK_UP = "feedback_up"
    FEEDBACK_DOWN = "feedback_down"
    MORE_SOURCES = "more_sources"


@dataclass(frozen=True, slots=True)
class Button:
    action: Action
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class SourceLink:
    """A numbered source; `url` is None when the document has no web address to link to."""

    number: int
    title: str
    section: str
    uri: str
    url: str | None


@dataclass(frozen=True, slots=True)
class LiveText:
    """Text that goes on changing for a while, such as `admin status` while a run trains.

    `text` is what it says now; `poll()` reads it again and says whether it has ended (no further
    change to wait for). A surface that can edit a sent message follows it (bot/live.py).
    """

    text: str
    poll: Callable[[], Awaitable[tuple[str, bool]]]


@dataclass(frozen=True, slots=True)
class RenderedReply:
    """A reply in parts: paragraphs of markdown-ish text, the sources shown, and buttons.

    `question_id` is the behaviour event of the question this answers, which buttons refer to.
    `unrecorded`, instead, is a question not written yet: buttons refer to it by its `ref`, and
    the platform writes it once the reply is delivered (see Conversation.stream).
    `hidden_sources` counts sources left out of `sources` (offered by a "show more sources" button).
    `answer` is the Answer behind it, for surfaces that show more (the web chat's confidence, model).
    `live`, when set, is how the reply's text goes on changing: Slack and Teams edit the sent
    message with it (bot/live.py); other surfaces show the reply once, as it is.
    """

    paragraphs: tuple[str, ...]
    sources: tuple[SourceLink, ...] = ()
    buttons: tuple[Button, ...] = ()
    notices: tuple[str, ...] = ()
    question_id: int | None = None
    hidden_sources: int = 0
    ok: bool = True
    answer: Answer | None = field(default=None, compare=False, repr=False)
    unrecorded: UnrecordedQuestion | None = field(default=None, compare=False, repr=False)
    live: LiveText | None = field(default=None, compare=False, repr=False)

    @property
    def question(self) -> str | None:
        """What the buttons name the question by: its id, or the reference of an unrecorded one."""
        if self.question_id is not None:
            return str(self.question_id)
        return self.unrecorded.ref if self.unrecorded is not None else None

    @property
    def text(self) -> str:
        """Plain text of the whole reply: notification previews and platforms without rich cards."""
        parts = list(self.paragraphs)
        parts += [f"[{s.number}] {s.title}" + (f" — {s.url}" if s.url else "") for s in self.sources]
        return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class Draft:
    """The answer so far while the model is still writing; `text` is what may be shown of it.

    `preview` turns the raw text into what may be shown; for knowledge-base answers the deltas
    already arrive redacted with their unfinished tail held back (knowledge.service.ask_stream), so
    it is the identity there. It runs only when a platform actually shows a draft.
    """

    raw: str
    preview: Callable[[str], str]

    @property
    def text(self) -> str:
        return self.preview(self.raw)


def plain(*paragraphs: str, ok: bool = True) -> RenderedReply:
    """A reply that is only text (help, confirmations, refusals)."""
    return RenderedReply(paragraphs=tuple(paragraphs), ok=ok)
