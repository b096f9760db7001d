"""One Conversation for every chat surface of `kb serve`: web chat, Slack and Teams share it.

    conversation = build_conversation(settings, kb)              # everything from Settings
    mount_slack(app, settings, conversation, metrics=metrics)    # each adds its own Directory
    mount_teams(app, settings, conversation, metrics=metrics)

Admins are KB_BOT_ADMINS; users' groups are KB_BOT_USER_GROUPS, plus KB_WEB_USER_GROUPS for the
local web chat's user (`web:web`), plus whatever a platform's Directory adds (Slack user groups).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from bot.admin import admin_hooks
from bot.answers import KnowledgeBaseAnswers
from bot.conversation import AdminHooks, AnswerService, Conversation
from bot.store import BotStore
from bot.tasks import AckFirst
from core.settings import Settings
from knowledge.service import KnowledgeBase

# The web chat's one user; the same id as push's web inbox (bot/web/push_sender.py), so that its
# subscriptions and digest reach that inbox.
WEB_PLATFORM, WEB_USER = "web", "web"


def build_conversation(
    settings: Settings,
    kb: KnowledgeBase,
    *,
    answers: AnswerService | None = None,
    hooks: AdminHooks | None = None,
    admins: Sequence[str] | None = None,
    user_groups: Mapping[str, Sequence[str]] | None = None,
    store: BotStore | None = None,
    ack_first: AckFirst | None = None,
) -> Conversation:
    """The conversation core wired from Settings; each keyword replaces one piece (tests, benchmarks).

    `ack_first` is the gate through which retrievals give way to acks (bot/tasks.py); a given
    `answers` should use the same one.
    """
    groups = dict(settings.bot.user_groups if user_groups is None else user_groups)
    groups.setdefault(f"{WEB_PLATFORM}:{WEB_USER}", list(settings.server.web_user_groups))
    gate = ack_first or AckFirst(max_wait_s=settings.bot.ack_first_wait_s)
    return Conversation(
        # As many retrievals in flight as there are cores: more would only queue and hold the GIL.
        answers or KnowledgeBaseAnswers(kb, concurrency=max(2, os.cpu_count() or 2), ack_first=gate),
        store or BotStore(kb.store.engine),
        kb.audit,
        admins=set(settings.bot.admins if admins is None else admins),
        user_groups=groups,
        hooks=hooks or admin_hooks(kb, ingest_roots=settings.bot.admin_ingest_roots),
        link_base=settings.bot.docs_base_url,
        ack_first=gate,
    )
