"""Slack's side of access control: a user's Slack user groups and who can read a channel.

    directory = SlackDirectory(client, ttl_s=300, bot_user="UBOT")
    await directory.groups("U0HR")          # frozenset({"hr"}): user group handles, casefolded
    await directory.audience("C0PRIVATE")   # the members of a private channel, or None if public

User groups come from one `usergroups.list` call with `include_users` (scope usergroups:read),
cached for `ttl_s`; a token without the scope, or a workspace on a plan without user groups, gives
no Slack groups and the configured KB_BOT_USER_GROUPS alone apply (and the call is not repeated
until the cache time has passed). A channel is public unless `conversations.info` says it is
private or a group DM; then its members (`conversations.members`, our own bot user left out) are
its audience. Whenever Slack cannot tell, the answer is None: the public rule, the strictest one.

`warm` learns at start which of the bot's channels are public from `users.conversations` (one call
per 1000 channels), so that the first question in each after a restart does not wait for Slack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

MAX_MEMBERS = 1000  # beyond this a channel is as good as public: its members share no group anyway
WARM_PAGES = 10  # `warm` reads at most this many pages of 1000 channels


class SlackDirectory:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_s: float = 300.0,
        bot_user: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.bot_user = bot_user
        self._clock = clock
        self._groups: tuple[float, asyncio.Future[dict[str, frozenset[str]]]] | None = None
        self._audiences: dict[str, tuple[float, asyncio.Future[tuple[str, ...] | None]]] = {}

    async def groups(self, user: str) -> frozenset[str]:
        # Shielded: the lookup is shared, and one asker's answer being cancelled (it lost its event's
        # claim) must not cancel it for the others, nor leave a cancelled lookup in the cache.
        return (await asyncio.shield(self._all_groups())).get(user, frozenset())

    async def audience(self, channel: str) -> tuple[str, ...] | None:
        return await asyncio.shield(self._audience(channel))

    def prefetch(self, *, channel: str | None = None, user: str | None = None) -> None:
        """Start the lookups an answer in `channel` (or to `user` in private) needs, without waiting.

        Called as an event arrives, so that Slack's answer comes while the event is being claimed
        and acked rather than after: a cold cache otherwise holds up every question in a channel
        for one Web API round trip.
        """
        if channel:
            self._audience(channel)
        if user:
            self._all_groups()

    async def warm(self) -> int:
        """Cache the bot's public channels as public (`users.conversations`); returns how many.

        Private channels stay lazy: their members take a call per channel. A failure caches nothing.
        """
        public: list[str] = []
        cursor = ""
        for _ in range(WARM_PAGES):
            paging = {"cursor": cursor} if cursor else {}
            page = await self._call(
                "users.conversations", types="public_channel", exclude_archived="true", limit="1000", **paging
            )
            if page is None:
                break
            for channel in page.get("channels") or []:
                if channel.get("id") and not (
                    channel.get("is_private") or channel.get("is_mpim") or channel.get("is_im")
                ):
                    public.append(str(channel["id"]))
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        now = self._clock()
        for channel in public:
            if channel not in self._audiences:
                known: asyncio.Future[tuple[str, ...] | None] = asyncio.get_running_loop().create_future()
                known.set_result(None)
                self._audiences[channel] = (now, known)
        return len(public)

    def _all_groups(self) -> asyncio.Future[dict[str, frozenset[str]]]:
        now = self._clock()
        if self._groups is None or now - self._groups[0] >= self.ttl_s or self._groups[1].cancelled():
            # Cache the lookup itself: questions arriving together share one call to Slack.
            self._groups = (now, asyncio.ensure_future(self._load_groups()))
        return self._groups[1]

    def _audience(self, channel: str) -> asyncio.Future[tuple[str, ...] | None]:
        now = self._clock()
        cached = self._audiences.get(channel)
        if cached is None or now - cached[0] >= self.ttl_s or cached[1].cancelled():
            cached = (now, asyncio.ensure_future(self._load_audience(channel)))
            self._audiences[channel] = cached
        return cached[1]

    async def _load_groups(self) -> dict[str, frozenset[str]]:
        data = await self._call("usergroups.list", include_users="true")
        members: dict[str, set[str]] = {}
        for group in (data or {}).get("usergroups") or []:
            handle = str(group.get("handle") or "").casefold()
            if not handle or group.get("date_delete"):
                continue
            for user in group.get("users") or []:
                members.setdefault(str(user), set()).add(handle)
        return {user: frozenset(handles) for user, handles in members.items()}

    async def _load_audience(self, channel: str) -> tuple[str, ...] | None:
        info = await self._call("conversations.info", channel=channel)
        about = (info or {}).get("channel") or {}
        if not about or not (about.get("is_private") or about.get("is_mpim") or about.get("is_im")):
            return None
        if self.bot_user is None:  # our own bot is in every channel it answers in; it has no groups
            self.bot_user = str(((await self._call("auth.test")) or {}).get("user_id") or "") or None
        users: list[str] = []
        cursor = ""
        while len(users) <= MAX_MEMBERS:
            paging = {"cursor": cursor} if cursor else {}
            page = await self._call("conversations.members", channel=channel, limit="200", **paging)
            if page is None:
                return None
            users += [str(u) for u in page.get("members") or [] if u != self.bot_user]
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return tuple(users) if users else None
        return None

    async def _call(self, method: str, **form: str) -> dict[str, Any] | None:
        try:
            response = await self.client.api_call(method, data=form)
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error") if exc.response else "unknown_error"
            log.info("Slack %s is not available (%s): the configured groups apply", method, error)
            return None
        except (SlackClientError, OSError, TimeoutError) as exc:
            log.warning("could not reach Slack for %s: %s", method, exc)
            return None
        return dict(response.data) if isinstance(response.data, dict) else None
