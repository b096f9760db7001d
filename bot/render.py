"""Answer -> RenderedReply: the answer's paragraphs, its first few sources, and the buttons.

Everything a reply shows passes the output guard here, on every surface: the answer's text and
notices, and each citation's title, section, snippet and link (a heading or a path can carry an
IBAN or a token). The Answer kept on the reply is the guarded one, so the web chat's JSON is too.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urljoin

from bot.types import Action, Button, RenderedReply, SourceLink, UnrecordedQuestion
from knowledge.types import Answer, Citation
from privacy.output import OutputGuard

DEFAULT_SHOWN_SOURCES = 3
# The kinds no reply shows whatever the policy (secrets, card, bank and identity numbers).
DEFAULT_GUARD = OutputGuard()


def source_url(uri: str, *, link_base: str | None) -> str | None:
    """A clickable address for a citation: web URIs as they are, relative ones under `link_base`."""
    if uri.startswith(("https://", "http://")):
        return uri
    if link_base:
        return urljoin(link_base.rstrip("/") + "/", uri.lstrip("/"))
    return None


def guard_citation(citation: Citation, guard: OutputGuard = DEFAULT_GUARD) -> Citation:
    """The citation as it may be shown: title, section, snippet and URI (with its anchor) cleaned."""
    return replace(
        citation, title=guard.clean(citation.title), section=guard.clean(citation.section),
        snippet=guard.clean(citation.snippet), uri=guard.clean_link(citation.uri, heading=citation.section),
    )  # fmt: skip


def guard_answer(answer: Answer, guard: OutputGuard = DEFAULT_GUARD) -> Answer:
    """Every shown field of `answer` through the output guard (its text was checked upstream too)."""
    return replace(
        answer, text=guard.clean(answer.text), notices=[guard.clean(n) for n in answer.notices],
        citations=[guard_citation(c, guard) for c in answer.citations],
    )  # fmt: skip


def source_links(
    citations: list[Citation], *, link_base: str | None, guard: OutputGuard = DEFAULT_GUARD
) -> tuple[SourceLink, ...]:
    shown = [guard_citation(c, guard) for c in citations]
    return tuple(
        SourceLink(c.number, c.title, c.section, c.uri, source_url(c.uri, link_base=link_base)) for c in shown
    )


def render_answer(
    answer: Answer,
    *,
    question_id: int | None,
    unrecorded: UnrecordedQuestion | None = None,
    link_base: str | None = None,
    shown_sources: int = DEFAULT_SHOWN_SOURCES,
    guard: OutputGuard = DEFAULT_GUARD,
) -> RenderedReply:
    """The reply to `answer`; its buttons name the question by `question_id`, else by `unrecorded`'s ref."""
    answer = guard_answer(answer, guard)
    if answer.refused:
        return RenderedReply(
            paragraphs=(answer.text,), notices=tuple(answer.notices), ok=False, unrecorded=unrecorded,
            answer=answer,
        )  # fmt: skip
    links = source_links(answer.citations, link_base=link_base, guard=guard)
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
        answer=answer,
    )
