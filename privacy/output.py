"""The output guard: the last check on an answer before anyone sees it.

Three things are checked, whatever produced the answer (a model can repeat what it saw anywhere):
secrets are always redacted; personal data of the kinds the policy names is redacted; and every
cited source must be readable by the asker. A citation outside the asker's access means something
upstream failed, so the whole answer is withheld and replaced by an explanation, not patched.

>>> guard = OutputGuard()
>>> checked = guard.check("Use token xoxb-123456789012-abcdefghijkl [1]", citations=[(1, ())], groups=())
>>> checked.text, checked.redactions
('Use token [SECRET] [1]', {'SECRET': 1})
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from privacy.access import can_read
from privacy.redaction import Redactor

WITHHELD = (
    "This answer was withheld: it drew on a document you do not have access to. "
    "The incident has been logged; please ask the knowledge-base administrators."
)
# Contact details are what a handbook answer is for; identity and bank numbers never are.
DEFAULT_OUTPUT_KINDS = frozenset({"SECRET", "CARD", "IBAN", "SSN", "CN_ID"})


@dataclass(frozen=True, slots=True)
class Checked:
    text: str
    redactions: dict[str, int] = field(default_factory=dict)
    withheld: bool = False
    forbidden_citations: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return self.withheld or bool(self.redactions)


class OutputGuard:
    def __init__(self, *, kinds: Iterable[str] = DEFAULT_OUTPUT_KINDS) -> None:
        self._redactor = Redactor(kinds=frozenset(kinds) | {"SECRET"})

    def check(
        self, text: str, *, citations: Sequence[tuple[int, Sequence[str]]], groups: Sequence[str]
    ) -> Checked:
        """`citations` are (number, ACL groups of the cited document) pairs."""
        forbidden = tuple(number for number, acl in citations if not can_read(groups, acl))
        if forbidden:
            return Checked(WITHHELD, withheld=True, forbidden_citations=forbidden)
        redacted = self._redactor.redact(text)
        return Checked(redacted.text, redactions=dict(redacted.counts))
