"""The base of every settings group."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict


def prefixed(prefix: str) -> Callable[[str], str]:
    return lambda name: f"{prefix}{name}"


class Group(BaseModel):
    """A settings group: immutable once built, constructible by field name or by variable name."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")
