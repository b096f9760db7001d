"""Signed push links: `/push/open` and `/push/dismiss` count a click or a "not for me" only for the
person the link was made for, and only until it expires.

A delivery's key names its person and window (`digest:slack:U123:2026-W48`), which anyone can
guess; the signature (HMAC-SHA256 over the action, the key, the document and the expiry, under
KB_PUSH_LINK_SECRET or a key derived from the audit key) is what makes a link one person's.

    query = signed_query(secret, "open", key, "hb:vpn.md", expires=now + ttl)
    check(secret, "open", key, "hb:vpn.md", expires="1767225600", signature="…", now=time.time())
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from core.settings import Settings
from privacy.audit_keys import load_key

EXPIRED = "this link has expired; the newest digest has fresh ones"
INVALID = "unknown link; it may be from an old message"


def link_secret(settings: Settings) -> bytes | None:
    """KB_PUSH_LINK_SECRET, else a key derived from the audit key; None when neither can be had."""
    if settings.push.link_secret is not None and settings.push.link_secret.get_secret_value().strip():
        return settings.push.link_secret.get_secret_value().strip().encode()
    key = load_key(settings, create=True).key
    return key.derive("push-links") if key is not None else None


def signature(secret: bytes, action: str, key: str, document_id: str, expires: int) -> str:
    message = f"{action}\n{key}\n{document_id}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def signed_query(secret: bytes, action: str, key: str, document_id: str, *, expires: int) -> str:
    sig = signature(secret, action, key, document_id, expires)
    return f"key={quote(key, safe='')}&doc={quote(document_id, safe='')}&exp={expires}&sig={sig}"


def check(
    secret: bytes | None, action: str, key: str, document_id: str, *, expires: str, sig: str, now: float
) -> str | None:
    """None when the link is genuine and current, else what to tell the person (INVALID or EXPIRED)."""
    if secret is None or not expires.isdigit() or len(expires) > 12:
        return INVALID
    expected = signature(secret, action, key, document_id, int(expires))
    if not hmac.compare_digest(expected, sig):
        return INVALID
    return EXPIRED if int(expires) < now else None
