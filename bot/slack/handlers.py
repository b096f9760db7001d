"""Slack listeners: mentions, DMs, `/kb`, buttons and App Home, all acked before any real work.

Translation only: a Slack payload becomes an `Incoming` and an event key, the exactly-once protocol
(bot/claims.py) decides whether this delivery answers it, and the reply goes back as Block Kit.

Every listener acks (bolt acks Events API deliveries itself) and hands the work to BackgroundTasks,
so Slack hears back within its 3 seconds however slow the answer is. A global middleware claims
each event_id first, so a redelivery (X-Slack-Retry-Num) is answered only once, across restarts
and replicas; `recover` re-runs claims whose replica died after the ack. The same middleware
starts the Slack directory lookups the answer's access check will need, so that on a cold cache
they run while the event is being claimed rather than after.

The answer does not wait for the claim: the first delivery this process sees of a question starts
answering it (access check, retrieval, the model) while its claim is being written, and whatever
the answer would post or record waits until the claim holds. A delivery whose claim is lost (a
redelivery after a restart, another replica's copy) posts and records nothing: its answer is
cancelled. Under load the claim's write then costs the answer no time at all.

Answers stream: "searching…" is posted in the thread, then replaced by drafts of the answer at
most once per KB_BOT_STREAM_INTERVAL_S, then by the final Block Kit answer (bot/slack/streaming.py).
The final answer does not wait for the question's record either: its buttons name the question by
the event's key, and the question event is written with the claim's close, once the answer is out
(one transaction: a re-run after a crash records it once, and push and training never see a
question before its answer). A click resolves the key to the question's id (Conversation.question_id).
Slash commands answer through response_url, final answer only. An answer with a LiveText (`admin
status` while a run trains) goes on being edited in its message (bot/live.py), one per channel.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.response import BoltResponse

from bot.claims import ExactlyOnce, Leases, Start, held
from bot.commands import Ask, parse
from bot.conversation import Conversation
from bot.errors import ChatPlatformError, NotClaimed
from bot.live import LiveReplies
from bot.slack.blocks import ACTION_IDS, SOURCE_ACTION, SlackMessage, home_view, sources_message, to_messages
from bot.slack.directory import SlackDirectory
from bot.slack.sender import SEARCHING, SlackSender
from bot.slack.streaming import SORRY, stream_into_message
from bot.store import BotStore, Claim
from bot.tasks import BackgroundTasks
from bot.types import Action, Incoming, RenderedReply, plain
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "slack"
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
_FOREIGN_TEAM = "This bot is not installed in your workspace, so it cannot answer here."
# Message subtypes that are a person writing; edits, joins, bot posts and the like are not questions.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}

ANSWERING = "kb_answering"  # in bolt's context: `guard` started the event's answer with its claim
Next = Callable[[], Awaitable[None]]


def strip_mentions(text: str) -> str:
    return _MENTION.sub(" ", text).strip()


def _from_bot(event: dict[str, Any]) -> bool:
    return bool(event.get("bot_id") or event.get("bot_profile")) or event.get("subtype") == "bot_message"


def incoming_from_event(event: dict[str, Any]) -> Incoming | None:
    """The question in a mention or a DM, or None for an event the bot does not answer."""
    kind, user, channel, ts = event.get("type"), event.get("user"), event.get("channel"), event.get("ts")
    if _from_bot(event) or not (user and channel and ts):
        return None
    text = strip_mentions(str(event.get("text", "")))
    if kind == "app_mention" and event.get("channel_type") != "im":  # DMs come as message.im too
        thread = str(event.get("thread_ts") or ts)
        return Incoming(PLATFORM, str(user), text, channel=str(channel), thread=thread, private=False)
    if kind == "message" and event.get("channel_type") == "im" and event.get("subtype") in _PERSON_SUBTYPES:
        in_thread = event.get("thread_ts")
        return Incoming(
            PLATFORM, str(user), text, channel=str(channel), thread=str(in_thread) if in_thread else None,
            private=True,
        )  # fmt: skip
    return None


class SlackHandlers:
    def __init__(
        self,
        conversation: Conversation,
        sender: SlackSender,
        store: BotStore,
        tasks: BackgroundTasks,
        *,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.conversation = conversation
        self.sender = sender
        self.store = store
        self.tasks = tasks
        self.metrics = metrics
        self.interval = settings.bot.stream_interval_s
        self.live = LiveReplies(interval_s=settings.bot.status_interval_s, max_s=settings.bot.status_max_s)
        self.claims = ExactlyOnce(
            store, tasks, platform=PLATFORM, leases=Leases.from_settings(settings), rerun=self._rerun
        )

    def register(self, app: AsyncApp) -> None:
        app.use(self.guard)
        app.event("app_mention")(self.on_event)
        app.event("message")(self.on_event)
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
        if isinstance(event_id, str) and event_id:
            key = self.claims.key(event_id)
            event = body.get("event")
            incoming = incoming_from_event(event) if isinstance(event, dict) else None
            if incoming is not None and not self.claims.seen(key):
                self._prefetch(incoming)
            # A claim that fails (database down) raises: Slack gets a 500 and delivers the event again.
            if not await self.claims.claim(key, incoming, start=self._starter(incoming, key)):
                log.info("event %s was already handled: ignoring the redelivery", event_id)
                return BoltResponse(status=200, body="")
            context[ANSWERING] = incoming is not None  # `on_event` has nothing left to start
        await next()
        return None

    def _prefetch(self, incoming: Incoming) -> None:
        """Start the directory lookups the answer's access check needs (SlackDirectory.prefetch)."""
        directory = self.conversation.directories.get(PLATFORM)
        if isinstance(directory, SlackDirectory):
            if incoming.private:
                directory.prefetch(user=incoming.user)
            else:
                directory.prefetch(channel=incoming.channel)

    def seen(self, event_id: str) -> bool:
        """True when this process claimed `event_id` lately or is writing its claim now."""
        return self.claims.seen(self.claims.key(event_id))

    async def handled(self, event_id: str) -> bool:
        """For a `seen` event: True once its claim is settled (ExactlyOnce.handled)."""
        return await self.claims.handled(self.claims.key(event_id))

    async def recover(self) -> int:
        """Re-run Slack events whose replica died (ExactlyOnce.recover); returns the re-runs."""
        return await self.claims.recover()

    async def sweep_forever(self, every_s: float, *, first_after: float = 0.0) -> None:
        await self.claims.sweep_forever(every_s, first_after=first_after)

    def _starter(self, incoming: Incoming | None, key: str) -> Start | None:
        """The answer `guard` starts while the event's claim is written: it posts once the claim holds."""
        if incoming is None:
            return None
        return lambda claim: self.answer_in_thread(incoming, key=key, claim=claim)

    async def _rerun(self, claim: Claim) -> None:
        """A claim taken over from a dead replica: answer into the message it had started, if any."""
        await self.answer_in_thread(claim.incoming, key=claim.key, reply_ts=claim.reply_ts)

    async def on_event(self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
        incoming = incoming_from_event(event)
        if incoming is not None and not context.get(ANSWERING):
            key = self.claims.key(str(body.get("event_id")))
            self.tasks.spawn(self.answer_in_thread(incoming, key=key), name=f"slack-{key}")

    async def on_other_event(self, event: dict[str, Any]) -> None:
        log.debug("ignoring a Slack %s event", event.get("type"))

    async def answer_in_thread(
        self,
        incoming: Incoming,
        *,
        key: str | None = None,
        reply_ts: str | None = None,
        claim: asyncio.Future[bool] | None = None,
    ) -> None:
        """Post "searching…" in the thread (unless a re-run has its message), stream the answer into it.

        With `key` the claim's lease is renewed meanwhile and the claim closed once the answer is
        delivered; a failed delivery leaves the claim for `recover` to try again. With `claim` (the
        claim's write, still under way) nothing is posted or recorded before it holds, and nothing
        at all when it does not.
        """
        # In a burst of events acks go first: the retrieval waits for them, not these light steps
        # (bot/tasks.py, AckFirstSlots).
        started = time.perf_counter()
        admitted = functools.partial(held, claim) if claim is not None else None
        try:
            with self.claims.lease(key):
                reply = await self._stream(incoming, key, reply_ts, admitted, started=started)
        except NotClaimed:
            return  # another delivery answers it
        except ChatPlatformError as exc:
            log.warning("could not deliver the answer in %s: %s", incoming.channel, exc)
            return
        if key:  # the question's record too: its buttons went out naming it by `key` (Conversation.stream)
            await self.claims.finish(key, question=reply.unrecorded)

    async def _stream(
        self,
        incoming: Incoming,
        key: str | None,
        reply_ts: str | None,
        admitted: Callable[[], Awaitable[None]] | None,
        *,
        started: float,
    ) -> RenderedReply:
        """ "searching…" (or the re-run's message), the drafts, then the final answer in its messages."""
        loop = asyncio.get_running_loop()
        posted: asyncio.Future[str] | str = reply_ts or asyncio.ensure_future(
            self._post_searching(incoming, key, admitted)
        )
        ts, reply = await stream_into_message(
            self.conversation.stream(incoming, admitted=admitted, ref=key), self.sender, incoming.channel,
            posted, interval=self.interval, last_update=loop.time(),
        )  # fmt: skip
        self._count(reply, started)
        messages = to_messages(reply)
        await self.sender.update(incoming.channel, ts, messages[0])
        for message in messages[1:]:
            await self.sender.post(incoming.channel, message, thread=incoming.thread or ts)
        if reply.live is not None:
            edit = functools.partial(_edit, self.sender, incoming.channel, ts)
            self.live.follow(f"{PLATFORM}:{incoming.channel}", reply.live, edit)
        return reply

    async def _post_searching(
        self, incoming: Incoming, key: str | None, admitted: Callable[[], Awaitable[None]] | None
    ) -> str:
        if admitted is not None:
            await admitted()
        ts = await self.sender.searching(incoming.channel, thread=incoming.thread)
        if key:
            await self.claims.reply_at(key, ts)
        return ts

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
        question, who = _question(action.get("value")), _actor(body)
        if question is None or who is None:
            return
        helpful = action.get("action_id") == ACTION_IDS[Action.FEEDBACK_UP]
        self.tasks.spawn(self._feedback(who, question, helpful, body), name=f"slack-feedback-{question}")

    async def _feedback(self, who: Incoming, question: str, helpful: bool, body: dict[str, Any]) -> None:
        # Unknown (its record failed): the rating is kept without the question it was about.
        question_id = await self.conversation.question_id(question)
        reply = await self.conversation.feedback(who, question_id, helpful=helpful)
        await self._ephemeral(body, SlackMessage(reply.text, []))

    async def on_source(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()  # the button's URL already opened in the user's browser; we only record the click
        value, _, number = str(action.get("value", "")).rpartition(":")  # a reference has colons too
        question, who = _question(value), _actor(body)
        if question is None or who is None or _int(number) is None:
            return
        work = self._source_clicked(who, question, int(number), str(action.get("url", "")))
        self.tasks.spawn(work, name=f"slack-click-{question}")

    async def _source_clicked(self, who: Incoming, question: str, number: int, url: str) -> None:
        question_id = await self.conversation.question_id(question)
        await self.conversation.source_clicked(who, question_id, number, url)

    async def on_more_sources(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        question = _question(action.get("value"))
        if question is not None:
            self.tasks.spawn(self._more_sources(question, body), name=f"slack-sources-{question}")

    async def _more_sources(self, question: str, body: dict[str, Any]) -> None:
        question_id = await self.conversation.question_id(question)
        sources = await self.conversation.all_sources(question_id) if question_id is not None else ()
        await self._ephemeral(body, sources_message(sources, question=question))

    async def on_home(self, event: dict[str, Any]) -> None:
        user = event.get("user")
        if event.get("tab", "home") == "home" and user:
            self.tasks.spawn(self._publish_home(str(user)), name=f"slack-home-{user}")

    async def _publish_home(self, user: str) -> None:
        subscriptions = await self.store.run(self.store.subscriptions, PLATFORM, user)
        cadence = await self.store.run(self.store.digest_cadence, PLATFORM, user)
        recent = await self.store.run(self.store.recent_questions, PLATFORM, user)
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
            return plain(SORRY, ok=False)

    async def _ephemeral(self, body: dict[str, Any], message: SlackMessage) -> None:
        url = body.get("response_url")
        if isinstance(url, str) and url:
            await _respond(AsyncRespond(response_url=url), message)

    def _count(self, reply: RenderedReply, started: float) -> None:
        if self.metrics is None or reply.question is None:
            return
        self.metrics.answer_seconds.observe(time.perf_counter() - started)
        outcome = "answered" if reply.ok else "abstained"
        self.metrics.questions.labels(channel=PLATFORM, outcome=outcome).inc()


async def _edit(sender: SlackSender, channel: str, ts: str, text: str) -> None:
    await sender.update(channel, ts, to_messages(plain(text))[0])


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


def _question(value: object) -> str | None:
    """A button's question: a recorded question's id, or the event key of one recorded after its answer."""
    text = str(value or "")
    return text if text.isdigit() or text.startswith(f"{PLATFORM}:") else None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _same_grid(body: dict[str, Any], context: AsyncBoltContext) -> bool:
    enterprise = body.get("enterprise_id") or (body.get("enterprise") or {}).get("id")
    installed = context.authorize_result.enterprise_id if context.authorize_result else None
    return bool(enterprise and installed and enterprise == installed)
