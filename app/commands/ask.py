"""`kb ask`: one question, answered from the knowledge base with numbered citations."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from app.support import JsonOption, cli_settings, err, friendly_errors, open_kb, out, print_json
from core.errors import KBError

if TYPE_CHECKING:
    from core.settings import Settings
    from knowledge.service import KnowledgeBase
    from knowledge.types import Answer, Question


@friendly_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question, in quotes.", show_default=False)],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Asker's group (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the knowledge base, with numbered citations."""
    from knowledge.types import Question

    if not question.strip():
        raise KBError(
            "the question is empty", hint='ask something, e.g. kb ask "How do I reset my password?"'
        )
    settings = _with_running_model(cli_settings())
    kb = open_kb(settings)
    with err.status("searching…"):
        asked = Question(text=question.strip(), user="cli", groups=tuple(group or ()), channel="cli")
        answer = asyncio.run(_ask(kb, asked))
    if as_json:
        print_json(asdict(answer))
        return
    out.print(answer.text, highlight=False)
    if answer.citations:
        out.print("\n[bold]Sources[/]" if not answer.abstained else "\n[bold]Closest documents[/]")
    for c in answer.citations:
        section = f" — {c.section}" if c.section else ""
        out.print(f"[{c.number}] [bold]{c.title}[/]{section}", highlight=False, markup=True)
        out.print(f"    {c.uri}  (score {c.score:.2f})", style="dim", highlight=False, markup=False)
        out.print(f"    {c.snippet}", highlight=False, markup=False)


def _with_running_model(settings: Settings) -> Settings:
    """Without KB_LLM_URL, the model a running `kb serve --with-model` (`make run`) serves, once ready."""
    from core.health import read_model_state

    if settings.llm.url is not None:
        return settings
    state = read_model_state(settings.data_dir)
    if state is None or state.get("state") != "ready" or not state.get("url"):
        return settings
    return settings.replace(llm_url=state["url"], llm_model=state.get("model"))


async def _ask(kb: KnowledgeBase, question: Question) -> Answer:
    try:
        return await kb.ask_async(question)
    finally:
        if kb.llm is not None:
            await kb.llm.aclose()
