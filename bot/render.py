"""Answer -> RenderedReply: the answer's paragraphs, its first few sources, and the buttons."""

from __future__ import annotations

from urllib.parse import urljoin

from bot.types import Action, Button, RenderedReply, SourceLink, UnrecordedQuestion
from knowledge.types import Answer, Citation

DEFAULT_SHOWN_SOURCES = 3


def source_url(uri: str, *, link_base: str | None) -> str | None:
    """A clickable address for a citation: web URIs as they are, relative ones under `link_base`."""
    if uri.startswith(("https://", "http://")):
        return uri
    if link_base:
        return urljoin(link_base.rstrip("/") + "/", uri.lstrip("/"))
    return None


def source_links(citations: list[Citation], *, link_base: str | None) -> tuple[SourceLink, ...]:
    return tuple(
        SourceLink(c.number, c.title, c.section, c.uri, source_url(c.uri, link_base=link_base))
        for c in citations
    )


def render_answer(
    answer: Answer,
    *,
    question_id: int | None,
    unrecorded: UnrecordedQuestion | None = None,
    link_base: str | None = None,
    shown_sources: int = DEFAULT_SHOWN_SOURCES,
) -> RenderedReply:
    """The reply to `answer`; its buttons name the question by `question_id`, else by `unrecorded`'s ref."""
    if answer.refused:
        return RenderedReply(
            paragraphs=(answer.text,), notices=tuple(answer.notices), ok=False, unrecorded=unrecorded
        )
    links = source_links(answer.citations, link_base=link_base)
    paragraphs = tuple(p.strip() for p in answer.text.split("\n\n") if p.strip()) or (answer.text,)
    value = str(question_id) if question_id is not None else unrecorded.ref if unrecorded else ""
    buttons: list[Button] = []
    if value:
        buttons += [
            Button(Action.FEEDBACK_UP, "👍 Helpful", value),
            Button(Action.FEEDBACK_DOWN, "👎 Not helpful", value),
        ]
        if len(links) > shown_sources:
            buttons.append(Button(Action.MORE_SOURCES, "Show more sources", value))
    return RenderedReply(
        paragraphs=paragraphs,
        sources=links[:shown_sources],
        buttons=tuple(buttons),
        notices=tuple(answer.notices),
        question_id=question_id,
        unrecorded=unrecorded,
        hidden_sources=max(0, len(links) - shown_sources),
        ok=not answer.abstained,
    )
