"""The push package's data contract: who gets pushed to, and what is proposed to them.

`push.matching` turns recipients and the change log into `Candidate`s; `push.digest` and
`push.notices` turn candidates into messages for a `core.messaging.Sender`.

>>> alice = Recipient(platform="slack", user_id="U1", groups=frozenset({"hr"}))
>>> alice.key
'slack:U1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Recipient:
    """A person push may write to, with the access groups that decide what they may read."""

    platform: str
    user_id: str
    groups: frozenset[str] = field(default_factory=frozenset)
    timezone: str = "UTC"

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Candidate:
    """A new or changed document proposed to one recipient, with the reasons for its score.

    score = relevance x freshness x novelty (each in [0, 1]), after MMR diversification; `reason`
    is the sentence shown to the user ("because you asked about VPN access").
    """

    document_id: str
    title: str
    uri: str
    change: str  # added, updated or deleted (from document_changes.kind)
    changed_at: datetime
    score: float
    relevance: float
    freshness: float
    novelty: float
    reason: str
