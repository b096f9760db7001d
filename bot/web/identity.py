"""Who is using the web chat: the local user on 127.0.0.1, or the user a trusted proxy names.

Two modes, chosen by settings (the well-known reverse-proxy pattern, as oauth2-proxy or a corporate
SSO gateway provide it):

- KB_WEB_IDENTITY_HEADER unset (the default): the chat is one person's tool on their own machine.
  Requests from loopback are the user `web:web`; any other address is refused, so binding
  `kb serve` to 0.0.0.0 by mistake exposes nothing.
- KB_WEB_IDENTITY_HEADER set (e.g. `X-Forwarded-User`): the proxy in front authenticates people
  and names them in that header. The header is believed only from KB_WEB_TRUSTED_PROXIES
  addresses; from anywhere else, or missing, the request is refused.

Admins are the `web:<user>` entries of KB_BOT_ADMINS.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from core.settings import Settings

# What a user name may look like: e-mail addresses and directory names, nothing that could smuggle
# a separator into the `web:<user>` key or a header line.
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
LOCAL_USER = "web"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IdentityError(Exception):
    """Why a request has no web user; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class WebIdentity:
    header: str | None
    trusted: tuple[Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> WebIdentity:
        header = (settings.server.web_identity_header or "").strip() or None
        return cls(header, parse_networks(settings.server.web_trusted_proxies))

    def user(self, remote: str | None, headers: Mapping[str, str]) -> str:
        """The web user's name (the part after `web:`), or IdentityError."""
        address = _address(remote)
        if self.header is None:
            if address is None or not address.is_loopback:
                raise IdentityError(
                    403,
                    "the web chat is open only on 127.0.0.1; to serve other people, put it behind "
                    "a proxy that signs them in and set KB_WEB_IDENTITY_HEADER",
                )
            return LOCAL_USER
        if address is None or not any(address in network for network in self.trusted):
            raise IdentityError(
                403, f"{self.header} is only believed from KB_WEB_TRUSTED_PROXIES; {remote} is not one"
            )
        name = headers.get(self.header, "").strip()
        if not name:
            raise IdentityError(401, f"sign in first: the proxy sent no {self.header} header")
        if not _USER.match(name):
            raise IdentityError(400, f"the {self.header} header does not hold a valid user name")
        return name


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Addresses and CIDR networks; a bad entry is a configuration error that names it."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"KB_WEB_TRUSTED_PROXIES: {entry!r} is not an address or network") from exc
    return tuple(networks)


def _address(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


IDENTITY_KEY = web.AppKey("web_identity", WebIdentity)


def web_user(request: web.Request) -> str:
    """The request's web user, or an HTTP error with a JSON body that says why not."""
    try:
        return request.app[IDENTITY_KEY].user(request.remote, request.headers)
    except IdentityError as exc:
        raise json_error(exc.status, str(exc)) from None


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
}  # fmt: skip


def json_error(status: int, message: str) -> web.HTTPException:
    """An HTTP error whose body is `{"error": message}`, to raise from any web chat handler."""
    kind = _ERRORS.get(status, web.HTTPForbidden)
    return kind(text=json.dumps({"error": message}), content_type="application/json")
