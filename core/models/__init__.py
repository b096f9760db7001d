"""The database tables: the single source of truth that every package meets through.

FAISS and BM25 indexes are derived from these rows and can always be rebuilt from them.
Schema changes go through Alembic migrations in `core/migrations/versions/`.
"""

from __future__ import annotations

from core.models.base import as_utc, utcnow
from core.models.bot import (
    BehaviourEventRow,
    ConversationRefRow,
    DigestPrefRow,
    ProcessedEventRow,
    SubscriptionRow,
    WebConversationRow,
    WebTurnRow,
)
from core.models.knowledge import (
    ChunkRow,
    DocumentChangeRow,
    DocumentRow,
    DocumentSourceRow,
    IngestRunRow,
    RemovedChunkRow,
    RemovedDocumentRow,
    SourceStateRow,
)
from core.models.privacy import AuditRow, PrivacyLedgerLockRow, PrivacyLedgerRow
from core.models.push import (
    EXTERNAL_TABLES,
    InterestProfileRow,
    InterestProfileStateRow,
    PushCursorRow,
    PushDeliveryRow,
    PushInboxRow,
    PushUserStateRow,
)
from core.models.training import ModelVersionRow, TrainingRunRow

__all__ = [
    "EXTERNAL_TABLES",
    "AuditRow",
    "BehaviourEventRow",
    "ChunkRow",
    "ConversationRefRow",
    "DigestPrefRow",
    "DocumentChangeRow",
    "DocumentRow",
    "DocumentSourceRow",
    "IngestRunRow",
    "InterestProfileRow",
    "InterestProfileStateRow",
    "ModelVersionRow",
    "PrivacyLedgerLockRow",
    "PrivacyLedgerRow",
    "ProcessedEventRow",
    "PushCursorRow",
    "PushDeliveryRow",
    "PushInboxRow",
    "PushUserStateRow",
    "RemovedChunkRow",
    "RemovedDocumentRow",
    "SourceStateRow",
    "SubscriptionRow",
    "TrainingRunRow",
    "WebConversationRow",
    "WebTurnRow",
    "as_utc",
    "utcnow",
]
