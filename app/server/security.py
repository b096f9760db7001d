"""The web surface's guards: what every request of `kb serve` passes before a handler sees it.

`mount_web_surface(app, settings)` adds one middleware, the security headers and the API's own
description (`/api/openapi.json`, app/server/openapi.py). In order, a request is refused when:

- its Host is neither a loopback name nor one of KB_ALLOWED_HOSTS (400): a DNS-rebinding page
  cannot talk to a service on 127.0.0.1 under its own name;
- it asks for `/metrics` without KB_METRICS_TOKEN as a bearer token (401), or, with no token
  configured, from anywhere but loopback or through a proxy (403);
- it changes state (POST, PUT, PATCH, DELETE) from a browser page of another origin: its Origin is
  neither this Host nor one of KB_ALLOWED_ORIGINS, or `Sec-Fetch-Site: cross-site` (403). A page on
  another site can post a form or a `text/plain` fetch without asking first; it cannot fake these;
- it sends `/api/` a body that is not `application/json` (415): JSON is never parsed from a body
  that a browser would send cross-site without a preflight;
- its body does not arrive within KB_BODY_TIMEOUT_S (408, and the connection closes): a client
  trickling one byte every 20 s would otherwise hold a connection for as long as it likes. Headers
  have KB_HEADER_TIMEOUT_S, aiohttp's timer from the connection's start (`run_options`);
- its JSON body is nested too deeply or holds an integer too long for Python to read (400), which
  would otherwise raise in the handler's parser.

The platforms' webhooks (`/slack/events`, Teams' `/api/messages`) authenticate each request by
signature or token and come from servers, not browsers: Origin and content type do not apply.
Every refusal, and every HTTP error a route raises, is `{"error": "..."}` with its 4xx status.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from core.errors import ConfigError
from core.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LINGER_S = 1.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WEBHOOKS = ("/slack/", "/api/messages")  # authenticated per request by the platform
JSON_TYPES = frozenset({"application/json"})
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
# Always this service: a rebinding page's requests carry its own name, never these.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

# 'self' only: the chat page loads its script and style from this service, never inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a digest link's key never leaves in a Referer
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Policy:
    """The checks' settings, read once when the application is built."""

    hosts: frozenset[str]
    subdomains: tuple[str, ...]
    origins: frozenset[str]
    body_timeout_s: float
    metrics_token: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        server = settings.server
        names = {_hostname(h) for h in server.allowed_hosts if h.strip()} | LOOPBACK_NAMES
        if not is_wildcard(server.host):  # the address it listens on names it too
            names.add(_hostname(server.host))
        token = server.metrics_token.get_secret_value().strip() if server.metrics_token else None
        return cls(
            hosts=frozenset(n for n in names if not n.startswith(".")),
            subdomains=tuple(n for n in names if n.startswith(".")),
            origins=frozenset(_netloc(o) for o in server.allowed_origins if o.strip()),
            body_timeout_s=server.body_timeout_s,
            metrics_token=token or None,
        )

    def host_allowed(self, host: str) -> bool:
        name = _hostname(host)
        return name in self.hosts or "*" in self.hosts or any(name.endswith(s) for s in self.subdomains)


POLICY_KEY = web.AppKey("web_surface_policy", Policy)


def mount_web_surface(app: web.Application, settings: Settings) -> None:
    """The guards above, the security headers on every response, and `/api/openapi.json`."""
    from app.server.openapi import openapi_json

    app[POLICY_KEY] = Policy.from_settings(settings)
    app.middlewares.append(_guard)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/api/openapi.json", openapi_json)


def run_options(settings: Settings) -> dict[str, Any]:
    """aiohttp's runner options: a connection that has not sent its headers (or sits idle between
    requests) is closed after KB_HEADER_TIMEOUT_S; aiohttp starts that timer with the connection.
    After a refusal that left the body unread (408, 413) the rest is drained for one second, not
    aiohttp's ten, so a trickling client loses its connection at once."""
    return {"keepalive_timeout": settings.server.header_timeout_s, "lingering_time": LINGER_S}


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to listen beyond loopback unless a proxy names each web user (KB_WEB_IDENTITY_HEADER)."""
    if is_loopback(host) or (settings.server.web_identity_header or "").strip():
        return
    raise ConfigError(
        f"refusing to listen on {host or 'every address'}: without KB_WEB_IDENTITY_HEADER anyone who "
        "can reach that address would use the web chat and the push inbox unauthenticated",
        hint="listen on 127.0.0.1, or put kb serve behind a proxy that signs people in and set "
        "KB_WEB_IDENTITY_HEADER and KB_WEB_TRUSTED_PROXIES (docs/operations.md, Web surface)",
    )


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip() in {"", "0.0.0.0", "::", "[::]", "*"}


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = request.app[POLICY_KEY]
    try:
        refusal = _refusal(request, policy)
        if refusal is None and request.body_exists:
            refusal = await _read_body(request, policy)
        if refusal is not None:
            return refusal
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _as_json(exc)


def _refusal(request: web.Request, policy: Policy) -> web.Response | None:
    if not policy.host_allowed(request.host):
        return json_error(400, "unknown Host; add this name to KB_ALLOWED_HOSTS if it is this service")
    if request.path == "/metrics":
        return _metrics_refusal(request, policy)
    if request.method in SAFE_METHODS or request.path.startswith(WEBHOOKS):
        return None
    if not _same_origin(request, policy):
        return json_error(403, "cross-origin request refused; add the page's origin to KB_ALLOWED_ORIGINS")
    if request.path.startswith("/api/") and request.body_exists and request.content_type not in JSON_TYPES:
        return json_error(415, "send the body as JSON with Content-Type: application/json")
    return None


def _same_origin(request: web.Request, policy: Policy) -> bool:
    """A browser names the page's origin on every state-changing request; other clients send none."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "").lower() != "cross-site"
    netloc = _netloc(origin)
    return bool(netloc) and (netloc == request.host.lower() or netloc in policy.origins)


def _metrics_refusal(request: web.Request, policy: Policy) -> web.Response | None:
    if policy.metrics_token is not None:
        given = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), policy.metrics_token):
            return None
        return json_error(401, "send KB_METRICS_TOKEN as a bearer token", **{"WWW-Authenticate": "Bearer"})
    if is_loopback(request.remote or "") and not any(h in request.headers for h in FORWARDING_HEADERS):
        return None
    return json_error(403, "/metrics is open only to 127.0.0.1 unless KB_METRICS_TOKEN is set")


async def _read_body(request: web.Request, policy: Policy) -> web.Response | None:
    """Read the whole body under the deadline (handlers then get aiohttp's cached copy) and check
    JSON that Python's parser would fail on with an error other than "not JSON"."""
    try:
        body = await asyncio.wait_for(request.read(), policy.body_timeout_s)
    except TimeoutError:
        response = json_error(408, f"the request body did not arrive within {policy.body_timeout_s:g} s")
        response.force_close()
        return response
    if request.content_type not in JSON_TYPES:
        return None
    try:
        json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # the route says what it expected
    except RecursionError:
        return json_error(400, "the JSON body is nested too deeply")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return json_error(400, f"the JSON body cannot be read: {exc}")
    return None


def _as_json(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (404, 405, 413…) as `{"error": ...}`, keeping headers such as Allow."""
    default = f"{exc.status}: {exc.reason}"
    message = exc.text if exc.text and exc.text != default else exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "www-authenticate"}}
    return json_error(exc.status, message, **headers)


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _hostname(host: str) -> str:
    """The name part of a Host value or setting: no port, no brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _netloc(origin: str) -> str:
    try:
        return urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return ""
