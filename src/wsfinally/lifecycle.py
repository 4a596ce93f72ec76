"""The per-connection state machine: every input that can end a connection, one ending out.

Pure module (no asyncio, no aiohttp): the adapter feeds it what it observes —
close frames sent and received, the transport going away, deadlines that fired,
how the handler left — and it decides. Everything that makes "exactly once" and
"first cause wins" true lives here, so it is tested as a table without a loop.

Rules:

* The first cause observed decides the reason; later causes only add facts
  (a close frame that answers ours makes the ending clean, nothing more).
* :meth:`Lifecycle.finish` returns the :class:`~wsfinally.ending.Ending` once and
  ``None`` on every later call.
* The reported code: 1006 when the transport died under us (``connection_lost``,
  ``heartbeat_timeout``); the peer's code when the peer closed first; otherwise
  the code we sent; 1006 when no close frame crossed at all (RFC 6455 7.1.5).
* ``clean`` means the closing handshake completed both ways (RFC 6455 7.1.4).
"""

from __future__ import annotations

import enum

from .ending import ABNORMAL_CLOSURE, NO_STATUS_RECEIVED, Ending, EndReason, is_wire_code

__all__ = [
    "Exit",
    "Lifecycle",
    "close_code_for",
    "echo_code",
    "reason_for_exit",
    "reason_for_frame_error",
]

R = EndReason

#: The close code each reason sends when nobody chose one. ``None``: nothing is sent
#: (the peer already closed and gets an echo, or the transport is gone or aborted).
_CLOSE_CODE: dict[EndReason, int | None] = {
    R.CLIENT_CLOSED: None,
    R.SERVER_CLOSED: 1000,
    R.CONNECTION_LOST: None,
    R.HEARTBEAT_TIMEOUT: None,
    R.IDLE_TIMEOUT: 1000,
    R.PROTOCOL_ERROR: 1002,
    R.MESSAGE_TOO_BIG: 1009,
    R.SLOW_CONSUMER: 1008,
    R.RATE_LIMITED: 1008,
    R.HANDLER_ERROR: 1011,
    R.SERVER_SHUTDOWN: 1001,
    R.CANCELLED: 1011,
    R.NODE_LOST: None,
}

#: Reasons whose transport is aborted: whatever close frame was written best-effort sits
#: behind data the peer never read, so none is reported (1006).
_TRANSPORT_DEATHS = frozenset({R.CONNECTION_LOST, R.HEARTBEAT_TIMEOUT, R.SLOW_CONSUMER})


def close_code_for(reason: EndReason) -> int | None:
    """The code a close frame carries for ``reason`` (``None``: send no close frame)."""
    return _CLOSE_CODE[reason]


def echo_code(received: int) -> int:
    """The code we answer a peer's close frame with (RFC 6455 5.5.1: echo it).

    A close frame without a code (reported 1005) or with a code that may not be
    sent is answered with 1000.
    """
    return received if is_wire_code(received) else 1000


def reason_for_frame_error(code: int) -> EndReason:
    """aiohttp reports bad frames as an error carrying the code it sent."""
    return R.MESSAGE_TOO_BIG if code == 1009 else R.PROTOCOL_ERROR


class Exit(enum.Enum):
    """How the handler left the ``accept`` block."""

    RETURNED = "returned"
    RAISED = "raised"
    CANCELLED = "cancelled"


def reason_for_exit(how: Exit, *, transport_lost: bool, shutting_down: bool) -> EndReason:
    """Classify the handler leaving the block when no cause was observed before.

    A transport already gone explains whatever the handler did (an error from a
    send to a dead peer, aiohttp's ``handler_cancellation``). A cancellation while
    the server shuts down is the shutdown; any other cancellation is ``cancelled``.
    """
    if transport_lost:
        return R.CONNECTION_LOST
    if how is Exit.RETURNED:
        return R.SERVER_CLOSED
    if how is Exit.RAISED:
        return R.HANDLER_ERROR
    return R.SERVER_SHUTDOWN if shutting_down else R.CANCELLED


class Lifecycle:
    """State of one connection from the completed handshake to its Ending."""

    __slots__ = (
        "_close_code",
        "_ended",
        "code_received",
        "code_sent",
        "error",
        "opened_at",
        "reason",
        "transport_lost",
    )

    def __init__(self, opened_at: float) -> None:
        self.opened_at = opened_at
        self.reason: EndReason | None = None
        self.error: BaseException | None = None
        self.code_sent: int | None = None
        self.code_received: int | None = None
        self.transport_lost = False
        self._close_code: int | None = None
        self._ended = False

    @property
    def decided(self) -> bool:
        """A cause has been observed: the connection is ending."""
        return self.reason is not None

    @property
    def ended(self) -> bool:
        return self._ended

    def observe(
        self, reason: EndReason, *, code: int | None = None, error: BaseException | None = None
    ) -> bool:
        """Record a cause. Returns True when it is the first and so decides the reason.

        ``code`` overrides the reason's default close code (``server_closed`` with
        the application's code, ``protocol_error`` with 1007).
        """
        if self.reason is not None or self._ended:
            return False
        self.reason = reason
        self.error = error
        self._close_code = code if code is not None else _CLOSE_CODE[reason]
        return True

    def close_received(self, code: int) -> bool:
        """The peer's close frame arrived (``code`` 0 or 1005: it carried none)."""
        if self.code_received is None:
            self.code_received = code if code else NO_STATUS_RECEIVED
        return self.observe(R.CLIENT_CLOSED)

    def close_sent(self, code: int) -> None:
        """Our close frame was handed to the transport."""
        if self.code_sent is None:
            self.code_sent = code

    def lost(self, error: BaseException | None = None, *, we_closed: bool = False) -> bool:
        """The transport is gone.

        ``we_closed``: our side closed it (after a close frame, or aiohttp after a
        frame error it is about to report); that is a consequence, not a cause.
        """
        self.transport_lost = True
        if we_closed:
            return False
        return self.observe(R.CONNECTION_LOST, error=error)

    def code_to_send(self) -> int | None:
        """The close frame still owed to the peer, or ``None`` when none is.

        None once one was sent, when the transport is gone, and for reasons that
        abort the transport. A peer that closed first is owed the echo of its code.
        """
        if self.code_sent is not None or self.transport_lost or self.reason is None:
            return None
        if self.reason is R.CLIENT_CLOSED:
            assert self.code_received is not None
            return echo_code(self.code_received)
        return self._close_code

    def finish(
        self,
        now: float,
        *,
        messages_in: int = 0,
        messages_out: int = 0,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> Ending | None:
        """Produce the Ending: once. Every later call returns ``None``."""
        if self._ended:
            return None
        self._ended = True
        reason = self.reason
        if reason is None:  # nothing observed: the caller ended a connection it still had
            reason = self.reason = R.SERVER_CLOSED
        if reason in _TRANSPORT_DEATHS:
            code = ABNORMAL_CLOSURE
        elif reason is R.CLIENT_CLOSED and self.code_received is not None:
            code = self.code_received
        elif self.code_sent is not None:
            code = self.code_sent
        elif self.code_received is not None:
            code = self.code_received
        else:
            code = ABNORMAL_CLOSURE
        return Ending(
            reason=reason,
            code=int(code),  # a plain int: aiohttp hands out WSCloseCode members, whose
            # str() is the member's name before Python 3.11
            clean=self.code_sent is not None and self.code_received is not None,
            error=self.error,
            duration=max(0.0, now - self.opened_at),
            messages_in=messages_in,
            messages_out=messages_out,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            code_sent=None if self.code_sent is None else int(self.code_sent),
            code_received=None if self.code_received is None else int(self.code_received),
        )
