"""The guards around every answer: the input guard before retrieval, the output guard after.

A refused question gets a plain explanation (never the payload echoed back) and an audit entry;
an answer is redacted of secrets and identity numbers and withheld outright if it cites a
document the asker may not read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from knowledge.store import Store
from knowledge.types import Answer, Question
from privacy.audit import AuditLog
from privacy.guard import Guard
from privacy.output import OutputGuard

log = logging.getLogger(__name__)

GuardObserver = Callable[[str, str, int], None]
"""Told of each guard action as (event, detail, count): ("refused", category, 1),
("withheld", "citation", n), ("redacted", kind, n); `kb serve` counts them in /metrics."""


def _tell(observer: GuardObserver | None, event: str, detail: str, count: int = 1) -> None:
    if observer is not None:
        observer(event, detail, count)


def screen_question(
    guard: Guard, audit: AuditLog, question: Question, *, observer: GuardObserver | None = None
) -> tuple[Answer | None, list[str]]:
    """(None, warnings) when the question may go on; otherwise (the refusal to send instead, [])."""
    verdict = guard.check(question.text)
    if verdict.allowed:
        if verdict.reasons:
            log.info("question from %s allowed with a warning: %s", question.user, "; ".join(verdict.reasons))
        return None, list(verdict.reasons)
    reasons = "; ".join(verdict.reasons)
    for category in sorted(verdict.categories) or ["other"]:
        _tell(observer, "refused", category)
    audit.record(
        question.user,
        "request.refused",
        target=question.channel or "",
        params={"categories": sorted(verdict.categories)},
        outcome=f"refused: {reasons}"[:500],
    )
    log.info("refused a question from %s: %s", question.user, reasons)
    refusal = Answer(
        text=f"I can't help with that request: {reasons}. Please rephrase your question.",
        model="guard",
        refused=True,
        notices=list(verdict.reasons),
    )
    return refusal, []


def screen_answer(
    guard: OutputGuard,
    store: Store,
    audit: AuditLog,
    answer: Answer,
    question: Question,
    *,
    observer: GuardObserver | None = None,
) -> Answer:
    """The answer as it may be shown to `question`'s asker."""
    acls = store.acls_by_uri([c.uri for c in answer.citations])
    cited = [(c.number, acls.get(c.uri.split("#", 1)[0], [])) for c in answer.citations]
    checked = guard.check(answer.text, citations=cited, groups=question.groups)
    if checked.withheld:
        _tell(observer, "withheld", "citation", len(checked.forbidden_citations))
        audit.record(
            question.user,
            "answer.withheld",
            target=question.channel or "",
            params={"citations": list(checked.forbidden_citations)},
            outcome="withheld: cited a document outside the asker's access",
        )
        log.error("withheld an answer to %s: it cited restricted documents", question.user)
        return replace(answer, text=checked.text, citations=[], abstained=True, notices=[checked.text])
    if not checked.redactions:
        return answer
    for kind, count in checked.redactions.items():
        _tell(observer, "redacted", kind, count)
    notice = "removed from the answer: " + ", ".join(
        f"{n} {kind.lower()}" for kind, n in checked.redactions.items()
    )
    return replace(answer, text=checked.text, notices=[*answer.notices, notice])
