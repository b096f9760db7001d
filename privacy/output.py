"""The output guard: the last check on an answer before anyone sees it.

It covers every field a reply shows, not only the answer's text: citation titles, sections,
snippets and links (`clean`), and the finished Block Kit or Adaptive Card (`clean_payload`), since a
heading or a document path can carry what the body's redaction removed.

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
from typing import Any

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

    def clean(self, text: str) -> str:
        """One shown field (a title, a section, a snippet, a link), secrets and the policy's kinds removed."""
        return self._redactor.redact(text).text if text else text

    def clean_link(self, uri: str, *, heading: str = "") -> str:
        """A document link with its anchor: an anchor is the heading slugged (`refunds-to-de89…`),
        where word boundaries the detectors need are hyphens, so it is dropped whenever the heading,
        or the anchor read as words, had anything to remove; the rest of the link is cleaned."""
        path, hashmark, anchor = uri.partition("#")
        path = self.clean(path)
        if not hashmark:
            return path
        words = anchor.replace("-", " ").replace("_", " ")
        unsafe = self.clean(heading) != heading or self.clean(anchor) != anchor or self.clean(words) != words
        return path if unsafe else f"{path}#{anchor}"

    def clean_payload(self, payload: Any, *, keep: frozenset[str] = frozenset()) -> Any:
        """A copy of a JSON-like message with every string cleaned, except under the keys in `keep`
        (identifiers and addresses the platform acts on: action ids, button values, link targets)."""
        if isinstance(payload, str):
            return self.clean(payload)
        if isinstance(payload, list):
            return [self.clean_payload(item, keep=keep) for item in payload]
        if isinstance(payload, dict):
            return {
                key: value if key in keep else self.clean_payload(value, keep=keep)
                for key, value in payload.items()
            }
        return payload
