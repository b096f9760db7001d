"""Detectors of personal data and secrets in free text, in English and Chinese.

Each detector is a precompiled pattern that proposes candidates cheaply plus a validator that
rejects look-alikes (checksums, valid dates, plausible ranges). :func:`candidates` runs them all;
`privacy.redaction` settles overlaps between them and replaces what is left. The secret detectors
live in `privacy.secrets`.

>>> [(s.kind.value, s.start, s.end) for s in candidates("mail bo@example.com or call +44 20 7946 0958")]
[('PHONE', 28, 44), ('EMAIL', 5, 19)]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date

from privacy.secrets import aws_secret_keys, find_all, keyword_secrets, pem_blocks, tokens, url_passwords
from privacy.spans import ALL_KINDS, Kind, Span

__all__ = [
    "ALL_KINDS", "DETECTORS", "Kind", "Span", "candidates",
    "card_network_ok", "cn_id_ok", "iban_ok", "luhn_ok", "ssn_ok",
]  # fmt: skip


# Boundaries are ASCII on purpose: `\b` and `\w` treat Chinese characters as word characters,
# and "手机13812345678" must still match. A number glued to an id ("INC-2026…", "1.2.3.4.5") must not,
# nor may a fragment of a longer run of digit groups ("4904 0517 4344 4931").
_NUM_L = r"(?<![0-9A-Za-z_+])(?<![0-9A-Za-z]-)(?<!\d\.)"
_NUM_R = r"(?![0-9A-Za-z_])(?!-[0-9A-Za-z])(?!\.\d)"
_GROUPED_L = r"(?<!\d[ \-])"
_GROUPED_R = r"(?![ \-]\d)"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

# The numbers (addresses, IDs, cards, phones) are one alternation, searched only in runs of digits
# and separators (`_RUN`): a pass of `re` over all the text costs about the same whatever the
# pattern, so one cheap pass picks the places worth the expensive one. The order decides which
# alternative claims a position first. Group names inside must be unique.
_RUN = re.compile(r"[0-9+(（][0-9 +\-.()（）/]{6,}")
_PATTERNS: dict[str, str] = {
    "ipv4": rf"(?<![0-9A-Za-z_.\-]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9A-Za-z_+]|\.\d|-[0-9A-Za-z])",
    "cn_id": (
        r"(?<![0-9A-Za-z_])[1-8]\d{5}(?:18|19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
        r"(?![0-9A-Za-z_])"
    ),
    "card": _NUM_L + _GROUPED_L + r"\d(?:[ \-]?\d){12,18}" + _NUM_R + _GROUPED_R,
    "ssn": (
        r"(?<![0-9A-Za-z_+\-])" + _GROUPED_L
        + r"\d{3}(?P<ssn_sep>[\- ])\d{2}(?P=ssn_sep)\d{4}"
        + _NUM_R + _GROUPED_R
    ),
    "ssn_compact": r"(?<![0-9A-Za-z_+\-.])\d{9}(?![0-9A-Za-z_]|[\-.]\d)",
    "nanp": (
        _NUM_L + _GROUPED_L + r"(?:1[ \-.])?(?:\([2-9]\d\d\) ?|[2-9]\d\d[\-. ])[2-9]\d\d[\-. ]\d{4}"
        + _NUM_R + _GROUPED_R
    ),
    "cn_mobile": _NUM_L + _GROUPED_L + r"(?:(?:\+|00)86[ \-]?)?1[3-9]\d[ \-]?\d{4}[ \-]?\d{4}" + _NUM_R,
    "cn_landline": (
        r"(?<![0-9A-Za-z_+])(?:\(0\d{2,3}\) ?|（0\d{2,3}） ?|" + _NUM_L + _GROUPED_L + r"0\d{2,3}[ \-]?)"
        r"[2-9]\d{2,3}[ \-]?\d{4}" + _NUM_R + _GROUPED_R
    ),
    "intl_phone": r"(?<![0-9A-Za-z_+])\+\d{1,3}(?:[ \-.]?\(\d{1,4}\)|[ \-.]?\d{1,4}){1,6}+" + _NUM_R,
    # The international prefix dialled as "00" instead of "+": 0049 30 12345678.
    "intl_00": _NUM_L + r"00[1-9]\d{0,2}(?:[ \-.]?\(\d{1,4}\)|[ \-.]?\d{1,4}){1,6}+" + _NUM_R + _GROUPED_R,
    # A national number with its area code before a slash, as Germany writes them: 030/12345678.
    "slashed": _NUM_L + r"0[1-9]\d{1,4}/ ?\d{3,}(?:[ \-]\d{2,}){0,3}" + _NUM_R + r"(?!/\d)" + _GROUPED_R,
}  # fmt: skip
_STANDALONE = {name: re.compile(f"(?P<{name}>{source})") for name, source in _PATTERNS.items()}
_COMBINED = re.compile(
    # Every alternative starts at "+", "(" or a digit not preceded by a digit: checking that once
    # up front spares trying each alternative inside every run of digits.
    "(?<![0-9])(?=[0-9+(（])(?:"
    + "|".join(f"(?P<{name}>{source})" for name, source in _PATTERNS.items())
    + ")"
)
_SEPARATED_GROUP = re.compile(r"\d+")

_IBAN = re.compile(r"[A-Z](?<![0-9A-Za-z_][A-Z])[A-Z]\d{2}(?: ?[0-9A-Z]){11,30}(?![0-9A-Za-z_])")
# Written in lower case ("de89 3704 0044 0532 0130 00"): found by the fast `_IBAN_LOWER_HINT`, then
# accepted only with at least `_LOWER_IBAN_DIGITS` digits after the check digits, so that words
# ("ps45 is a great console") cannot pass the mod-97 check by chance (1 in 97).
_IBAN_LOWER = re.compile(r"[a-z]{2}\d{2}(?: ?[0-9a-z]){11,30}(?![0-9A-Za-z_])")
_IBAN_LOWER_HINT = re.compile(r"(?<=[a-z][a-z])\d\d(?: ?[0-9a-z]){11}")  # digits are rarer than letters
_LOWER_IBAN_DIGITS = 10
_WORD = re.compile(r"[0-9A-Za-z_]")

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,63}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9_\-])"
)
_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:])
    for entry in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 EG29 ES24 "
        "FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IS26 IT27 JO30 KW30 KZ20 LB28 LI21 "
        "LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 "
        "SE24 SI19 SK24 SM27 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
}

_CN_PROVINCES = set("11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46".split())
_CN_PROVINCES |= set("50 51 52 53 54 61 62 63 64 65 71 81 82".split())
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

# A dotted quad right after one of these words is a version or a section number, not an address.
_VERSION_BEFORE = re.compile(
    r"(?i:\b(?:version|ver|release|build|firmware|patch|rev|revision|section|clause|chapter)"
    r"(?:\s+(?:number|no\.?))?(?:\s+(?:is|was))?"
    r"|(?:upgrade|downgrade|bump)(?:s|d|ed)?(?:\s+[\w\-]+){0,3}?\s+to|update[sd]?\s+to"
    r"|§|版本号?(?:是|为)?|固件|补丁|章节|条款|第|(?:升级|更新|降级)到)\s*[:：=#]?\s*$"
)
_SSN_BEFORE = re.compile(
    r"(?i:\bssn|social security(?: number| no\.?)?|社会安全号码?)\s*(?:is|[:：=#]|为|是)?\s*$"
)
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z_:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![0-9A-Za-z_]|\.\d)"
)
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")

_USERINFO_BEFORE = re.compile(r"://[^\s/?#@:]*:$")


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number carries in its last digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def card_network_ok(digits: str) -> bool:
    """Whether the number starts like a real card network's numbers and has one of its lengths."""
    n = len(digits)
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if 2200 <= p4 <= 2204 or p2 == 62 or 3528 <= p4 <= 3589:  # Mir, UnionPay, JCB
        return 16 <= n <= 19
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:  # Discover
        return 16 <= n <= 19
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:  # Diners
        return 14 <= n <= 19
    return (p2 in (50, 56, 57, 58) or digits[0] == "6") and 12 <= n <= 19  # Maestro


def iban_ok(compact: str) -> bool:
    """ISO 13616: the registered length for the country and the ISO 7064 mod-97 check."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return f"{area}-{group}-{serial}" != "078-05-1120"  # the voided "wallet card" number


def cn_id_ok(value: str) -> bool:
    """GB 11643: a known province, a real birth date not in the future, and the MOD 11-2 check."""
    if value[:2] not in _CN_PROVINCES:
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born > date.today() or born.year < 1880:
        return False
    check = (12 - sum(int(c) * w for c, w in zip(value[:17], _CN_ID_WEIGHTS, strict=True)) % 11) % 11
    return value[17].upper() == ("X" if check == 10 else str(check))


def _span(kind: Kind, match: re.Match[str], name: str) -> Span:
    return Span(kind, match.start(name), match.end(name))


def _check_ipv4(text: str, m: re.Match[str]) -> Span | None:
    start = m.start("ipv4")
    if _VERSION_BEFORE.search(text, max(0, start - 48), start):
        return None
    return _span(Kind.IP, m, "ipv4")


def _check_cn_id(text: str, m: re.Match[str]) -> Span | None:
    return _span(Kind.CN_ID, m, "cn_id") if cn_id_ok(m.group("cn_id")) else None


def _check_card(text: str, m: re.Match[str]) -> Span | None:
    # "4111 1111 1111 1111 12/27": try the whole run, then without its trailing groups.
    groups = list(_SEPARATED_GROUP.finditer(m.group("card")))
    for last in range(len(groups), 0, -1):
        digits = "".join(g.group() for g in groups[:last])
        if 13 <= len(digits) <= 19 and card_network_ok(digits) and luhn_ok(digits):
            return Span(Kind.CARD, m.start("card"), m.start("card") + groups[last - 1].end())
    return None


def _check_ssn(text: str, m: re.Match[str]) -> Span | None:
    name = m.lastgroup or ""
    digits, start = m.group(name).replace("-", "").replace(" ", ""), m.start(name)
    # Nine bare digits are an SSN only where the text says so ("SSN 123456789").
    if name == "ssn_compact" and not _SSN_BEFORE.search(text, max(0, start - 24), start):
        return None
    return _span(Kind.SSN, m, name) if ssn_ok(digits[:3], digits[3:5], digits[5:]) else None


# How many digits a number of each of these forms has: E.164 allows at most 15 after the prefix ("00"
# counts two more), and a slashed number is shorter than 9 digits only as a date (06/2025).
_DIGITS = {"intl_phone": (8, 15), "intl_00": (10, 17), "slashed": (9, 12)}


def _check_phone(text: str, m: re.Match[str]) -> Span | None:
    name = m.lastgroup or ""
    digits = "".join(c for c in m.group(name) if c.isdigit())
    if name == "cn_landline":
        # Beijing, Tianjin and the 02x cities have 3-digit area codes, every other city 4.
        local = digits[3:] if digits[1] in "12" else digits[4:]
        if not (7 <= len(local) <= 8 and local[0] not in "01"):
            return None
    elif name in _DIGITS and not _DIGITS[name][0] <= len(digits) <= _DIGITS[name][1]:
        return None
    return _span(Kind.PHONE, m, name)


_CHECKS: dict[str, Callable[[str, re.Match[str]], Span | None]] = {
    "ipv4": _check_ipv4, "cn_id": _check_cn_id, "card": _check_card, "ssn": _check_ssn,
    "ssn_compact": _check_ssn, "nanp": _check_phone, "cn_mobile": _check_phone, "cn_landline": _check_phone,
    "intl_phone": _check_phone, "intl_00": _check_phone, "slashed": _check_phone,
}  # fmt: skip
_ORDER = list(_PATTERNS)


def _windows(around: Iterable[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """Merge (start, end) ranges, in order, into disjoint windows clipped to the text."""
    start = end = -1
    for low, high in around:
        low, high = max(0, low), min(size, high)
        if low <= end:
            end = max(end, high)
            continue
        if end >= 0:
            yield start, end
        start, end = low, high
    if end >= 0:
        yield start, end


def _numbers(text: str) -> Iterator[Span]:
    """Addresses, IDs, cards and phones: the alternation, run only around runs of digits."""
    # Three characters past each run let the patterns' look-aheads see what follows it.
    for start, end in _windows(((run.start(), run.end() + 3) for run in _RUN.finditer(text)), len(text)):
        for m in _COMBINED.finditer(text, start, end):
            name = m.lastgroup or ""
            span = _CHECKS[name](text, m)
            # The alternative that matched first failed its check; a later one may fit here.
            for other in _ORDER[_ORDER.index(name) + 1 :] if span is None else ():
                again = _STANDALONE[other].match(text, m.start(), end)
                if again and (span := _CHECKS[other](text, again)):
                    break
            if span is not None:
                yield span


def _ibans(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        span = _iban_span(m)
        if span is not None:
            yield span
    for hint in _IBAN_LOWER_HINT.finditer(text):
        start = hint.start() - 2
        if start and _WORD.match(text, start - 1):
            continue
        lower = _IBAN_LOWER.match(text, start)
        span = _iban_span(lower, upper=True) if lower else None
        compact = text[span.start : span.end].replace(" ", "") if span else ""
        if span is not None and sum(c.isdigit() for c in compact[4:]) >= _LOWER_IBAN_DIGITS:
            yield span


def _iban_span(m: re.Match[str], *, upper: bool = False) -> Span | None:
    value = m.group().upper() if upper else m.group()
    length = _IBAN_LENGTHS.get(value[:2])
    if length is None:
        return None
    # The pattern runs on into following capitals ("… 00 EUR"); cut at the country's length.
    seen = 0
    for offset, char in enumerate(value):
        seen += char != " "
        if seen == length:
            if iban_ok(value[: offset + 1].replace(" ", "")):
                return Span(Kind.IBAN, m.start(), m.start() + offset + 1)
            break
    return None


def _emails(text: str) -> Iterator[Span]:
    # Only the neighbourhood of each "@" is searched: the pattern's first character is too common.
    ats = ((at - 65, at + 256) for at in find_all(text, "@"))
    for start, end in _windows(ats, len(text)):
        for m in _EMAIL.finditer(text, start, end):
            # In scheme://user:password@host the "address" is a password and a host name.
            if not _USERINFO_BEFORE.search(text, max(0, m.start() - 128), m.start()):
                yield Span(Kind.EMAIL, m.start(), m.end())


def _ipv6s(text: str) -> Iterator[Span]:
    hints = ((hint.start() - 46, hint.end() + 46) for hint in _IPV6_HINT.finditer(text))
    for start, end in _windows(hints, len(text)):
        for m in _IPV6.finditer(text, start, end):
            candidate = m.group()
            if candidate.endswith(":") and not candidate.endswith("::"):
                candidate = candidate[:-1]  # "… at 2001:db8::1: unreachable"
            if _ipv6_ok(candidate):
                yield Span(Kind.IP, m.start(), m.start() + len(candidate))


def _ipv6_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    if "::" not in candidate or candidate == "::1":
        return True
    # "a::b" (Ruby constants) and "10:30::" parse as addresses too; real compressed addresses
    # have a 3-4 digit group ("fe80::1", "2001:db8::") or at least three groups.
    groups = [g for g in re.split(r"[:.]", candidate) if g]
    return len(groups) >= 3 or any(len(g) >= 3 for g in groups)


DETECTORS: tuple[Callable[[str], Iterator[Span]], ...] = (
    _numbers, tokens, _ibans, keyword_secrets, pem_blocks, url_passwords, aws_secret_keys, _emails, _ipv6s
)  # fmt: skip


def candidates(text: str) -> list[Span]:
    """Every validated value in `text`; they may overlap (see `privacy.redaction.resolve`)."""
    return [span for detector in DETECTORS for span in detector(text)]
