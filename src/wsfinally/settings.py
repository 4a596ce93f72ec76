"""Settings: every knob with its default, validated when constructed.

Bad values fail here, at construction, with a message naming the setting —
never later inside a connection.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Settings"]

MiB = 1024 * 1024

_UNSET: Any = object()


def _positive(name: str, value: object, *, optional: bool) -> None:
    if value is None:
        if optional:
            return
        raise ValueError(f"{name} must be a positive number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Connection and server settings (design.md, Defaults).

    ``ping_interval=None`` turns the heartbeat off; ``ping_timeout`` then must stay
    unset. ``shutdown_timeout``, ``max_connections`` and ``max_connections_per_ip`` are
    read from the settings given to ``setup()``; ``handshake_timeout`` is a server
    setting (``wsfinally serve`` passes it to aiohttp's runner as ``keepalive_timeout``).
    ``allowed_origins=None``: same origin only. ``rate_limit``: messages per second per
    connection (token bucket of ``rate_burst``, default ``max(1, rate_limit)``).
    """

    ping_interval: float | None = 20.0
    ping_timeout: float | None = _UNSET
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0
    callback_timeout: float = 5.0
    idle_timeout: float | None = None
    max_message_size: int = MiB
    compress: bool = True
    protocols: tuple[str, ...] = field(default=())
    send_limit: int = MiB
    slow_consumer_timeout: float = 10.0
    handshake_timeout: float = 10.0
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    allowed_origins: tuple[str, ...] | None = None
    trusted_proxies: tuple[str, ...] = ()
    auth: Callable[[Any], Awaitable[object]] | None = None
    rate_limit: float | None = None
    rate_burst: int | None = None

    def __post_init__(self) -> None:
        _positive("ping_interval", self.ping_interval, optional=True)
        if self.ping_timeout is _UNSET:
            default = 20.0 if self.ping_interval is not None else None
            object.__setattr__(self, "ping_timeout", default)
        elif self.ping_interval is None and self.ping_timeout is not None:
            raise ValueError(
                "ping_timeout is set but ping_interval is None: a ping timeout needs "
                "pings; set ping_interval too, or drop ping_timeout"
            )
        if self.ping_interval is not None and self.ping_timeout is None:
            raise ValueError("ping_timeout must be set when ping_interval is set")
        _positive("ping_timeout", self.ping_timeout, optional=True)
        _positive("close_timeout", self.close_timeout, optional=False)
        _positive("shutdown_timeout", self.shutdown_timeout, optional=False)
        _positive("callback_timeout", self.callback_timeout, optional=False)
        _positive("idle_timeout", self.idle_timeout, optional=True)
        _positive_int("max_message_size", self.max_message_size)
        if not isinstance(self.compress, bool):
            raise TypeError(f"compress must be a bool, got {self.compress!r}")
        for name in ("protocols", "trusted_proxies", "allowed_origins"):
            value = getattr(self, name)
            if value is None and name == "allowed_origins":
                continue
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence of strings, not a string")
            object.__setattr__(self, name, tuple(value))
        _positive_int("send_limit", self.send_limit)
        _positive("slow_consumer_timeout", self.slow_consumer_timeout, optional=False)
        _positive("handshake_timeout", self.handshake_timeout, optional=False)
        if self.max_connections is not None:
            _positive_int("max_connections", self.max_connections)
        if self.max_connections_per_ip is not None:
            _positive_int("max_connections_per_ip", self.max_connections_per_ip)
        if self.auth is not None and not callable(self.auth):
            raise TypeError(f"auth must be an async callable taking the request, got {self.auth!r}")
        _positive("rate_limit", self.rate_limit, optional=True)
        if self.rate_burst is not None:
            _positive_int("rate_burst", self.rate_burst)
            if self.rate_limit is None:
                raise ValueError("rate_burst is set but rate_limit is not: set rate_limit too")

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, base: Settings | None = None, **overrides: Any) -> Settings:
        """``base`` with ``overrides`` applied; an unknown keyword is a TypeError naming it."""
        unknown = sorted(set(overrides) - cls.names())
        if unknown:
            raise TypeError(f"unknown wsfinally setting(s): {', '.join(unknown)}")
        if base is None:
            return cls(**overrides)
        if not overrides:
            return base
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        if "ping_interval" in overrides and "ping_timeout" not in overrides:
            # heartbeat turned off here: its timeout goes too; turned on: keep the
            # base's timeout, or the default when the base had none
            if overrides["ping_interval"] is None or base.ping_timeout is None:
                values["ping_timeout"] = _UNSET
        values.update(overrides)
        return cls(**values)
