"""Teams: `/api/messages` in `kb serve`, on the Microsoft 365 Agents SDK (AgentApplication + CloudAdapter).

    mount_teams(app, settings, conversation, metrics=metrics)   # in app/server/assembly.py's create_app

With KB_TEAMS_APP_ID set, every activity must carry a Bot Framework / Entra JWT (validated by the
SDK's JwtTokenValidator) and replies authenticate through MSAL. Without it the endpoint is mounted
only when `allow_anonymous=True` (local testing), since an unauthenticated endpoint would let anyone
claim to be any user, and so read what that user's groups may read.

Teams waits up to 15 s for a turn; answers are sent inside the turn, typing indicator first. Teams
gets the final answer only: no streamed drafts (Slack has them), since editing a sent card needs the
connector's update call for each draft and a turn must end within its 15 s anyway. A reply with a
LiveText (`admin status` while a run trains) is the exception: after the turn its card is updated
in place as the run goes on (bot/live.py, one per conversation), each update a proactive turn of
its own (the turn's connector client closes with the turn), so only with connector credentials.

Teams delivers an activity again when a turn fails or times out, possibly to another replica: each
message activity is claimed by its conversation and activity id through the exactly-once protocol
(bot/claims.py) before it is answered, so a copy is answered (or its button recorded) only once.
A question's claim keeps a lease while it is answered; when a replica dies mid-answer, the sweep
re-runs the question on another one, which sends the answer as a proactive message into the
conversation (through the conversation reference every activity refreshes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import ClientResponseError, web
from microsoft_agents.activity import (  # type: ignore[import-untyped, unused-ignore]
    Activity,
    Attachment,
    ConversationReference,
)
from microsoft_agents.authentication.msal import (  # type: ignore[import-untyped, unused-ignore]
    MsalConnectionManager,
)
from microsoft_agents.hosting.aiohttp import CloudAdapter  # type: ignore[import-untyped, unused-ignore]
from microsoft_agents.hosting.core import (  # type: ignore[import-untyped, unused-ignore]
    AgentApplication,
    MemoryStorage,
    MessageFactory,
    TurnContext,
    TurnState,
)
from microsoft_agents.hosting.core.authorization import (  # type: ignore[import-untyped, unused-ignore]
    AgentAuthConfiguration,
    ClaimsIdentity,
    JwtTokenValidator,
)
from pydantic import ValidationError

from bot.claims import ExactlyOnce, Leases
from bot.conversation import Conversation
from bot.errors import ChatPlatformError, MessageGone
from bot.live import LiveReplies
from bot.store import BotStore, Claim
from bot.tasks import BackgroundTasks
from bot.teams.cards import ACTION_KEY, CARD_TYPE, Card, reply_cards, sources_card
from bot.types import Action, Incoming, LiveText, plain
from core.metrics import Metrics
from core.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "teams"
ROUTE = "/api/messages"
SHUTDOWN_DRAIN_SECONDS = 10.0
_SORRY = "Sorry, something went wrong while answering. Please ask again in a minute."
# The connector's answers to an update of an activity that was deleted or is no longer the bot's to
# edit (404 not found, 403 for a deleted channel message or a bot removed from the conversation).
_GONE = frozenset({403, 404, 410})


class _Request:
    """The SDK's HttpRequestProtocol over an aiohttp request, with claims we validated ourselves.

    (The SDK's own aiohttp middleware keeps state under string keys, which aiohttp warns about.)
    """

    method = "POST"

    def __init__(self, request: web.Request, body: dict[str, Any], claims: Any) -> None:
        self._request, self._body, self._claims = request, body, claims

    @property
    def headers(self) -> Mapping[str, str]:
        return self._request.headers

    async def json(self) -> dict[str, Any]:
        return self._body

    def get_claims_identity(self) -> Any:
        return self._claims

    def get_path_param(self, name: str) -> str:
        return self._request.match_info[name]


class TeamsBot:
    def __init__(
        self,
        conversation: Conversation,
        store: BotStore,
        *,
        auth: Any | None,
        connections: Any | None = None,
        metrics: Metrics | None = None,
        leases: Leases | None = None,
        live: LiveReplies | None = None,
    ) -> None:
        """`auth` is an AgentAuthConfiguration (JWT required) or None (anonymous, tests only)."""
        self.conversation = conversation
        self.store = store
        self.metrics = metrics
        self.tasks = BackgroundTasks()
        # Updating a card after its turn is a proactive message, which needs the connector's tokens.
        self.live = live if connections is not None else None
        # Proactive messages need the connector's tokens: an anonymous endpoint (local testing) has
        # none, so there a question whose replica died is given up rather than re-run.
        rerun = self._rerun if connections is not None else None
        self.claims = ExactlyOnce(
            store, self.tasks, platform=PLATFORM, leases=leases or Leases(), rerun=rerun
        )
        self.sweeper: asyncio.Task[None] | None = None
        self._app_id = str(getattr(auth, "client_id", None) or "")
        self._validator = JwtTokenValidator(auth or AgentAuthConfiguration(anonymous_allowed=True))
        self._auth_required = auth is not None
        self.adapter = CloudAdapter(connection_manager=connections)
        self.adapter.on_turn_error = self._on_turn_error
        self.agent = AgentApplication[TurnState](
            storage=MemoryStorage(), adapter=self.adapter, start_typing_timer=False
        )
        self.agent.activity("message")(self._on_message)
        self.agent.activity("conversationUpdate")(self._on_conversation_update)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        claims = await self._claims(request)
        if claims is None:
            return web.json_response({"error": "a valid Bot Framework token is required"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be a JSON activity"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("conversation"), dict):
            return web.json_response({"error": "an activity needs a type and a conversation"}, status=400)
        try:
            response = await self.adapter.process_request(_Request(request, body, claims), self.agent)
        except ValidationError as exc:
            return web.json_response(
                {"error": f"not a valid activity: {exc.error_count()} problems"}, status=400
            )
        if response.body is not None:
            return web.json_response(response.body, status=response.status_code)
        return web.Response(status=response.status_code)

    async def _claims(self, request: web.Request) -> Any | None:
        header = request.headers.get("Authorization", "")
        if not self._auth_required:
            return self._validator.get_anonymous_claims()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims: ClaimsIdentity = await self._validator.validate_token(token)
        except Exception as exc:
            # PyJWT, key fetching and audience errors all mean the same here: not from Teams.
            log.warning("rejected a Teams activity: %s", type(exc).__name__)
            return None
        return claims

    async def _on_message(self, context: Any, _state: Any) -> None:
        activity: Activity = context.activity
        await self._remember(activity)
        incoming = _incoming(activity, TurnContext.remove_recipient_mention(activity) or "")
        value = activity.value if isinstance(activity.value, dict) else {}
        submit = bool(value.get(ACTION_KEY))
        key = _event_key(self.claims, activity)
        # A button's activity needs no answer: claimed only to turn its copies away.
        if key is not None and not await self.claims.claim(key, None if submit else incoming):
            log.info("Teams activity %s was already handled: ignoring the redelivery", key)
            return
        if submit:
            await self._on_submit(context, incoming, value)
            return
        await self._answer(context, incoming, key)

    async def _answer(self, context: Any, incoming: Incoming, key: str | None) -> None:
        """Typing, the answer's cards; the claim's lease renewed meanwhile and closed once they are sent."""
        with self.claims.lease(key):
            await context.send_activity(Activity(type="typing"))
            try:
                reply = await self.conversation.handle(incoming)
            except Exception:
                log.exception("answering %s failed", incoming.who)
                reply = plain(_SORRY, ok=False)
            if self.metrics is not None and reply.question_id is not None:
                self.metrics.questions.labels(
                    channel=PLATFORM, outcome="answered" if reply.ok else "abstained"
                ).inc()
            sent = [await _send_card(context, card) for card in reply_cards(reply)]
        if key is not None:
            await self.claims.finish(key)
        if reply.live is not None and sent and sent[-1]:
            self._follow(context, reply.live, sent[-1])

    def _follow(self, context: Any, live: LiveText, activity_id: str) -> None:
        """Update the sent card `activity_id` as `live` changes (bot/live.py), one per conversation."""
        if self.live is None:
            return  # no connector credentials (anonymous local testing): the card stays as sent
        reference = context.activity.get_conversation_reference()
        edit = functools.partial(self._edit_card, reference, activity_id)
        self.live.follow(f"{PLATFORM}:{reference.conversation.id}", live, edit)

    async def _edit_card(self, reference: ConversationReference, activity_id: str, text: str) -> None:
        failed: list[Exception] = []

        async def update(context: Any) -> None:
            card = reply_cards(plain(text))[-1]
            attachment = Attachment(content_type=CARD_TYPE, content=card)
            try:
                await context.update_activity(
                    Activity(type="message", id=activity_id, attachments=[attachment])
                )
            except Exception as exc:  # kept from the SDK's turn error handler, which would say sorry
                failed.append(exc)

        await self.adapter.continue_conversation(self._app_id, reference.get_continuation_activity(), update)
        if failed:
            status = failed[0].status if isinstance(failed[0], ClientResponseError) else None
            kind = MessageGone if status in _GONE else ChatPlatformError
            raise kind(f"Teams refused to update card {activity_id}: {failed[0]}") from failed[0]

    async def _rerun(self, claim: Claim) -> None:
        """A question whose replica died: answered as a proactive message into its conversation."""
        references = await self.store.run(self.store.references, PLATFORM, claim.incoming.user)
        found = [r for r in references if r.conversation_id == claim.incoming.channel]
        if not found:
            log.warning("no conversation reference for Teams event %s: it cannot be answered", claim.key)
            return  # its lease runs out again, and after KB_BOT_CLAIM_ATTEMPTS it is given up
        reference = ConversationReference.model_validate(found[0].reference)

        async def answer(context: Any) -> None:
            await self._answer(context, claim.incoming, claim.key)

        await self.adapter.continue_conversation(self._app_id, reference.get_continuation_activity(), answer)

    async def start(self, sweep_s: float) -> None:
        """Re-run what a dead replica left (a failure is the sweep's to retry), then sweep every `sweep_s`."""
        try:
            await self.claims.recover()
        except Exception:
            log.exception("the first sweep of unanswered Teams events failed")
        self.sweeper = asyncio.create_task(self.claims.sweep_forever(sweep_s, first_after=sweep_s))

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.stop()
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.tasks.drain(seconds=SHUTDOWN_DRAIN_SECONDS)

    async def _on_submit(self, context: Any, incoming: Incoming, value: dict[str, Any]) -> None:
        try:
            question_id = int(str(value.get("question_id")))
        except ValueError:
            return
        action = value[ACTION_KEY]
        if action in (Action.FEEDBACK_UP, Action.FEEDBACK_DOWN):
            reply = await self.conversation.feedback(
                incoming, question_id, helpful=action == Action.FEEDBACK_UP
            )
            await context.send_activity(MessageFactory.text(reply.text))
        elif action == Action.MORE_SOURCES:
            await _send_card(context, sources_card(await self.conversation.all_sources(question_id)))

    async def _on_conversation_update(self, context: Any, _state: Any) -> None:
        await self._remember(context.activity)

    async def _remember(self, activity: Activity) -> None:
        """Keep the conversation reference: push writes to this user later through it."""
        reference = activity.get_conversation_reference()
        await self.store.run(
            self.store.save_reference, PLATFORM, activity.conversation.id, user_id=_user(activity),
            service_url=activity.service_url or "",
            reference=reference.model_dump(mode="json", exclude_none=True),
        )  # fmt: skip

    async def _on_turn_error(self, context: Any, error: Exception) -> None:
        # The SDK's default sends the exception text to the user; they get an apology instead.
        log.error("Teams turn failed", exc_info=error)
        await context.send_activity(MessageFactory.text(_SORRY))


async def _send_card(context: Any, card: Card) -> str:
    """Send a card; returns the id the connector gave it ("" when none), which updates name."""
    sent = await context.send_activity(
        MessageFactory.attachment(Attachment(content_type=CARD_TYPE, content=card))
    )
    return str(getattr(sent, "id", None) or "")


def _event_key(claims: ExactlyOnce, activity: Activity) -> str | None:
    """The activity's claim key; ids are unique within a conversation (a channel's are timestamps)."""
    if not activity.id:
        return None
    conversation = hashlib.sha256(str(activity.conversation.id).encode()).hexdigest()[:16]
    return claims.key(f"{conversation}:{str(activity.id)[:150]}")


def _user(activity: Activity) -> str:
    sender = activity.from_property
    # The Entra object id is the same person in every team and chat; the channel id is not.
    return str(getattr(sender, "aad_object_id", None) or getattr(sender, "id", "") or "unknown")


def _incoming(activity: Activity, text: str) -> Incoming:
    personal = getattr(activity.conversation, "conversation_type", None) == "personal"
    return Incoming(
        PLATFORM, _user(activity), text.strip(), channel=str(activity.conversation.id),
        thread=activity.reply_to_id, private=personal,
    )  # fmt: skip


TEAMS_BOT_KEY = web.AppKey("teams_bot", TeamsBot)


def mount_teams(
    app: web.Application,
    settings: Settings,
    conversation: Conversation,
    *,
    metrics: Metrics | None = None,
    allow_anonymous: bool = False,
    connections: Any | None = None,
) -> TeamsBot | None:
    """Add `/api/messages` when KB_TEAMS_APP_ID is set (or, for local testing, `allow_anonymous`).

    `connections` replaces the MSAL connection manager that outgoing messages take tokens from.
    """
    auth = None
    if settings.teams.app_id:
        secret = settings.teams.app_password.get_secret_value() if settings.teams.app_password else None
        auth = AgentAuthConfiguration(
            client_id=settings.teams.app_id, client_secret=secret, tenant_id=settings.teams.tenant_id
        )
        connections = connections or _msal_connections(auth)
    elif not allow_anonymous:
        return None
    live = LiveReplies(interval_s=settings.bot.status_interval_s, max_s=settings.bot.status_max_s)
    bot = TeamsBot(
        conversation, conversation.store, auth=auth, connections=connections, metrics=metrics,
        leases=Leases.from_settings(settings), live=live,
    )  # fmt: skip
    app.router.add_post(ROUTE, bot.handle)

    async def start(_app: web.Application) -> None:
        await bot.start(settings.bot.claim_sweep_s)

    async def stop(_app: web.Application) -> None:
        await bot.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app[TEAMS_BOT_KEY] = bot
    return bot


def _msal_connections(auth: Any) -> Any:
    """Outgoing replies get their tokens from Entra through MSAL (microsoft-agents-authentication-msal)."""
    return MsalConnectionManager(connections_configurations={"SERVICE_CONNECTION": auth})
