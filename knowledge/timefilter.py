"""Time expressions in questions become updated_at windows.

"regulatory news of the last three days" -> updated_after = now - 3 days, and the phrase is
removed from the text that is searched (it names when, not what). English and Chinese:

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # a Thursday
>>> text, f = extract_time_filter("compliance news in the last 3 days", now=now)
>>> text, f.updated_after.isoformat()
('compliance news', '2026-11-23T15:00:00+00:00')
>>> extract_time_filter("最近三天的合规新闻", now=now)[1].updated_after.day
23
>>> parse_time_scope("since October", now=now).after.isoformat()
'2026-10-01T00:00:00+00:00'

A few frames say *how* a phrase bounds the window ("since X", "the last N days", "this week",
"X以来", "上周"); the date inside a "since" frame is read by `dateparser`, a maintained multilingual
parser, so "since 3 Oct", "since last Friday" and "自2026年10月1日以来" need no pattern of their own.
Every window is bounded: no window reaches back more than `MAX_LOOKBACK_DAYS` ("the last 1000000
days" becomes the last ten years, and says so through `TimeScope.clamped`), and no number, however
long, reaches date arithmetic unbounded. `dateparser` is imported on the first "since" phrase, not
with this module, so commands that never ask stay quick to start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from knowledge.catalog import Filters

MAX_LOOKBACK_DAYS = 3660  # ten years: older than that is not "news", and the arithmetic stays bounded
_MAX_DIGITS = 7  # a longer number is past the bound whatever its unit

_EN_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a": 1, "an": 1, "couple of": 2, "few": 3,
    "several": 3,
}  # fmt: skip
_ZH_DIGITS = dict(zip("零一二两三四五六七八九", (0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True))
_ZH_POWERS = {"十": 10, "百": 100, "千": 1000, "万": 10_000}
_UNIT_DAYS = {"hour": 1 / 24, "day": 1, "week": 7, "month": 30, "year": 365}
_ZH_UNIT_DAYS = {"小时": 1 / 24, "天": 1, "日": 1, "周": 7, "星期": 7, "个月": 30, "月": 30, "年": 365}

_EN_NUMBER = r"(?P<n>\d+|" + "|".join(sorted(_EN_NUMBERS, key=len, reverse=True)) + ")"
_ZH_NUMBER = r"(?P<n>\d+|[零一二两三四五六七八九十百千万]+)"
_EN_UNIT = r"(?P<unit>hour|day|week|month|year)s?\b"

Window = tuple[datetime | None, datetime | None, bool]  # after, before, clamped


@dataclass(frozen=True, slots=True)
class TimeScope:
    """The window a question's time phrase names, the phrase, and the question without it."""

    after: datetime | None
    before: datetime | None
    phrase: str
    rest: str
    clamped: bool = False  # a number reached past MAX_LOOKBACK_DAYS and was cut to it

    @property
    def filters(self) -> Filters:
        return Filters(updated_after=self.after, updated_before=self.before)


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _week_start(now: datetime) -> datetime:
    return _midnight(now) - timedelta(days=now.weekday())


def _month_start(now: datetime) -> datetime:
    return _midnight(now).replace(day=1)


def _number(text: str | None) -> int | None:
    """A count in digits, English words or Chinese numerals; None when it is past any bound."""
    if not text:
        return 1
    if text.isdigit():
        return int(text) if len(text) <= _MAX_DIGITS else None
    if text.lower() in _EN_NUMBERS:
        return _EN_NUMBERS[text.lower()]
    total, digit = 0, None
    for char in text:
        if char in _ZH_POWERS:
            total += (1 if digit is None else digit) * _ZH_POWERS[char]
            digit = None
        else:
            digit = _ZH_DIGITS.get(char, 0)
    return total + (digit or 0)


def _back(now: datetime, count: int | None, unit_days: float) -> Window:
    days = MAX_LOOKBACK_DAYS + 1 if count is None else count * unit_days
    if days > MAX_LOOKBACK_DAYS:
        return now - timedelta(days=MAX_LOOKBACK_DAYS), None, True
    return now - timedelta(days=days), None, False


def _parse_date(expression: str, now: datetime, languages: list[str] | None) -> datetime | None:
    """`expression` read by dateparser, relative to `now` and in its time zone, or None."""
    import dateparser  # type: ignore[import-untyped]  # here: 0.2 s of imports, only after "since"

    settings: Any = {
        "RELATIVE_BASE": now.replace(tzinfo=None),
        "PREFER_DATES_FROM": "past",
        "PREFER_DAY_OF_MONTH": "first",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        parsed = dateparser.parse(expression, languages=languages, settings=settings)
    except (OverflowError, ValueError, OSError):  # a year 99999, a day 10^12 ago
        return None
    return None if parsed is None else parsed.replace(tzinfo=now.tzinfo)


def _since(parsed: datetime | None, now: datetime) -> Window | None:
    if parsed is None or parsed > now:
        return None  # a date still to come bounds nothing that has changed
    floor = now - timedelta(days=MAX_LOOKBACK_DAYS)
    return (floor, None, True) if parsed < floor else (parsed, None, False)


def _since_en(m: re.Match[str], now: datetime) -> tuple[Window, int] | None:
    """The longest run of words after "since" that dateparser reads as a date, and where it ends."""
    words = list(re.finditer(r"\S+", m["expr"]))
    for count in range(min(len(words), 6), 0, -1):
        window = _since(_parse_date(m["expr"][: words[count - 1].end()], now, ["en"]), now)
        if window is not None:
            return window, m.start("expr") + words[count - 1].end()
    return None


def _since_zh(m: re.Match[str], now: datetime) -> tuple[Window, int] | None:
    """ "10月以来", "自2026年10月1日以来": the shortest tail before 以来 that dateparser reads."""
    expression = m["expr"]
    for start in range(max(0, len(expression) - 12), len(expression)):
        # dateparser reads "10月1" and "2026年10月1日" but not "10月1日".
        tail = re.sub(r"(?<=月\d)(?:日|号)$|(?<=月\d\d)(?:日|号)$", "", expression[start:])
        window = _since(_parse_date(tail, now, ["zh"]), now)
        if window is not None:
            return window, m.start("expr") + start
    return None


Simple = Callable[[re.Match[str], datetime], Window]
_CALENDAR: dict[str, Callable[[datetime], tuple[datetime, datetime | None]]] = {
    "today": lambda now: (_midnight(now), None),
    "yesterday": lambda now: (_midnight(now) - timedelta(days=1), _midnight(now)),
    "this week": lambda now: (_week_start(now), None),
    "this month": lambda now: (_month_start(now), None),
    "this year": lambda now: (_month_start(now).replace(month=1), None),
    "last week": lambda now: (_week_start(now) - timedelta(days=7), _week_start(now)),
    "last month": lambda now: ((_month_start(now) - timedelta(days=1)).replace(day=1), _month_start(now)),
}
_ZH_CALENDAR = {
    "今天": "today", "昨天": "yesterday", "本周": "this week", "这周": "this week", "这个星期": "this week",
    "本星期": "this week", "本月": "this month", "这个月": "this month", "今年": "this year",
    "上周": "last week", "上个星期": "last week", "上个月": "last month", "上月": "last month",
}  # fmt: skip


def _calendar(m: re.Match[str], now: datetime) -> Window:
    name = m["cal"].lower()
    after, before = _CALENDAR[_ZH_CALENDAR.get(name, re.sub(r"\s+", " ", name))](now)
    return after, before, False


_SIMPLE: list[tuple[re.Pattern[str], Simple]] = [
    (
        re.compile(
            rf"\b(?:(?:in|over|during|within|of|for|from)\s+)?(?:the\s+)?(?:last|past|previous)\s+"
            rf"(?:{_EN_NUMBER}\s+)?{_EN_UNIT}",
            re.I,
        ),
        lambda m, now: _back(now, _number(m["n"]), _UNIT_DAYS[m["unit"].lower()]),
    ),
    (
        re.compile(rf"\b(?:(?:since|from)\s+)?{_EN_NUMBER}\s+{_EN_UNIT}\s+ago\b", re.I),
        lambda m, now: _back(now, _number(m["n"]), _UNIT_DAYS[m["unit"].lower()]),
    ),
    (
        re.compile(
            r"\b(?:(?:in|during|from|of)\s+)?(?P<cal>this\s+(?:week|month|year)|today|yesterday)\b", re.I
        ),
        _calendar,
    ),
    (
        re.compile(rf"(?:最近|过去|近|前)\s*{_ZH_NUMBER}?\s*(?P<unit>小时|天|日|周|星期|个月|月|年)(?:内|以来|里)?(?:的)?"),
        lambda m, now: _back(now, _number(m["n"]), _ZH_UNIT_DAYS[m["unit"]]),
    ),
    (re.compile(r"(?P<cal>" + "|".join(sorted(_ZH_CALENDAR, key=len, reverse=True)) + ")(?:的)?"), _calendar),
]  # fmt: skip
_SINCE_EN = re.compile(
    r"\b(?:(?:updated|changed|published|added|modified|new)\s+)?since\s+(?P<expr>[^?!,;。？！，]{1,80})", re.I
)
_SINCE_ZH = re.compile(r"(?P<expr>[^，。？！,?!\s]{1,20}?)\s*(?:以来|之后)(?:的)?")


def parse_time_scope(text: str, *, now: datetime) -> TimeScope | None:
    """The window `text`'s time phrase names (the first frame that fits), or None without one."""
    for pattern, to_window in _SIMPLE:
        m = pattern.search(text)
        if m is not None:
            return _scope(text, m.start(), m.end(), to_window(m, now))
    if "since" in text.lower() and (m := _SINCE_EN.search(text)) and (found := _since_en(m, now)):
        return _scope(text, m.start(), found[1], found[0])
    if ("以来" in text or "之后" in text) and (m := _SINCE_ZH.search(text)) and (found := _since_zh(m, now)):
        start = found[1]
        start -= (
            2 if text[max(0, start - 2) : start] == "自从" else 1 if text[start - 1 : start] in "自从" else 0
        )
        return _scope(text, max(0, start), m.end(), found[0])
    return None


def _scope(text: str, start: int, end: int, window: Window) -> TimeScope:
    before, after_ = text[:start].rstrip(), text[end:].lstrip()
    glue = "" if before[-1:] > "\u2e7f" and after_[:1] > "\u2e7f" else " "  # no space between CJK words
    rest = (before + glue + after_).strip()
    rest = re.sub(r"\s{2,}", " ", rest).strip(" ,;:?？。，！!")
    start_at, end_at, clamped = window
    return TimeScope(start_at, end_at, phrase=text[start:end].strip(), rest=rest, clamped=clamped)


def extract_time_filter(text: str, *, now: datetime) -> tuple[str, Filters | None]:
    """The question without its time phrase, and the updated_at filter it implies (or None)."""
    scope = parse_time_scope(text, now=now)
    return (text, None) if scope is None else (scope.rest, scope.filters)


def merge(base: Filters | None, extra: Filters) -> Filters:
    """`extra`'s time limits over `base`'s other filters."""
    if base is None:
        return extra
    return replace(
        base,
        updated_after=extra.updated_after or base.updated_after,
        updated_before=extra.updated_before or base.updated_before,
    )
