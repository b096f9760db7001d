"""Slack listeners: mentions, DMs, `/kb`, buttons and App Home, all acked before any real work.

Every listener acks (bolt acks Events API deliveries itself) and hands the work to BackgroundTasks,
so Slack hears back within its 3 seconds however slow the answer is. A global middleware claims
each event_id in the database first, so a redelivery (X-Slack-Retry-Num) is answered only once,
across restarts and replicas.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.response import BoltResponse

from bot.commands import Ask, parse
from bot.conversation import Conversation
from bot.errors import ChatPlatformError
from bot.slack.blocks import ACTION_IDS, SOURCE_ACTION, SlackMessage, home_view, sources_message, to_messages
from bot.slack.sender import SEARCHING, SlackSender
from bot.store import BotStore
from bot.tasks import BackgroundTasks
from bot.types import Action, Incoming, RenderedReply, plain
from core.metrics import Metrics

log = logging.getLogger(__name__)

PLATFORM = "slack"
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
_SORRY = "Sorry, something went wrong while answering. Please ask again in a minute."
_FOREIGN_TEAM = "This bot is not installed in your workspace, so it cannot answer here."
# Message subtypes that are a person writing; edits, joins, bot posts and the like are not questions.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}

Next = Callable[[], Awaitable[None]]


def strip_mentions(text: str) -> str:
    return _MENTION.sub(" ", text).strip()


def _from_bot(event: dict[str, Any]) -> bool:
    return bool(event.get("bot_id") or event.get("bot_profile")) or event.get("subtype") == "bot_message"


class SlackHandlers:
    def __init__(
        self,
        conversation: Conversation,
        sender: SlackSender,
        store: BotStore,
        tasks: BackgroundTasks,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.conversation = conversation
        self.sender = sender
        self.store = store
        self.tasks = tasks
        self.metrics = metrics

    def register(self, app: AsyncApp) -> None:
        app.use(self.guard)
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("app_home_opened")(self.on_home)
        app.command("/kb")(self.on_command)
        feedback = re.compile(f"^({ACTION_IDS[Action.FEEDBACK_UP]}|{ACTION_IDS[Action.FEEDBACK_DOWN]})$")
        app.action(feedback)(self.on_feedback)
        app.action(re.compile(rf"^{SOURCE_ACTION}\d+$"))(self.on_source)
        app.action(ACTION_IDS[Action.MORE_SOURCES])(self.on_more_sources)
        # Last: any other event is acked with 200, as Slack disables apps that keep answering 404.
        app.event(re.compile(".*"))(self.on_other_event)

    async def guard(self, body: dict[str, Any], context: AsyncBoltContext, next: Next) -> BoltResponse | None:
        """Turn away other workspaces, and claim each event_id so a redelivery is a no-op."""
        # context.team_id is the request's own; the installation's comes from auth.test.
        installed = context.authorize_result.team_id if context.authorize_result else None
        team = body.get("team_id") or (body.get("team") or {}).get("id")
        if team and installed and team != installed and not _same_grid(body, context):
            if body.get("command"):
                return BoltResponse(status=200, body={"response_type": "ephemeral", "text": _FOREIGN_TEAM})
            return BoltResponse(status=200, body="")
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        has_id = isinstance(event_id, str) and bool(event_id)
        if has_id and not await asyncio.to_thread(self.store.claim_event, f"{PLATFORM}:{event_id}"):
            log.info("event %s was already handled: ignoring the redelivery", event_id)
            return BoltResponse(status=200, body="")
        await next()
        return None

    async def on_mention(self, event: dict[str, Any]) -> None:
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if _from_bot(event) or not (user and channel and ts) or event.get("channel_type") == "im":
            return  # DMs arrive as message.im too; they are answered there, once
        thread = str(event.get("thread_ts") or ts)
        text = strip_mentions(str(event.get("text", "")))
        incoming = Incoming(PLATFORM, str(user), text, channel=str(channel), thread=thread, private=False)
        self.tasks.spawn(self.answer_in_thread(incoming), name=f"slack-mention-{ts}")

    async def on_message(self, event: dict[str, Any]) -> None:
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if event.get("channel_type") != "im" or _from_bot(event) or not (user and channel and ts):
            return
        if event.get("subtype") not in _PERSON_SUBTYPES:
            return
        thread = event.get("thread_ts")
        text = strip_mentions(str(event.get("text", "")))
        incoming = Incoming(
            PLATFORM,
            str(user),
            text,
            channel=str(channel),
            thread=str(thread) if thread else None,
            private=True,
        )
        self.tasks.spawn(self.answer_in_thread(incoming), name=f"slack-dm-{ts}")

    async def on_other_event(self, event: dict[str, Any]) -> None:
        log.debug("ignoring a Slack %s event", event.get("type"))

    async def answer_in_thread(self, incoming: Incoming) -> None:
        """Post "searching…" in the thread, then replace it with the answer (more messages if long)."""
        started = time.perf_counter()
        answering = asyncio.create_task(self._reply(incoming))
        try:
            ts = await self.sender.searching(incoming.channel, thread=incoming.thread)
        except ChatPlatformError as exc:
            log.warning("could not post in %s: %s", incoming.channel, exc)
            answering.cancel()
            return
        reply = await answering
        self._count(reply, started)
        messages = to_messages(reply)
        try:
            await self.sender.update(incoming.channel, ts, messages[0])
            for message in messages[1:]:
                await self.sender.post(incoming.channel, message, thread=incoming.thread or ts)
        except ChatPlatformError as exc:
            log.warning("could not deliver the answer in %s: %s", incoming.channel, exc)

    async def on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        text = str(command.get("text", "")).strip()
        user = command.get("user_id")
        if not user:
            await ack(text="I could not tell who asked; please try again.")
            return
        await ack(text=SEARCHING if isinstance(parse(text), Ask) else "")
        # Only the asker sees the reply (it goes through response_url as ephemeral): their groups apply.
        incoming = Incoming(
            PLATFORM, str(user), text, channel=str(command.get("channel_id", "")), private=True
        )
        self.tasks.spawn(self._respond_to_command(incoming, respond), name=f"slack-command-{user}")

    async def _respond_to_command(self, incoming: Incoming, respond: AsyncRespond) -> None:
        started = time.perf_counter()
        reply = await self._reply(incoming)
        self._count(reply, started)
        for message in to_messages(reply):
            await _respond(respond, message)

    async def on_feedback(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        question_id, who = _int(action.get("value")), _actor(body)
        if question_id is None or who is None:
            return
        helpful = action.get("action_id") == ACTION_IDS[Action.FEEDBACK_UP]
        self.tasks.spawn(
            self._feedback(who, question_id, helpful, body), name=f"slack-feedback-{question_id}"
        )

    async def _feedback(self, who: Incoming, question_id: int, helpful: bool, body: dict[str, Any]) -> None:
        reply = await self.conversation.feedback(who, question_id, helpful=helpful)
        await self._ephemeral(body, SlackMessage(reply.text, []))

    async def on_source(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()  # the button's URL already opened in the user's browser; we only record the click
        question, _, number = str(action.get("value", "")).partition(":")
        question_id, who = _int(question), _actor(body)
        if question_id is None or who is None or _int(number) is None:
            return
        work = self.conversation.source_clicked(who, question_id, int(number), str(action.get("url", "")))
        self.tasks.spawn(work, name=f"slack-click-{question_id}")

    async def on_more_sources(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        question_id = _int(action.get("value"))
        if question_id is not None:
            self.tasks.spawn(self._more_sources(question_id, body), name=f"slack-sources-{question_id}")

    async def _more_sources(self, question_id: int, body: dict[str, Any]) -> None:
        sources = await self.conversation.all_sources(question_id)
        await self._ephemeral(body, sources_message(sources, question_id=question_id))

    async def on_home(self, event: dict[str, Any]) -> None:
        user = event.get("user")
        if event.get("tab", "home") == "home" and user:
            self.tasks.spawn(self._publish_home(str(user)), name=f"slack-home-{user}")

    async def _publish_home(self, user: str) -> None:
        subscriptions = await asyncio.to_thread(self.store.subscriptions, PLATFORM, user)
        cadence = await asyncio.to_thread(self.store.digest_cadence, PLATFORM, user)
        recent = await asyncio.to_thread(self.store.recent_questions, PLATFORM, user)
        lines = [(row.text or "(not kept)", len(row.data.get("citations", []))) for row in recent]
        try:
            await self.sender.publish_home(
                user, home_view(subscriptions=subscriptions, cadence=cadence, recent=lines)
            )
        except ChatPlatformError as exc:
            log.warning("could not publish the App Home of %s: %s", user, exc)

    async def _reply(self, incoming: Incoming) -> RenderedReply:
        try:
            return await self.conversation.handle(incoming)
        except Exception:
            # A bug must still end in a reply, not in a "searching…" message that never changes.
            log.exception("answering %s failed", incoming.who)
            return plain(_SORRY, ok=False)

    async def _ephemeral(self, body: dict[str, Any], message: SlackMessage) -> None:
        url = body.get("response_url")
        if isinstance(url, str) and url:
            await _respond(AsyncRespond(response_url=url), message)

    def _count(self, reply: RenderedReply, started: float) -> None:
        if self.metrics is None or reply.question_id is None:
            return
        self.metrics.answer_seconds.observe(time.perf_counter() - started)
        outcome = "answered" if reply.ok else "abstained"
        self.metrics.questions.labels(channel=PLATFORM, outcome=outcome).inc()


async def _respond(respond: AsyncRespond, message: SlackMessage) -> None:
    try:
        await respond(text=message.text, blocks=message.blocks or None, response_type="ephemeral",
                      replace_original=False)  # fmt: skip
    except Exception as exc:
        # response_url failures (expired after 30 minutes, network) only cost this one reply.
        log.warning("could not answer through response_url: %s", exc)


def _actor(body: dict[str, Any]) -> Incoming | None:
    user = (body.get("user") or {}).get("id")
    if not user:
        return None
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
    thread = (body.get("container") or {}).get("thread_ts") or (body.get("message") or {}).get("ts")
    return Incoming(PLATFORM, str(user), "", channel=str(channel), thread=str(thread) if thread else None)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _same_grid(body: dict[str, Any], context: AsyncBoltContext) -> bool:
    enterprise = body.get("enterprise_id") or (body.get("enterprise") or {}).get("id")
    installed = context.authorize_result.enterprise_id if context.authorize_result else None
    return bool(enterprise and installed and enterprise == installed)
