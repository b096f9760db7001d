"""Detectors of secrets: service tokens by their prefixes, values next to a key word, PEM private keys,
passwords in URLs and bare AWS secret access keys near "aws" or an access key id. Part of
`privacy.detectors`, which runs them with the personal-data detectors."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from privacy.spans import Kind, Span

# Tokens start with a literal (which `re` skips to quickly) and are searched only when a known
# prefix is in the text; IBANs start at capital letters, which are rare in prose.
_TOKEN = re.compile(
    r"xox[abposr]-[0-9A-Za-z\-]{10,}|xapp-\d-[0-9A-Za-z\-]{10,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|gh[pousr]_[0-9A-Za-z]{36,251}|github_pat_[0-9A-Za-z_]{22,240}"
    r"|sk-(?:proj-|svcacct-|admin-)?[0-9A-Za-z_\-]{20,200}|sk_(?:live|test)_[0-9A-Za-z]{16,}"
    r"|rk_(?:live|test)_[0-9A-Za-z]{16,}|AIza[0-9A-Za-z_\-]{35}"
    r"|eyJ[0-9A-Za-z_\-]{5,}\.eyJ[0-9A-Za-z_\-]{5,}\.[0-9A-Za-z_\-]*"
)
_TOKEN_END = re.compile(r"[0-9A-Za-z_\-]")
_TOKEN_HINTS = (
    "xox", "xapp-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "k_live_",
    "k_test_", "AIza", "eyJ",
)  # fmt: skip
_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
_BASE64_LINES = re.compile(r"(?:\s*[A-Za-z0-9+/=]{16,})*+")  # the body of a block cut off before its END
# Secrets that only their context gives away: a key word, a separator, then the value. A long value
# must be random enough (`looks_like_secret`); a short one only counts after a password word in
# key-value form ("password=hunter2", "Password: Hunter2!x"), where it must mix letters with digits
# or symbols (`looks_like_password`), so "Reset your password: Settings > Security" stays prose.
_KEYWORD_SECRET = re.compile(
    r"(?P<key>(?i:(?<![A-Za-z])(?:password|passwd|passphrase|pwd|secret|token|credential|api[ _\-]?key|apikey"
    r"|access[ _\-]?key|private[ _\-]?key)s?(?:[_\-][A-Za-z0-9]+)*)|密码|口令|令牌|密钥|秘钥)"
    r"[\"']?\s*(?P<sep>[:=：]|是|为|(?i:\s+is\s+)|(?i:\s+was\s+))\s*[:：]?\s*[\"'“‘]?"
    r"(?P<value>[A-Za-z0-9+/=_\-.~!@#$%^&*?]{6,512})"
    r"|(?<![A-Za-z])(?i:bearer|basic) +(?P<bearer>[A-Za-z0-9+/=_\-.~]{16,2048})"
)
_PASSWORD_KEY = re.compile(r"(?i:(?:password|passwd|passphrase|pwd|secret)s?)|密码|口令")
SHORT_PASSWORD_MIN = 6  # "hunter2" and "s3cr3t" are real passwords; "abc1" is as likely a code
# A 40-character AWS secret access key has no prefix: it counts only near "aws" or an access key id.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT = re.compile(r"(?i:aws|amazon|secret[ _\-]?access[ _\-]?key)|(?:AKIA|ASIA)[0-9A-Z]{16}")
_AWS_REACH = 200  # characters before the key in which the hint must lie
# A password in a URL's user information: scheme://user:password@host.
_URL_PASSWORD = re.compile(r"://[^\s:/?#@]+:(?P<value>[^\s/?#@]+)@")  # starts with a literal: fast
_PLACEHOLDER = re.compile(r"(?i:\*+|x+|\.+|<[^>]*>|\[[A-Z_]+[0-9]*\]|\$\{?\w+\}?|password|pass|pwd|secret)")
_SECRET_HINTS = (
    "pass", "pwd", "secret", "token", "credential", "api", "access", "private", "bearer", "basic",
    "密码", "口令", "令牌", "密钥", "秘钥",
)  # fmt: skip
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z]+(?:[._\-][A-Za-z]+)*")
# Values that point at a secret rather than being one: $VAR, %VAR%, paths and URLs.
_REFERENCE = re.compile(
    r"\$[A-Z_][A-Z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|[~.]?/\S*|[A-Za-z][A-Za-z0-9+.\-]*://\S*"
)
SECRET_MIN_ENTROPY = 3.0  # bits per character; random base62 of length 16 averages ~3.7


def shannon_entropy(value: str) -> float:
    """Bits of entropy per character of `value`, from its own character frequencies."""
    if not value:
        return 0.0
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in Counter(value).values())


def looks_like_secret(value: str) -> bool:
    """A value next to a secret key word that is random enough to be a credential, not prose."""
    if len(value) < 16 or _REFERENCE.fullmatch(value) or _PLAIN_IDENTIFIER.fullmatch(value):
        return False  # too short, $DB_PASSWORD, /run/secrets/db, settings.SECRET_KEY, REPLACE_ME
    kinds = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c.isdigit() else "other"
        for c in value
    }
    return len(kinds) >= 2 and shannon_entropy(value) >= SECRET_MIN_ENTROPY


def tokens(text: str) -> Iterator[Span]:
    if any(hint in text for hint in _TOKEN_HINTS):
        for m in _TOKEN.finditer(text):
            token, start, end = m.group(), m.start(), m.end()
            # Boundaries are checked here, not in the pattern, so that its literal prefix stays first.
            if (start and _TOKEN_END.match(text, start - 1)) or _TOKEN_END.match(text, end):
                continue
            if token.startswith("sk-") and not (any(c.isdigit() for c in token) and looks_like_secret(token)):
                continue  # "sk-learn-contrib-…" is a project name, not a key
            yield Span(Kind.SECRET, m.start(), m.end())


def looks_like_password(value: str) -> bool:
    """A short value after a password word that reads as a password: letters mixed with digits or
    symbols, and neither a placeholder, a reference ($VAR, a path) nor a dotted name."""
    if len(value) < SHORT_PASSWORD_MIN or _PLACEHOLDER.fullmatch(value) or _REFERENCE.fullmatch(value):
        return False
    if _PLAIN_IDENTIFIER.fullmatch(value) or not any(c.isalpha() for c in value):
        return False
    return any(c.isdigit() or not c.isalnum() for c in value)


def keyword_secrets(text: str) -> Iterator[Span]:
    lowered = text.lower()
    if len(lowered) == len(text):
        # str.find of a few literals is far cheaper than a case-blind pattern over all the text.
        starts = sorted({i for hint in _SECRET_HINTS for i in find_all(lowered, hint)})
        matches: Iterable[re.Match[str] | None] = (_KEYWORD_SECRET.match(text, start) for start in starts)
    else:  # lower() moved some offsets (e.g. "İ" becomes two characters); search the text itself
        matches = _KEYWORD_SECRET.finditer(text)
    reach = 0
    for m in matches:
        if m is None or m.start() < reach:
            continue
        name = "value" if m.group("value") is not None else "bearer"
        value = m.group(name).rstrip(".,;:")
        reach = m.end()  # a value is never also the start of the next one ("password=password=…")
        if _is_secret(m, name, value):
            yield Span(Kind.SECRET, m.start(name), m.start(name) + len(value))


def _is_secret(m: re.Match[str], name: str, value: str) -> bool:
    if len(value) >= 16 and looks_like_secret(value):
        return True
    # "secret is" is prose ("the secret is out"); "secret:" and "password is" are not.
    key, sep = m.group("key") or "", (m.group("sep") or "").strip().lower()
    password_word = _PASSWORD_KEY.fullmatch(key) is not None and not (
        sep in ("is", "was") and key.lower().endswith("secret")
    )
    return name == "value" and password_word and looks_like_password(value)


def aws_secret_keys(text: str) -> Iterator[Span]:
    """Bare 40-character AWS secret access keys within reach after "aws" or an access key id."""
    hints = [m.end() for m in _AWS_CONTEXT.finditer(text)] if _aws_hinted(text) else []
    if not hints:
        return
    for m in _AWS_SECRET.finditer(text, hints[0]):
        value = m.group()
        near = any(0 <= m.start() - end <= _AWS_REACH for end in hints)
        # Both cases and high entropy: not a hex digest (a git SHA is 40 hex characters too).
        if near and not value.islower() and not value.isupper() and looks_like_secret(value):
            yield Span(Kind.SECRET, m.start(), m.end())


def _aws_hinted(text: str) -> bool:
    lowered = text.lower()
    return "aws" in lowered or "amazon" in lowered or "access" in lowered or "AKIA" in text or "ASIA" in text


def url_passwords(text: str) -> Iterator[Span]:
    if "://" in text:
        for m in _URL_PASSWORD.finditer(text):
            if not _PLACEHOLDER.fullmatch(m.group("value")):
                yield Span(Kind.SECRET, m.start("value"), m.end("value"))


def find_all(text: str, needle: str) -> Iterator[int]:
    at = text.find(needle)
    while at != -1:
        yield at
        at = text.find(needle, at + 1)


def pem_blocks(text: str) -> Iterator[Span]:
    reach = 0
    for m in _PEM_BEGIN.finditer(text) if "-----BEGIN" in text else ():
        if m.start() < reach:
            continue
        closing = f"-----END {m.group(1)}PRIVATE KEY-----"
        end = text.find(closing, m.end(), m.end() + 20_000)
        body = _BASE64_LINES.match(text, m.end())
        reach = end + len(closing) if end != -1 else body.end() if body else m.end()
        yield Span(Kind.SECRET, m.start(), reach)
