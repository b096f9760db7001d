"""Redaction of personal data and secrets, with a policy per destination of the text.

A :class:`Redactor` finds values (see :mod:`privacy.detectors`) and replaces them with typed
placeholders, or with numbered pseudonyms that stay consistent within one document:

>>> Redactor().redact("Mail ann@example.com, cc ann@example.com").text
'Mail [EMAIL], cc [EMAIL]'
>>> Redactor(pseudonyms=True).redact("ann@example.com, bo@example.com, ann@example.com").text
'[EMAIL_1], [EMAIL_2], [EMAIL_1]'

Where text goes decides what is removed: :func:`policy_for` gives the policy for training data,
logs, the search index and prompts sent to an outside model. :class:`RedactingFilter` keeps
secrets and personal data out of log files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from privacy.detectors import ALL_KINDS, Kind, Span, candidates
from privacy.errors import RedactionConfigError

__all__ = [
    "ALL_KINDS",
    "DEFAULT_INDEX_KINDS",
    "PRIORITY",
    "Destination",
    "Finding",
    "Kind",
    "Redacted",
    "RedactingFilter",
    "RedactionPolicy",
    "Redactor",
    "policy_for",
    "resolve",
]

# When two candidates overlap and neither contains the other, the lower number wins. A PRC ID
# outranks a card because its checks (region, birth date, MOD 11-2) are far stricter than Luhn.
PRIORITY: dict[Kind, int] = {
    Kind.SECRET: 0,
    Kind.CN_ID: 1,
    Kind.CARD: 2,
    Kind.IBAN: 3,
    Kind.SSN: 4,
    Kind.EMAIL: 5,
    Kind.IP: 6,
    Kind.PHONE: 7,
}

# Contact details and server addresses are what a company handbook is for, so the index keeps
# them; identity numbers, bank details and secrets never belong in search results.
DEFAULT_INDEX_KINDS: frozenset[str] = frozenset({"SECRET", "CARD", "IBAN", "SSN", "CN_ID"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: its kind, where it is, and a keyed digest in place of the value itself.

    The digest lets callers count or deduplicate values without keeping them; it is keyed because a
    plain hash of a phone number is reversed by trying every number.
    """

    kind: str
    start: int
    end: int
    digest: str


@dataclass(frozen=True, slots=True)
class Redacted:
    """The redacted text, what was replaced (offsets into the original), and a count per kind."""

    text: str
    findings: tuple[Finding, ...]
    counts: dict[str, int]


def resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans in text order: drop those inside a bigger one, then settle the rest.

    A bigger match explains the smaller one inside it: digits of an IBAN that happen to pass Luhn,
    or the mobile number that is the local part of ``13812345678@139.com``. Partial overlaps go
    to the higher priority, then to the longer span.
    """
    outer: list[Span] = []
    reach = -1
    for span in sorted(spans, key=lambda s: (s.start, -s.end, PRIORITY[s.kind])):
        if span.end > reach:  # not inside (nor equal to and outranked by) an earlier span
            outer.append(span)
            reach = span.end
    kept: list[Span] = []
    for span in outer:
        if kept and span.start < kept[-1].end:
            if _rank(span) < _rank(kept[-1]):
                kept[-1] = span
            continue
        kept.append(span)
    return kept


def _rank(span: Span) -> tuple[int, int]:
    return PRIORITY[span.kind], span.start - span.end


def _check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(str(kind).upper() for kind in kinds)
    unknown = chosen - ALL_KINDS
    if unknown:
        raise RedactionConfigError(
            f"unknown kind of personal data: {', '.join(sorted(unknown))}",
            hint=f"use some of {', '.join(sorted(ALL_KINDS))}",
        )
    return chosen


_SEPARATORS = re.compile(r"[^0-9A-Z]")


def _normalise(kind: str, value: str) -> str:
    """The form under which two spellings of one value count as the same value."""
    if kind == Kind.EMAIL:
        return value.casefold()
    if kind == Kind.IP:
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value
    if kind == Kind.SECRET:
        return value
    return _SEPARATORS.sub("", value.upper())


class Redactor:
    """Finds and replaces sensitive values of the chosen kinds (all kinds by default).

    Every detector always runs, and overlaps are settled before `kinds` is applied, so an
    e-mail address that contains a phone number stays one e-mail address even when only phones
    are redacted. `key` keys the findings' digests; pass the same key to compare digests across
    processes (by default each Redactor draws its own).
    """

    def __init__(
        self, *, kinds: Iterable[str] | None = None, pseudonyms: bool = False, key: bytes | None = None
    ) -> None:
        self.kinds = ALL_KINDS if kinds is None else _check_kinds(kinds)
        self.pseudonyms = pseudonyms
        self._key = key if key is not None else secrets.token_bytes(32)

    def spans(self, text: str) -> list[Span]:
        """The detector spans of the chosen kinds, in text order."""
        return [span for span in resolve(candidates(text)) if span.kind in self.kinds]

    def find(self, text: str) -> list[Finding]:
        """Where the sensitive values in `text` are, without copying them."""
        return [self._finding(text, span) for span in self.spans(text)]

    def redact(self, text: str) -> Redacted:
        """`text` with each value replaced by ``[KIND]`` (or ``[KIND_n]`` with pseudonyms)."""
        spans = self.spans(text)
        if not spans:
            return Redacted(text=text, findings=(), counts={})
        parts: list[str] = []
        numbers: dict[tuple[str, str], int] = {}
        per_kind: Counter[str] = Counter()
        position = 0
        for span in spans:
            parts.append(text[position : span.start])
            if self.pseudonyms:
                identity = (span.kind, _normalise(span.kind, text[span.start : span.end]))
                if identity not in numbers:
                    per_kind[span.kind] += 1
                    numbers[identity] = per_kind[span.kind]
                parts.append(f"[{span.kind}_{numbers[identity]}]")
            else:
                parts.append(f"[{span.kind}]")
            position = span.end
        parts.append(text[position:])
        counts = Counter(str(span.kind) for span in spans)
        return Redacted(
            text="".join(parts),
            findings=tuple(self._finding(text, span) for span in spans),
            counts=dict(sorted(counts.items())),
        )

    def _finding(self, text: str, span: Span) -> Finding:
        value = _normalise(span.kind, text[span.start : span.end])
        digest = hashlib.blake2b(value.encode(), key=self._key, digest_size=8).hexdigest()
        return Finding(kind=str(span.kind), start=span.start, end=span.end, digest=digest)


class Destination(StrEnum):
    """Where a text is going; each destination has its own redaction policy."""

    TRAINING = "training"
    LOGS = "logs"
    INDEX = "index"
    EXTERNAL_PROMPT = "external_prompt"


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """What to remove from text bound for one destination, and whether to number the values."""

    destination: Destination
    kinds: frozenset[str]
    pseudonyms: bool

    def redactor(self, *, key: bytes | None = None) -> Redactor:
        return Redactor(kinds=self.kinds, pseudonyms=self.pseudonyms, key=key)


def policy_for(
    destination: Destination | str,
    *,
    index_kinds: Iterable[str] = DEFAULT_INDEX_KINDS,
    prompt_kinds: Iterable[str] = ALL_KINDS,
) -> RedactionPolicy:
    """The redaction policy for text bound for `destination`.

    Training data and logs lose every kind. The index and prompts for an outside model lose the
    configured kinds, and always secrets: no setting lets a credential through. Training and
    prompts get numbered pseudonyms, so "[EMAIL_1] wrote to [EMAIL_2]" keeps who-is-who.

    >>> sorted(policy_for("index", index_kinds={"email"}).kinds)
    ['EMAIL', 'SECRET']
    """
    try:
        where = Destination(destination)
    except ValueError as exc:
        raise RedactionConfigError(
            f"unknown redaction destination {destination!r}",
            hint=f"use one of {', '.join(d.value for d in Destination)}",
        ) from exc
    if where is Destination.TRAINING:
        return RedactionPolicy(where, ALL_KINDS, pseudonyms=True)
    if where is Destination.LOGS:
        return RedactionPolicy(where, ALL_KINDS, pseudonyms=False)
    if where is Destination.INDEX:
        return RedactionPolicy(where, _check_kinds(index_kinds) | {Kind.SECRET.value}, pseudonyms=False)
    return RedactionPolicy(where, _check_kinds(prompt_kinds) | {Kind.SECRET.value}, pseudonyms=True)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message, arguments and traceback text.

    Attach it to handlers (``handler.addFilter(RedactingFilter())``): a filter on a logger does
    not see records that propagate from its children. The record is changed in place, so every
    handler after this one sees the redacted text too.
    """

    def __init__(self, redactor: Redactor | None = None, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor if redactor is not None else policy_for(Destination.LOGS).redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a filter that raised would break the caller's own log call
            # Usually arguments that do not fit the format; keep the format, never the arguments.
            message = f"{record.msg} (log arguments dropped: they did not match the format)"
        record.msg = self.redactor.redact(message).text
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text).text
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info).text
        return True
