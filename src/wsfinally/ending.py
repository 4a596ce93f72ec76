"""End reasons and the :class:`Ending` record: what a finished connection reports.

Pure module: no asyncio, no aiohttp. The string values of :class:`EndReason` are
stable public API (they appear in logs, metrics and the hub's leave events).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ABNORMAL_CLOSURE",
    "NO_STATUS_RECEIVED",
    "EndReason",
    "Ending",
    "is_wire_code",
]

#: RFC 6455 7.4.1: reserved codes that must never be sent in a close frame.
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006
_RESERVED = frozenset({1004, NO_STATUS_RECEIVED, ABNORMAL_CLOSURE, 1015})


def is_wire_code(code: int) -> bool:
    """True when ``code`` may appear in a close frame (RFC 6455 7.4.1, 7.4.2)."""
    if code in _RESERVED:
        return False
    return 1000 <= code <= 1014 or 3000 <= code <= 4999


class EndReason(str, enum.Enum):
    """Why a connection ended. The first cause observed wins (see ``lifecycle``)."""

    CLIENT_CLOSED = "client_closed"
    SERVER_CLOSED = "server_closed"
    CONNECTION_LOST = "connection_lost"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    PROTOCOL_ERROR = "protocol_error"
    MESSAGE_TOO_BIG = "message_too_big"
    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"
    HANDLER_ERROR = "handler_error"
    SERVER_SHUTDOWN = "server_shutdown"
    CANCELLED = "cancelled"
    NODE_LOST = "node_lost"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Ending:
    """The one record a connection produces when it ends.

    ``code`` is the close code that tells the story: the peer's code when the peer
    closed first, the code we sent when we did, 1006 when no close frame was
    exchanged. ``code_sent``/``code_received`` keep both sides for the curious.
    ``clean`` is true only when the closing handshake completed both ways.
    """

    reason: EndReason
    code: int
    clean: bool
    error: BaseException | None
    duration: float
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    code_sent: int | None = None
    code_received: int | None = None
