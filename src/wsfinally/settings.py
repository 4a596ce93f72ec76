"""Settings: every knob with its default, validated when constructed.

Bad values fail here, at construction, with a message naming the setting —
never later inside a connection.
"""

from __future__ import annotations

import dataclasses
import math
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
    unset. ``shutdown_timeout`` is read from the settings given to ``setup()``.
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
        if isinstance(self.protocols, str):
            raise TypeError("protocols must be a sequence of strings, not a string")
        object.__setattr__(self, "protocols", tuple(self.protocols))

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
