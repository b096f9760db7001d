"""Time expressions in questions become updated_at filters.

"regulatory news of the last three days" -> updated_after = now - 3 days, and the phrase is
removed from the text that is searched (it names when, not what). English and Chinese:

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # a Thursday
>>> text, f = extract_time_filter("compliance news in the last 3 days", now=now)
>>> text, f.updated_after.isoformat()
('compliance news', '2026-11-23T15:00:00+00:00')
>>> extract_time_filter("最近三天的合规新闻", now=now)[1].updated_after.day
23
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from knowledge.catalog import Filters

_EN_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a": 1, "an": 1, "couple of": 2, "few": 3,
}  # fmt: skip
_ZH_DIGITS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_WEEKDAYS_EN = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_WEEKDAYS_ZH = "一二三四五六日"
_UNIT_DAYS = {"hour": 1 / 24, "day": 1, "week": 7, "month": 30, "year": 365}
_ZH_UNIT_DAYS = {"小时": 1 / 24, "天": 1, "日": 1, "周": 7, "星期": 7, "个月": 30, "月": 30, "年": 365}

_EN_NUMBER = r"(\d+|" + "|".join(sorted(_EN_NUMBERS, key=len, reverse=True)) + ")"
_ZH_NUMBER = r"(\d+|[零一二两三四五六七八九十]+)"

Rule = tuple[re.Pattern[str], Callable[[re.Match[str], datetime], tuple[datetime | None, datetime | None]]]


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _en_number(text: str) -> int:
    return int(text) if text.isdigit() else _EN_NUMBERS[text.lower()]


def _zh_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_ZH_DIGITS.get(tens, 1) if tens else 1) * 10 + (_ZH_DIGITS.get(ones, 0) if ones else 0)
    return _ZH_DIGITS.get(text, 1)


def _last_weekday(now: datetime, weekday: int) -> datetime:
    return _midnight(now) - timedelta(days=(now.weekday() - weekday) % 7)


def _span(days: float) -> Callable[[re.Match[str], datetime], tuple[datetime | None, datetime | None]]:
    return lambda _m, now: (now - timedelta(days=days), None)


_RULES: list[Rule] = [
    (
        re.compile(
            rf"\b(?:in|over|during|within)?\s*(?:the\s+)?(?:last|past|previous)\s+{_EN_NUMBER}\s+"
            r"(hour|day|week|month|year)s?\b",
            re.I,
        ),
        lambda m, now: (now - timedelta(days=_en_number(m[1]) * _UNIT_DAYS[m[2].lower()]), None),
    ),
    (
        re.compile(r"\b(?:in|over|during)?\s*(?:the\s+)?(?:last|past)\s+(day|week|month|year)\b", re.I),
        lambda m, now: (now - timedelta(days=_UNIT_DAYS[m[1].lower()]), None),
    ),
    (re.compile(r"\bthis\s+week\b", re.I), lambda _m, now: (_last_weekday(now, 0), None)),
    (re.compile(r"\bthis\s+month\b", re.I), lambda _m, now: (_midnight(now).replace(day=1), None)),
    (re.compile(r"\bthis\s+year\b", re.I), lambda _m, now: (_midnight(now).replace(month=1, day=1), None)),
    (
        re.compile(r"\byesterday\b", re.I),
        lambda _m, now: (_midnight(now) - timedelta(days=1), _midnight(now)),
    ),
    (re.compile(r"\btoday\b", re.I), lambda _m, now: (_midnight(now), None)),
    (
        re.compile(r"\bsince\s+(" + "|".join(_WEEKDAYS_EN) + r")\b", re.I),
        lambda m, now: (_last_weekday(now, _WEEKDAYS_EN.index(m[1].lower())), None),
    ),
    (
        re.compile(r"\bsince\s+(\d{4}-\d{2}-\d{2})\b", re.I),
        lambda m, now: (datetime.fromisoformat(m[1]).replace(tzinfo=now.tzinfo), None),
    ),
    (
        re.compile(
            rf"(?:最近|过去|近|前)\s*{_ZH_NUMBER}\s*(小时|天|日|周|星期|个月|月|年)(?:内|以来|里)?(?:的)?"
        ),
        lambda m, now: (now - timedelta(days=_zh_number(m[1]) * _ZH_UNIT_DAYS[m[2]]), None),
    ),
    (re.compile(r"(?:本周|这周|这个星期|本星期)(?:的)?"), lambda _m, now: (_last_weekday(now, 0), None)),
    (re.compile(r"(?:本月|这个月)(?:的)?"), lambda _m, now: (_midnight(now).replace(day=1), None)),
    (
        re.compile(r"(?:上周|上个星期)(?:的)?"),
        lambda _m, now: (_last_weekday(now, 0) - timedelta(days=7), _last_weekday(now, 0)),
    ),
    (re.compile(r"昨天(?:的)?"), lambda _m, now: (_midnight(now) - timedelta(days=1), _midnight(now))),
    (re.compile(r"今天(?:的)?"), lambda _m, now: (_midnight(now), None)),
    (
        re.compile(r"(?:自|从)?(?:周|星期)([一二三四五六日])(?:以来|开始)(?:的)?"),
        lambda m, now: (_last_weekday(now, _WEEKDAYS_ZH.index(m[1])), None),
    ),
]


def extract_time_filter(text: str, *, now: datetime) -> tuple[str, Filters | None]:
    """The question without its time phrase, and the updated_at filter it implies (or None)."""
    for pattern, to_range in _RULES:
        match = pattern.search(text)
        if match is None:
            continue
        after, before = to_range(match, now)
        remaining = (text[: match.start()] + " " + text[match.end() :]).strip()
        remaining = re.sub(r"\s{2,}", " ", remaining).strip(" ,;:?？。")
        return remaining, Filters(updated_after=after, updated_before=before)
    return text, None


def merge(base: Filters | None, extra: Filters) -> Filters:
    """`extra`'s time limits over `base`'s other filters."""
    if base is None:
        return extra
    return replace(
        base,
        updated_after=extra.updated_after or base.updated_after,
        updated_before=extra.updated_before or base.updated_before,
    )
