"""A listen port checked before anything slow starts, so a taken one costs one line, not a traceback."""

from __future__ import annotations

import errno
import socket

from core.errors import KBError


class PortTaken(KBError):
    """The address is in use or not ours to bind; the message names what to change."""


def require_free_port(host: str, port: int, *, fix: str) -> None:
    """Raise PortTaken naming `fix` (the variable or option to change) unless `host:port` can be bound.

    The probe binds as aiohttp and vLLM do (SO_REUSEADDR), so a port in TIME_WAIT after a restart
    counts as free, as it is for them.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortTaken(f"cannot listen on {host}: {exc.strerror}; {fix}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise port_error(host, port, exc, fix=fix) from None


def port_error(host: str, port: int, exc: OSError, *, fix: str) -> PortTaken:
    """One line for a failed bind: taken, not allowed, or the system's own reason."""
    if exc.errno == errno.EADDRINUSE:
        return PortTaken(f"port {port} on {host} is taken (another server listens there): {fix}")
    if exc.errno == errno.EACCES:
        return PortTaken(f"port {port} on {host} is not allowed for this user: {fix}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return PortTaken(f"{host} is not an address of this machine: {fix}")
    return PortTaken(f"cannot listen on {host}:{port} ({exc.strerror}): {fix}")
