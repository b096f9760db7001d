"""What the detectors find: a kind of sensitive value and where it lies in the text."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """A kind of sensitive value; the value doubles as the placeholder's name, e.g. ``[EMAIL]``."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    SSN = "SSN"
    CN_ID = "CN_ID"
    IP = "IP"
    SECRET = "SECRET"


ALL_KINDS: frozenset[str] = frozenset(kind.value for kind in Kind)


@dataclass(frozen=True, slots=True)
class Span:
    """A detected value: its kind and where it lies in the text (``text[start:end]``)."""

    kind: Kind
    start: int
    end: int
