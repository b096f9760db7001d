"""The Slack app: a slack-bolt AsyncApp built from Settings, mounted in `kb serve` or run over Socket Mode.

    mount_slack(app, settings, conversation, metrics=metrics)   # in app/server/assembly.py's create_app

HTTP (Events API): bolt verifies each request's signature and timestamp (401 otherwise) at
`/slack/events`; `/slack/commands` and `/slack/interactions` are the same endpoint under the names
Slack's app settings suggest. Socket Mode starts with the aiohttp app when KB_SLACK_APP_TOKEN is set.
While the app runs, a sweep re-runs events whose answering replica died (every KB_BOT_CLAIM_SWEEP_S);
its first round runs before the server takes requests, which also gets SQLAlchemy's one-off setup
(mapper configuration, statement compilation: a few hundred ms holding the GIL) out of the first acks.

A redelivery (X-Slack-Retry-Num) of an event this process has claimed, or is claiming (it waits for
that claim), is answered 200 once its signature checks out, without going through bolt: three of
four deliveries in a burst of Slack retries are these, and bolt's dispatch is most of the CPU an ack
costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bot.conversation import Conversation
from bot.slack.directory import SlackDirectory
from bot.slack.handlers import PLATFORM, SlackHandlers
from bot.slack.sender import SlackSender, make_client
from bot.tasks import AckFirst, BackgroundTasks
from core.errors import ConfigError
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

ROUTES = ("/slack/events", "/slack/commands", "/slack/interactions")
SHUTDOWN_DRAIN_SECONDS = 10.0


@dataclass(slots=True)
class SlackBot:
    """The running pieces: bolt's app, the conversation behind it, and the work in flight."""

    bolt: AsyncApp
    conversation: Conversation
    tasks: BackgroundTasks
    handlers: SlackHandlers
    ack_first: AckFirst
    verifier: SignatureVerifier | None = None
    socket_mode: AsyncSocketModeHandler | None = None
    sweeper: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp -> bolt -> aiohttp; bolt checks the signature before anything else runs."""
        with self.ack_first.acking():
            if await self._known_redelivery(request):
                return web.Response(status=200)
            try:
                bolt_request = await to_bolt_request(request)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return web.json_response(
                    {"error": "the body must be Slack's JSON or form payload"}, status=400
                )
            if not _well_formed(bolt_request.body):
                return web.json_response(
                    {"error": "not a Slack payload: 'event' must be an object"}, status=400
                )
            response = await self.bolt.async_dispatch(bolt_request)
            return await to_aiohttp_response(response)

    async def _known_redelivery(self, request: web.Request) -> bool:
        """A correctly signed Slack retry of an event this process claimed already (see the docstring)."""
        if self.verifier is None or "X-Slack-Retry-Num" not in request.headers:
            return False
        if request.content_type != "application/json":
            return False
        body = await request.read()  # aiohttp keeps it: bolt's adapter reads it again when needed
        try:
            event_id = json.loads(body).get("event_id")
        except (ValueError, AttributeError):
            return False
        if not isinstance(event_id, str) or not self.handlers.seen(event_id):
            return False
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return False
        return await self.handlers.handled(event_id)


async def _warm(directory: SlackDirectory) -> None:
    """Learn the bot's public channels (SlackDirectory.warm); without them, each is looked up later."""
    log.info("%d public Slack channels known before their first question", await directory.warm())


def _well_formed(body: object) -> bool:
    """The shape bolt's own middleware assumes; anything else would end in a 500 inside bolt."""
    if not isinstance(body, dict):
        return False
    return "event" not in body or isinstance(body["event"], dict)


def build_slack_bot(
    settings: Settings, conversation: Conversation, *, metrics: Metrics | None = None
) -> SlackBot:
    """An AsyncApp whose Web API client talks to settings.slack_api_url (Slack's, or a test fake).

    Registers a SlackDirectory with the conversation, so Slack user groups and private channels'
    members count in access control.
    """
    if settings.slack.bot_token is None:
        raise ValueError("KB_SLACK_BOT_TOKEN is not set")
    token = settings.slack.bot_token.get_secret_value()
    secret = settings.slack.signing_secret.get_secret_value().strip() if settings.slack.signing_secret else ""
    if not secret and settings.slack.app_token is None:
        # Settings refuse this already; a SlackSettings built around them must not open HTTP unsigned.
        raise ConfigError(
            "KB_SLACK_SIGNING_SECRET is empty: Slack's HTTP events cannot be verified",
            hint="set the signing secret, or KB_SLACK_APP_TOKEN for Socket Mode",
        )
    client = make_client(token, base_url=str(settings.slack.api_url))
    bolt = AsyncApp(
        client=client,
        signing_secret=secret,
        # Always on: bolt skips the check for Socket Mode requests (the app token authenticates
        # those), and with no secret the HTTP routes are not mounted at all (mount_slack).
        request_verification_enabled=True,
        # Our listeners only ack and hand the work to BackgroundTasks, so running them before the
        # response costs microseconds, and the work is registered (drainable) once Slack has its ack.
        process_before_response=True,
        logger=logging.getLogger("bot.slack.bolt"),
    )
    conversation.directories[PLATFORM] = SlackDirectory(client, ttl_s=settings.slack.directory_ttl_s)
    tasks, ack_first = BackgroundTasks(), conversation.ack_first
    handlers = SlackHandlers(
        conversation, SlackSender(client), conversation.store, tasks,
        settings=settings, metrics=metrics,
    )  # fmt: skip
    handlers.register(bolt)
    verifier = SignatureVerifier(secret) if secret else None
    return SlackBot(bolt, conversation, tasks, handlers, ack_first, verifier)


SLACK_BOT_KEY = web.AppKey("slack_bot", SlackBot)


def mount_slack(
    app: web.Application,
    settings: Settings,
    conversation: Conversation,
    *,
    metrics: Metrics | None = None,
) -> SlackBot | None:
    """Add Slack to `kb serve`'s app when a bot token is configured; returns None when it is not.

    The HTTP routes need KB_SLACK_SIGNING_SECRET (a ConfigError without it, unless Socket Mode is
    on); KB_SLACK_APP_TOKEN adds a Socket Mode connection.
    """
    if settings.slack.bot_token is None:
        return None
    if settings.slack.signing_secret is None and settings.slack.app_token is None:
        # Unsigned HTTP events would let anyone speak as any user, admins included: refuse to start.
        raise ConfigError(
            "KB_SLACK_BOT_TOKEN is set but KB_SLACK_SIGNING_SECRET is empty or unset: Slack's HTTP "
            "events cannot be verified without it",
            hint="set KB_SLACK_SIGNING_SECRET (Slack app > Basic Information), or KB_SLACK_APP_TOKEN "
            "for Socket Mode, or unset KB_SLACK_BOT_TOKEN",
        )
    bot = build_slack_bot(settings, conversation, metrics=metrics)
    if bot.verifier is not None:  # HTTP only with a signing secret to verify every request by
        for route in ROUTES:
            app.router.add_post(route, bot.handle)
    if settings.slack.app_token is not None:
        bot.socket_mode = AsyncSocketModeHandler(bot.bolt, settings.slack.app_token.get_secret_value())

    app.on_startup.append(lambda _app: _start(bot, settings.bot.claim_sweep_s))
    app.on_shutdown.append(lambda _app: _stop(bot))
    app[SLACK_BOT_KEY] = bot
    return bot


async def _start(bot: SlackBot, sweep_every_s: float) -> None:
    # One pooled session for every Web API call: slack_sdk opens a new one per call otherwise.
    bot.bolt.client.session = aiohttp.ClientSession()
    directory = bot.conversation.directories.get(PLATFORM)
    if isinstance(directory, SlackDirectory):  # beside the first sweep, not before the requests
        bot.tasks.spawn(_warm(directory), name="slack-directory-warm")
    # The first round before any request (module docstring); a failure is the sweep's to retry.
    try:
        await bot.handlers.recover()
    except Exception:
        log.exception("the first sweep of unanswered Slack events failed")
    bot.sweeper = asyncio.create_task(bot.handlers.sweep_forever(sweep_every_s, first_after=sweep_every_s))
    if bot.socket_mode is not None:
        await bot.socket_mode.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it untyped


async def _stop(bot: SlackBot) -> None:
    if bot.sweeper is not None:
        bot.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot.sweeper
    if bot.socket_mode is not None:
        await bot.socket_mode.close_async()  # type: ignore[no-untyped-call]
    await bot.handlers.live.stop()
    await bot.tasks.drain(seconds=SHUTDOWN_DRAIN_SECONDS)
    bot.conversation.store.close()
    if bot.bolt.client.session is not None:
        await bot.bolt.client.session.close()
