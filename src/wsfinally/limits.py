"""Limits decided before the upgrade (origin, client address) and a message rate bucket.

Pure functions and one small class: no asyncio, no aiohttp, tested as tables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from urllib.parse import urlsplit

__all__ = ["TokenBucket", "client_address", "origin_allowed"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _netloc(scheme: str, host: str) -> str:
    """``host[:port]`` lower-cased, without the scheme's default port."""
    host = host.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(f":{default}")]
    return host


def origin_allowed(
    origin: str | None, host: str | None, secure: bool, allowed: Collection[str] | None
) -> bool:
    """Cross-site websocket hijacking check (RFC 6455 10.2).

    No ``Origin`` header: not a browser; allowed. With an allowlist: the origin must be in
    it (``*`` allows all). Without one: same origin only — the Origin's host and port
    must be the request's ``Host`` and its scheme must match the connection's security.
    """
    if origin is None:
        return True
    origin = origin.strip()
    if allowed is not None:
        return "*" in allowed or origin.lower().rstrip("/") in {
            a.lower().rstrip("/") for a in allowed
        }
    if host is None or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or (parts.scheme == "https") != secure:
        return False
    request_scheme = "https" if secure else "http"
    return _netloc(parts.scheme, parts.netloc) == _netloc(request_scheme, host)


def _is_trusted(address: str, trusted: Collection[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Collection[str]
) -> str:
    """The address a per-client limit counts: the peer, or — only when the peer is a
    trusted proxy — the right-most address in ``X-Forwarded-For`` that is not one.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header line in order: a proxy may
    append its own line after the client's (HAProxy does), so all of them are read.
    """
    address = peer or "?"
    if not trusted_proxies or not _is_trusted(address, trusted_proxies):
        return address
    hops = [h.strip() for line in forwarded_for for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return address


class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; ``take(now)`` spends one if it can."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
