"""The settings groups: one frozen value object per area, each field read from one `KB_*` variable.

A field's variable is `KB_` + its alias, upper-cased. Most groups derive the alias from a prefix
(`push.digest_hour` is `KB_PUSH_DIGEST_HOUR`); a field whose variable predates its group names its
alias explicitly (`llm.external` is `KB_LLM_EXTERNAL`, `privacy.index_kinds` is `KB_REDACT_INDEX_KINDS`).
"""

from __future__ import annotations

from core.settings.base import Group, prefixed
from core.settings.chat import BotSettings, SlackSettings, TeamsSettings
from core.settings.jobs import PushSettings, TrainingSettings
from core.settings.knowledge import EmbeddingSettings, IngestSettings, RetrievalSettings, SourcesSettings
from core.settings.service import LLMSettings, PrivacySettings, ServerSettings

__all__ = [
    "GROUPS",
    "BotSettings",
    "EmbeddingSettings",
    "Group",
    "IngestSettings",
    "LLMSettings",
    "PrivacySettings",
    "PushSettings",
    "RetrievalSettings",
    "ServerSettings",
    "SlackSettings",
    "SourcesSettings",
    "TeamsSettings",
    "TrainingSettings",
    "prefixed",
]

GROUPS: dict[str, type[Group]] = {
    "embedding": EmbeddingSettings,
    "ingest": IngestSettings,
    "retrieval": RetrievalSettings,
    "server": ServerSettings,
    "llm": LLMSettings,
    "privacy": PrivacySettings,
    "slack": SlackSettings,
    "teams": TeamsSettings,
    "bot": BotSettings,
    "sources": SourcesSettings,
    "push": PushSettings,
    "training": TrainingSettings,
}
