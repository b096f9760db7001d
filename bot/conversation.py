"""The platform-neutral conversation: an Incoming message in, a RenderedReply out.

Slack, Teams and the web chat all call :meth:`Conversation.stream`, which yields Drafts of the
answer while the model writes it, then the RenderedReply, or :meth:`Conversation.handle`, that
stream collected (the answer asked for whole, no Drafts). It resolves the asker's groups, runs
commands, answers questions through an AnswerService, writes behaviour events for push and
audits every admin command.

Whose groups an answer may use (access control): the asker's own in a private exchange
(DM, ephemeral reply, web chat); in a channel, the groups that every member shares when the
platform's Directory can list the members, else none (public documents only).

    conversation = Conversation(KnowledgeBaseAnswers(kb), BotStore(engine), kb.audit,
                                admins={"slack:U0ADMIN"}, user_groups={"slack:U0HR": ["hr"]})
    reply = await conversation.handle(Incoming("slack", "U0HR", "How much does band H5 pay?", private=True))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from sqlalchemy.exc import SQLAlchemyError

from bot.commands import (
    HELP_TEXT,
    Admin,
    Ask,
    Command,
    Digest,
    Feedback,
    Help,
    Invalid,
    Subscribe,
    Unsubscribe,
    parse,
)
from bot.render import DEFAULT_SHOWN_SOURCES, render_answer, source_links
from bot.store import BotStore
from bot.tasks import AckFirst
from bot.types import Draft, Incoming, LiveText, RenderedReply, SourceLink, UnrecordedQuestion, plain
from core.errors import KBError
from knowledge.types import Answer, Citation, Question, last_part
from privacy.audit import AuditLog

log = logging.getLogger(__name__)

AdminHook = Callable[[Admin], Awaitable[str | LiveText]]


class AnswerService(Protocol):
    """Anything that answers a Question (bot/answers.py wraps the knowledge base)."""

    async def answer(self, question: Question) -> Answer: ...


@runtime_checkable
class StreamingAnswerService(AnswerService, Protocol):
    """An AnswerService that can also pass the answer on while it is written.

    `stream` yields text deltas, then exactly one final Answer (authoritative: it may replace the
    deltas, e.g. with a fallback); `preview` turns the text so far into what may be shown of it.
    """

    def stream(self, question: Question) -> AsyncIterator[str | Answer]: ...

    def preview(self, text: str) -> str: ...


class Directory(Protocol):
    """What a chat platform knows about people and channels, for access control.

    `groups` are a user's groups on the platform (e.g. Slack user groups), added to the configured
    ones; `audience` lists who sees a channel's messages, or None when anyone may (public channel)
    or the platform cannot tell. Implementations fall back quietly instead of raising.
    """

    async def groups(self, user: str) -> frozenset[str]: ...

    async def audience(self, channel: str) -> tuple[str, ...] | None: ...


@dataclass(frozen=True, slots=True)
class AdminHooks:
    """What admin commands do, supplied by the `kb` entry point; a missing hook says so politely.

    Each hook gets the parsed command and returns the sentence to show the admin, or a LiveText
    when that sentence goes on changing (`status` while a training run is live).
    """

    ingest: AdminHook | None = None
    sync: AdminHook | None = None
    retrain: AdminHook | None = None
    status: AdminHook | None = None
    budget: AdminHook | None = None
    models: AdminHook | None = None
    rollback: AdminHook | None = None
    ab: AdminHook | None = None


_UNAVAILABLE = "I could not search the knowledge base just now. Please try again in a minute."
_NOT_CONFIGURED = {
    "retrain": "No trainer is configured yet, so I cannot start a training run.",
    "budget": "No privacy budget ledger is configured yet.",
    "models": "No model registry is configured yet.",
    "rollback": "No model registry is configured yet, so there is nothing to roll back to.",
    "ab": "No model registry is configured yet, so there is nothing to compare.",
}


class Conversation:
    def __init__(
        self,
        answers: AnswerService,
        store: BotStore,
        audit: AuditLog,
        *,
        admins: set[str] | frozenset[str] = frozenset(),
        user_groups: Mapping[str, Sequence[str]] | None = None,
        hooks: AdminHooks | None = None,
        link_base: str | None = None,
        shown_sources: int = DEFAULT_SHOWN_SOURCES,
        directories: Mapping[str, Directory] | None = None,
        ack_first: AckFirst | None = None,
    ) -> None:
        """`admins` and the keys of `user_groups` are platform-qualified users, e.g. ``slack:U0123``.

        `directories` (by platform) add what the platform knows; a platform mounts its own later.
        `ack_first` counts the requests a platform waits for (its retrievals wait for them).
        """
        self.answers = answers
        self.store = store
        self.audit = audit
        self.admins = frozenset(admins)
        self.user_groups = dict(user_groups or {})
        self.hooks = hooks or AdminHooks()
        self.link_base = link_base
        self.shown_sources = shown_sources
        self.directories: dict[str, Directory] = dict(directories or {})
        self.ack_first = ack_first or AckFirst()

    async def groups_for(self, incoming: Incoming) -> tuple[str, ...]:
        """The asker's groups in private; in a channel, the groups all its members share (see top)."""
        if incoming.private:
            return tuple(sorted(await self._groups_of(incoming.platform, incoming.user)))
        directory = self.directories.get(incoming.platform)
        members = await directory.audience(incoming.channel) if directory and incoming.channel else None
        if not members:
            return ()
        shared: set[str] | None = None
        for member in members:
            groups = await self._groups_of(incoming.platform, member)
            shared = groups if shared is None else shared & groups
            if not shared:
                return ()
        return tuple(sorted(shared or ()))

    async def _groups_of(self, platform: str, user: str) -> set[str]:
        groups = {g.casefold() for g in self.user_groups.get(f"{platform}:{user}", ())}
        directory = self.directories.get(platform)
        if directory is not None:
            groups |= {g.casefold() for g in await directory.groups(user)}
        return groups

    async def handle(self, incoming: Incoming) -> RenderedReply:
        """The reply to a message, whole: `stream` collected, a question's answer asked for whole."""
        return await last_part(self.stream(incoming, whole=True), RenderedReply)

    async def stream(
        self,
        incoming: Incoming,
        *,
        admitted: Callable[[], Awaitable[object]] | None = None,
        ref: str | None = None,
        whole: bool = False,
    ) -> AsyncIterator[Draft | RenderedReply]:
        """The reply to a message: a question's answer as Drafts while it is written, then the reply.

        Commands, `whole`, and answer services that cannot stream yield the final reply only.
        `admitted`, when given, is awaited before anything is written (a command run, a question
        recorded): a platform that starts the answer before it knows the event is its own to
        answer raises there when it is not (e.g. bot/errors.py's NotClaimed), and nothing is kept
        of it. An answer that does not stream is only started once the event is admitted.

        With `ref` (a name for the question that the platform can keep, such as its event's key;
        never all digits) a streamed answer's question is not recorded here: the reply comes at
        once, its buttons naming the question by `ref`, and carries it as `unrecorded` for the
        platform to write once the reply is delivered (BotStore.finish_event). Between the
        answer and its delivery, nothing then waits for the database.
        """
        command = parse(incoming.text)
        streaming = None if whole or not isinstance(self.answers, StreamingAnswerService) else self.answers
        if admitted is not None and (streaming is None or not isinstance(command, Ask)):
            await admitted()
            admitted = None
        if not isinstance(command, Ask):
            yield await self._command(incoming, command)
            return
        question = await self._question(incoming, command.text)
        final: Answer | None = None
        async for part in self._drafts(question, streaming):
            if isinstance(part, Draft):
                yield part
            else:
                final = part
        if final is None:
            yield plain(_UNAVAILABLE, ok=False)
            return
        if admitted is not None:
            await admitted()
        yield await self._render(incoming, command.text, final, ref=ref if streaming else None)

    async def _drafts(
        self, question: Question, streaming: StreamingAnswerService | None
    ) -> AsyncIterator[Draft | Answer]:
        """Drafts while the answer is written (a `streaming` service), then the Answer; none on failure."""
        if streaming is None:
            parts, preview = _whole(self.answers, question), _unchanged
        else:
            parts, preview = streaming.stream(question), streaming.preview
        raw = ""
        try:
            async for part in parts:
                if isinstance(part, Answer):
                    yield part
                else:
                    raw += part
                    yield Draft(raw, preview)
        except (KBError, SQLAlchemyError) as exc:
            log.warning("question from %s failed: %s", question.user, exc)

    async def _command(self, incoming: Incoming, command: Command) -> RenderedReply:
        match command:
            case Help():
                return plain(HELP_TEXT)
            case Subscribe(topic=topic):
                new = await self.store.run(self.store.subscribe, incoming, topic)
                return plain(f"Subscribed to *{topic}*." if new else f"You already follow *{topic}*.")
            case Unsubscribe(topic=topic):
                had = await self.store.run(self.store.unsubscribe, incoming, topic)
                return plain(f"Unsubscribed from *{topic}*." if had else f"You did not follow *{topic}*.")
            case Digest(cadence=cadence):
                return await self._digest(incoming, cadence)
            case Feedback(comment=comment):
                await self.store.run(self.store.record_feedback, _with_text(incoming, comment), None, value=0)
                return plain("Thanks, I passed your feedback on to the team.")
            case Admin() | Invalid(admin_verb=str()):
                return await self._admin(incoming, command)
            case Invalid(message=message):
                return plain(message, ok=False)
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    async def _question(self, incoming: Incoming, text: str) -> Question:
        return Question(
            text=text, user=incoming.who, groups=await self.groups_for(incoming), channel=incoming.channel,
            thread=incoming.thread,
        )  # fmt: skip

    async def _render(
        self, incoming: Incoming, text: str, answer: Answer, *, ref: str | None
    ) -> RenderedReply:
        """The reply to a question, recorded now, or (with `ref`) for the platform to record later."""
        asked = _with_text(incoming, text)
        unrecorded = None if ref is None else UnrecordedQuestion(asked, answer, ref)
        question_id: int | None = None
        if unrecorded is None:
            try:
                question_id = await self.store.run(self.store.record_question, asked, answer)
            except SQLAlchemyError as exc:
                # The answer matters more than the record of it: answer anyway, without buttons.
                log.warning("could not record a question event: %s", exc)
        reply = render_answer(
            answer, question_id=question_id, unrecorded=unrecorded, link_base=self.link_base,
            shown_sources=self.shown_sources,
        )  # fmt: skip
        return reply  # render_answer keeps the guarded answer on it (bot/render.py)

    async def question_id(self, question: str, *, patience_s: float = 2.0) -> int | None:
        """The id of the question a button names (`RenderedReply.question`): an id, or a reference.

        A referenced question is written just after its answer is delivered (`stream`), so a
        click may come first: it is looked for again for up to `patience_s`. None when there is no
        such question (its record failed, or the reference is made up).
        """
        if question.isdigit():
            return int(question)
        if not question:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience_s
        while (found := await self.store.run(self.store.question_by_ref, question)) is None:
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.1)
        return found

    async def feedback(self, incoming: Incoming, question_id: int | None, *, helpful: bool) -> RenderedReply:
        await self.store.run(self.store.record_feedback, incoming, question_id, value=1 if helpful else -1)
        return plain("Thanks for the feedback!" if helpful else "Thanks, I will pass that on to the team.")

    async def source_clicked(
        self, incoming: Incoming, question_id: int | None, number: int, uri: str
    ) -> None:
        await self.store.run(self.store.record_click, incoming, question_id, number=number, uri=uri)

    async def all_sources(self, question_id: int) -> tuple[SourceLink, ...]:
        """Every source an earlier answer cited, for "show more sources"."""
        row = await self.store.run(self.store.question, question_id)
        if row is None:
            return ()
        citations = [
            Citation(c["number"], c["title"], c["uri"], c.get("section", ""), "", 0.0)
            for c in row.data.get("citations", [])
        ]
        return source_links(citations, link_base=self.link_base)

    async def _digest(self, incoming: Incoming, cadence: str) -> RenderedReply:
        if cadence == "now":
            await self.store.run(
                self.store.set_digest, incoming.platform, incoming.user, cadence=None, now=True
            )
            return plain("Your digest is on its way.")
        await self.store.run(self.store.set_digest, incoming.platform, incoming.user, cadence=cadence)
        if cadence == "off":
            return plain("Digest turned off. `digest weekly` turns it back on.")
        return plain(f"You will get a {cadence} digest.")

    async def _admin(self, incoming: Incoming, command: Admin | Invalid) -> RenderedReply:
        verb = command.verb if isinstance(command, Admin) else command.admin_verb or "?"
        action, target = f"admin.{verb}", incoming.text[:500]
        params = {"platform": incoming.platform, "channel": incoming.channel}
        if incoming.who not in self.admins:
            await self._audit(incoming.who, action, target, params, "refused: not an admin")
            return plain("Sorry, admin commands are for admins only, and you are not one.", ok=False)
        if isinstance(command, Invalid):
            await self._audit(incoming.who, action, target, params, f"invalid: {command.message}")
            return plain(command.message, ok=False)
        hook: AdminHook | None = getattr(self.hooks, verb)
        if hook is None:
            message = _NOT_CONFIGURED.get(verb, f"`admin {verb}` is not configured on this server yet.")
            await self._audit(incoming.who, action, target, params, "not configured")
            return plain(message, ok=False)
        try:
            said = await hook(replace(command, actor=incoming.who))
        except KBError as exc:  # refused on purpose (no student configured, over budget): no traceback
            await self._audit(incoming.who, action, target, params, f"refused: {exc}")
            return plain(f"`admin {verb}`: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), ok=False)
        except Exception as exc:
            # Whatever broke, the admin gets an answer and the audit log the outcome.
            log.exception("admin %s failed", verb)
            await self._audit(incoming.who, action, target, params, f"failed: {exc}")
            return plain(f"`admin {verb}` failed: {exc}", ok=False)
        message = said.text if isinstance(said, LiveText) else said
        await self._audit(incoming.who, action, target, params, f"ok: {message}")
        return replace(plain(message), live=said if isinstance(said, LiveText) else None)

    async def _audit(
        self, actor: str, action: str, target: str, params: dict[str, str], outcome: str
    ) -> None:
        await self.store.run(self.audit.record, actor, action, target=target, params=params, outcome=outcome)


def _with_text(incoming: Incoming, text: str) -> Incoming:
    return replace(incoming, text=text)


async def _whole(answers: AnswerService, question: Question) -> AsyncIterator[str | Answer]:
    yield await answers.answer(question)


def _unchanged(text: str) -> str:
    return text
