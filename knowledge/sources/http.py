"""Fetching JSON for API sources: SSRF guard, retries with backoff, redirects followed one by one.

A source's URL comes from a config file, and pagination and redirects come from the remote
server, so every URL requested is checked: its host must not resolve to a loopback, private,
link-local, multicast or otherwise non-public address unless the host (or a network holding the
address) is in `KB_URL_ALLOWLIST`. The resolver aiohttp connects through checks the addresses
again, so a DNS answer that changes between the check and the connection (DNS rebinding) is
refused too.

>>> async with JsonClient(policy=UrlPolicy([]), timeout_s=10) as client:   # doctest: +SKIP
...     data = await client.get_json("https://wiki.example.com/api/pages", source="wiki")
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from knowledge.sources.config import SourceError, mask_url

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_AFTER_CAP_S = 30.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Retryable(Exception):
    """An attempt failed in a way a later attempt may not (5xx, 429, timeout, reset)."""

    def __init__(self, error: SourceError, *, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.wait_s = error, wait_s


class _Blocked(OSError):
    """Raised inside the resolver; aiohttp wraps it, JsonClient turns it back into a clear refusal."""


def address_kind(ip: IPAddress) -> str | None:
    """Why an address must not be reached from a config-supplied URL, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_kind(ip.ipv4_mapped)
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


class UrlPolicy:
    """Which hosts an API source may reach: public addresses, and private ones only if allowlisted.

    Allowlist entries are host names or IP addresses (matched exactly, ignoring case) or networks
    in CIDR notation (`10.20.0.0/16`), which allow the addresses inside them.
    """

    def __init__(self, allowlist: Sequence[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in (e.strip() for e in allowlist):
            if "/" in entry and _is_network(entry):
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            if entry:
                self.hosts.add(entry.lower().strip("[]"))

    def host_allowed(self, host: str) -> bool:
        return host.lower().strip("[]") in self.hosts

    def refusal(self, host: str, address: str) -> str | None:
        """Why `address` (which `host` resolved to) must not be reached, or None."""
        if self.host_allowed(host):
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        kind = address_kind(ip)
        if kind is None or any(ip in network for network in self.networks):
            return None
        return (
            f"{host} resolves to {ip}, a {kind} address; API sources may only reach public addresses "
            f"unless the host is in KB_URL_ALLOWLIST (e.g. KB_URL_ALLOWLIST='[\"{host}\"]')"
        )

    async def check(self, url: str) -> None:
        """Raise SourceError unless `url` is http(s) and every address of its host may be reached."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"refused {mask_url(url)}: only http and https URLs with a host are fetched")
        host = parts.hostname
        if self.host_allowed(host):
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError) as exc:
            raise SourceError(f"cannot resolve the host of {mask_url(url)}: {exc}") from exc
        for info in infos:
            reason = self.refusal(host, str(info[4][0]))
            if reason is not None:
                raise SourceError(f"refused {mask_url(url)}: {reason}")


class _GuardedResolver(ThreadedResolver):
    """Resolves as usual, then refuses addresses the policy forbids, on every connection."""

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for result in results:
            reason = self.policy.refusal(host, result["host"])
            if reason is not None:
                raise _Blocked(reason)
        return results


class JsonClient:
    """GETs JSON documents for one source, applying the URL policy to every request and redirect.

    `headers` (the auth header) are sent only to the origin of `origin_url`: a redirect or a
    next-page link to another host does not get the credentials.
    """

    def __init__(
        self,
        *,
        policy: UrlPolicy,
        timeout_s: float,
        max_bytes: int = 50_000_000,
        retries: int = 2,
        backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        origin_url: str | None = None,
    ) -> None:
        self.policy, self.timeout_s, self.max_bytes = policy, timeout_s, max_bytes
        self.retries, self.backoff_s = retries, backoff_s
        self._headers = dict(headers or {})
        self._origin = _origin(origin_url) if origin_url else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self.policy), use_dns_cache=False, limit=4)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=self.timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def get_json(self, url: str) -> Any:
        """The JSON at `url`; retries transient failures, then raises SourceError saying what failed."""
        for attempt in range(self.retries + 1):
            try:
                return await self._attempt(url)
            except _Retryable as failure:
                if attempt == self.retries:
                    more = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise SourceError(f"{failure.error}{more}") from failure
                wait = self.backoff_s * 2**attempt
                if failure.wait_s is not None:
                    wait = max(wait, min(failure.wait_s, _RETRY_AFTER_CAP_S))
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, url: str) -> Any:
        assert self._session is not None, "use JsonClient in `async with`"
        current, visited = url, [url]
        for _ in range(MAX_REDIRECTS + 1):
            await self.policy.check(current)
            headers = self._headers if self._origin == _origin(current) else {}
            shown = mask_url(current)
            try:
                async with self._session.get(current, headers=headers, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        current = self._redirect(response, current, visited)
                        continue
                    self._check_status(response, shown)
                    return _parse(await self._read(response, shown), response.content_type, shown)
            except TimeoutError as exc:
                error = SourceError(f"no answer from {shown} within {self.timeout_s:g}s")
                raise _Retryable(error) from exc
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Blocked):
                    raise SourceError(f"refused {shown}: {exc.os_error}") from exc
                raise _Retryable(SourceError(f"cannot connect to {shown}: {exc.os_error}")) from exc
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                raise _Retryable(SourceError(f"the connection to {shown} broke off: {exc}")) from exc
            except aiohttp.ClientError as exc:
                raise SourceError(f"cannot fetch {shown}: {exc.__class__.__name__}: {exc}") from exc
        raise SourceError(f"more than {MAX_REDIRECTS} redirects, starting at {mask_url(url)}")

    @staticmethod
    def _redirect(response: aiohttp.ClientResponse, current: str, visited: list[str]) -> str:
        location = response.headers.get("Location")
        if not location:
            raise SourceError(f"HTTP {response.status} from {mask_url(current)} without a Location")
        target = urljoin(current, location)
        if target in visited:
            raise SourceError(f"redirect loop: {mask_url(current)} sends back to {mask_url(target)}")
        visited.append(target)
        return target

    @staticmethod
    def _check_status(response: aiohttp.ClientResponse, shown: str) -> None:
        status = response.status
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else None
            raise _Retryable(SourceError(f"HTTP {status} {response.reason or ''} from {shown}"), wait_s=wait)
        if status in (401, 403):
            raise SourceError(
                f"HTTP {status} from {shown}: the API refused the credentials; check auth_header and "
                "that the variable named in auth_env holds a valid value"
            )
        if status >= 400:
            raise SourceError(f"HTTP {status} {response.reason or ''} from {shown}".replace("  ", " "))

    async def _read(self, response: aiohttp.ClientResponse, shown: str) -> bytes:
        too_big = SourceError(f"the response from {shown} is over {self.max_bytes:,} bytes")
        if response.content_length is not None and response.content_length > self.max_bytes:
            raise too_big
        body = bytearray()
        async for piece in response.content.iter_chunked(65_536):
            body += piece
            if len(body) > self.max_bytes:
                raise too_big
        return bytes(body)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def _parse(body: bytes, content_type: str, shown: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise SourceError(
            f"the response from {shown} is not JSON (Content-Type {content_type}; {where})"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise SourceError(
            f"the response from {shown} is not readable JSON ({exc.__class__.__name__})"
        ) from exc


def _is_network(entry: str) -> bool:
    """Whether an allow-list entry is a CIDR network ("10.0.0.0/8") rather than a host name."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True
