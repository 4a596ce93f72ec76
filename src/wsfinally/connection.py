"""aiohttp adapter: :class:`Connection` over ``web.WebSocketResponse``.

It observes (close frames, the transport going away, deadlines) and feeds
:class:`~wsfinally.lifecycle.Lifecycle`, which decides. Costs on the message path:
none beyond one attribute store per received chunk (the heartbeat's clock) and
one flag test per message. The heartbeat and every close deadline are timers
(``loop.call_later``), never a task or a future per message.

Close frames we initiate are written straight to the transport (RFC 6455 5.5.1:
an unmasked control frame, written whole, so it never interleaves with aiohttp's
own frames) and the reply is read by whichever task is reading: aiohttp's
``ws.close()`` from another task stops waiting for the reply as soon as the
reader wakes, which would make every cross-task close unclean.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from itertools import count
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from . import log
from .ending import Ending, EndReason, is_wire_code
from .lifecycle import Exit, Lifecycle, reason_for_exit, reason_for_frame_error
from .limits import TokenBucket
from .settings import Settings

if TYPE_CHECKING:
    from .server import Registry

__all__ = ["Connection", "EndCallback"]

EndCallback = Callable[[Ending], Awaitable[None] | None]

logger = logging.getLogger("wsfinally")
_monotonic = time.monotonic
_PING = b"\x89\x00"  # FIN + ping opcode, empty payload, unmasked (RFC 6455 5.5.2)
_ids = count(1)
_late_callbacks: set[asyncio.Task[None]] = set()
_ID_PREFIX = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}"
_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY
_PINGT, _PONGT, _CLOSE = WSMsgType.PING, WSMsgType.PONG, WSMsgType.CLOSE


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """An unmasked server close frame (RFC 6455 5.5.1); the reason is cut to fit 125 bytes."""
    payload = struct.pack("!H", code) + reason[:123]
    return struct.pack("!BB", 0x88, len(payload)) + payload


def _text_size(data: str) -> int:
    return len(data) if data.isascii() else len(data.encode("utf-8"))


def data_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked, unfragmented, uncompressed server frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


# one-shot events of a connection, as bits of Connection._flags; a future exists only
# while somebody waits for one (an idle connection holds none)
_STOPPED = 1  # the transport is gone
_DONE = 2  # the Ending is recorded and the end callbacks have run
_FINISHED = 4  # ...and the handler has left the accept block


class _ParserTap:
    """Sits between aiohttp's protocol and the frame parser.

    Stamps the arrival of every chunk (the heartbeat reads it) and learns that
    the transport went away the moment aiohttp does (``feed_eof`` is called from
    ``connection_lost``), whether or not the handler is reading.
    """

    __slots__ = ("_conn", "_inner")

    def __init__(self, inner: Any, conn: Connection) -> None:
        self._inner = inner
        self._conn = conn

    def feed_data(self, data: bytes) -> Any:
        self._conn._rx_at = _monotonic()
        result = self._inner.feed_data(data)
        if result[0]:  # aiohttp's parser met a bad frame (it reports eof only then)
            self._conn._on_frame_error()
        return result

    def feed_eof(self) -> Any:
        self._conn._on_transport_lost()
        return self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Connection:
    """One accepted websocket connection. Iterate it for messages (``str``/``bytes``).

    Read messages through the connection, not through ``response``: it answers
    pings and close frames itself (aiohttp's autoping/autoclose are off so that
    close codes are echoed truthfully and pongs can be timed).
    """

    __slots__ = (
        "_backlogged",
        "_bucket",
        "_callbacks",
        "_cb_deadline",
        "_closing",
        "_conclusion",
        "_deadline",
        "_flags",
        "_frame_error",
        "_hb_handle",
        "_idle_handle",
        "_idle_seen",
        "_left",
        "_life",
        "_loop",
        "_ping_at",
        "_reading",
        "_registry",
        "_reply_reader",
        "_rx_at",
        "_slow_handle",
        "_task",
        "_transport",
        "_waiters",
        "_watchdog",
        "_watchdog_at",
        "bytes_in",
        "bytes_out",
        "client",
        "ending",
        "id",
        "last_rtt",
        "messages_in",
        "messages_out",
        "request",
        "response",
        "settings",
    )

    def __init__(
        self,
        request: web.Request,
        response: web.WebSocketResponse,
        settings: Settings,
        registry: Registry | None,
    ) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost during the websocket handshake")
        self.id = f"{_ID_PREFIX}-{next(_ids)}"
        self.request = request
        self.response = response
        self.settings = settings
        self.ending: Ending | None = None
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.last_rtt: float | None = None
        self._transport: asyncio.Transport = transport
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._life = Lifecycle(_monotonic())
        self._rx_at = self._life.opened_at
        self._closing = False  # we sent our close frame (or echoed the peer's)
        self._reading = False  # a task is inside response.receive()
        self._callbacks: list[EndCallback] | None = None  # most connections register none
        self._flags = 0  # _STOPPED | _DONE | _FINISHED
        self._waiters: dict[int, asyncio.Future[None]] | None = None
        self._left = False
        self._frame_error = False
        self._conclusion: asyncio.Task[None] | None = None
        self._reply_reader: asyncio.Task[None] | None = None
        self._deadline: float | None = None  # close handshakes must be over by then
        self._cb_deadline: float | None = None  # end callbacks must be over by then
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = float("inf")
        self._hb_handle: asyncio.TimerHandle | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_seen = 0
        self._ping_at: float | None = None
        self._slow_handle: asyncio.TimerHandle | None = None
        self._backlogged = False  # send_nowait() refused a message for want of room
        self._bucket: TokenBucket | None = None
        if settings.rate_limit is not None:
            burst = settings.rate_burst or max(1, int(settings.rate_limit))
            self._bucket = TokenBucket(settings.rate_limit, burst, self._life.opened_at)
        self.client = ""  # the address a per-client limit counts (set by accept when one is)

    # -- public API --------------------------------------------------------------

    @property
    def peer(self) -> str:
        """``host:port`` of the peer."""
        # asked of the transport each time (it answers after closing too, on both loops):
        # uvloop builds the tuple anew per call, so keeping it would cost every idle peer
        peername = self._transport.get_extra_info("peername")
        return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "?"

    def __repr__(self) -> str:
        state = self.ending.reason.value if self.ending else "open"
        return f"<Connection {self.id} {self.peer} {state}>"

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> str | bytes:
        ws = self.response
        while True:
            if self._closing:
                await self._wait_stopped()
                raise StopAsyncIteration
            self._reading = True
            try:
                msg = await ws.receive()
            finally:
                self._reading = False
            kind = msg.type
            if self._closing and kind is not _CLOSE:
                continue  # a close started while we waited: read its reply (RFC 6455 1.4)
            if kind is _TEXT or kind is _BINARY:
                if self._bucket is not None and not self._bucket.take(_monotonic()):
                    if self._life.observe(EndReason.RATE_LIMITED):
                        self._send_close(1008, b"rate limit")  # RFC 6455 7.4.1: policy
                    continue
                if kind is _TEXT:
                    text: str = msg.data
                    size = _text_size(text)
                else:
                    data: bytes = msg.data
                    size = len(data)
                if size > self.settings.max_message_size:
                    # aiohttp admits one byte over its limit in a compressed message
                    if self._life.observe(EndReason.MESSAGE_TOO_BIG):
                        self._send_close(1009, b"message too big")  # RFC 6455 7.4.1
                    continue
                self.messages_in += 1
                self.bytes_in += size
                return text if kind is _TEXT else data
            if kind is _PINGT:
                if not self._transport.is_closing():
                    try:
                        await ws.pong(msg.data)
                    except ConnectionResetError:
                        pass  # the next receive() reports the lost transport
                continue
            if kind is _PONGT:
                if self._ping_at is not None:
                    self.last_rtt = rtt = _monotonic() - self._ping_at
                    if self._registry is not None and self._registry.observers:
                        self._registry._pong(self, rtt)
                continue
            self._on_final_message(msg.type, msg.data)
            raise StopAsyncIteration

    async def send(self, data: str | bytes) -> None:
        """Send one message; wait while the peer holds more than ``send_limit`` unread.

        The wait is bounded: a peer that stays over the limit for ``slow_consumer_timeout``
        ends ``slow_consumer`` and this raises ``ConnectionResetError``, as it does once
        the connection is closing.
        """
        if self._closing or self._life.transport_lost:
            raise ConnectionResetError(f"websocket {self.id} is closing")
        # over the limit after this one: the send may wait in drain(); bound that wait
        if self._transport.get_write_buffer_size() + len(data) > self.settings.send_limit:
            self._backlogged = True
            self._arm_slow()  # unconditionally: the write below is what fills the buffer
        else:
            self._backlogged = False
        if isinstance(data, str):
            await self.response.send_str(data)
            self.bytes_out += _text_size(data)
        else:
            await self.response.send_bytes(data)
            self.bytes_out += len(data)
        self.messages_out += 1

    def send_nowait(self, data: str | bytes) -> bool:
        """Queue one message without waiting (for fan-out): False when it was refused.

        Refused when the connection is closing or the peer already holds ``send_limit``
        bytes unread; the message is dropped, the caller is never held up, and a peer that
        stays over the limit ends ``slow_consumer``. Frames go out uncompressed (RFC 7692
        allows it on a connection that negotiated permessage-deflate).
        """
        if self._closing or self._life.transport_lost or self._transport.is_closing():
            return False
        if isinstance(data, str):
            payload, opcode = data.encode("utf-8"), 0x1
        else:
            payload, opcode = bytes(data), 0x2
        buffered = self._transport.get_write_buffer_size()
        if buffered and buffered + len(payload) > self.settings.send_limit:
            # (an empty buffer takes any one message: the limit is never a size cap)
            self._backlogged = True
            self._arm_slow()
            return False
        self._backlogged = False
        self._transport.write(data_frame(opcode, payload))
        self.messages_out += 1
        self.bytes_out += len(payload)
        return True

    @property
    def buffered(self) -> int:
        """Bytes written for the peer and not yet taken by its TCP stack."""
        return 0 if self._transport.is_closing() else self._transport.get_write_buffer_size()

    def _over_limit(self) -> bool:
        """The peer holds more than ``send_limit`` unread, or a message was refused for
        want of room and nothing was sent since while its backlog is still there."""
        if self.request.protocol.writing_paused:
            return True
        return self._backlogged and self.buffered > 0

    def _arm_slow(self) -> None:
        """Start the slow-consumer clock; ``_slow_check`` decides when it runs out."""
        if self._slow_handle is None:
            self._slow_handle = self._loop.call_later(
                self.settings.slow_consumer_timeout, self._slow_check
            )

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` (ending ``server_closed``) and wait for the peer's answer.

        Waits at most ``close_timeout``; then the transport is aborted and the ending
        says ``clean=False``. When it returns, ``ending`` is set and the end callbacks
        have run. Idempotent; a no-op once the connection has ended.
        """
        if not is_wire_code(code):
            raise ValueError(f"close code {code} may not be sent in a close frame (RFC 6455 7.4)")
        if self._life.observe(EndReason.SERVER_CLOSED, code=code):
            self._send_close(code, reason.encode("utf-8"))
        await self._wait_stopped()
        if self.ending is None and self._conclusion is not None:
            await asyncio.shield(self._future(_DONE))  # the Ending is recorded on return

    def on_end(self, callback: EndCallback) -> None:
        """Run ``callback(ending)`` once when the connection ends (sync or async).

        Registered after the end, it runs at once, in a task of its own.
        """
        if self.ending is None:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(callback)
            return
        task = self._loop.create_task(self._run_callback(callback, self.ending))
        _late_callbacks.add(task)
        task.add_done_callback(_late_callbacks.discard)

    @property
    def closed(self) -> bool:
        """True once an end cause was observed (the connection is closing or ended)."""
        return self._life.decided

    async def wait_ended(self) -> Ending:
        """Wait until the ending is recorded and every end callback has run."""
        await asyncio.shield(self._future(_DONE))
        assert self.ending is not None
        return self.ending

    def _set(self, flag: int) -> None:
        if not self._flags & flag:
            self._flags |= flag
            if self._waiters is not None:
                future = self._waiters.pop(flag, None)
                if future is not None and not future.done():
                    future.set_result(None)

    def _future(self, flag: int) -> asyncio.Future[None]:
        """A future resolved when ``flag`` is set (created on demand)."""
        if self._waiters is None:
            self._waiters = {}
        future = self._waiters.get(flag)
        if future is None:
            future = self._waiters[flag] = self._loop.create_future()
            if self._flags & flag:
                future.set_result(None)
        return future

    @property
    def _is_finished(self) -> bool:
        return bool(self._flags & _FINISHED)

    # -- start ---------------------------------------------------------------------

    def _start(self) -> None:
        protocol = self.request.protocol
        inner = getattr(protocol, "_payload_parser", None)
        if inner is None:
            raise RuntimeError("wsfinally: this aiohttp version exposes no websocket parser")
        protocol._payload_parser = _ParserTap(inner, self)
        s = self.settings
        # the transport pauses aiohttp's writer (send() waits) past send_limit
        self._transport.set_write_buffer_limits(high=s.send_limit)
        if s.ping_interval is not None:
            self._hb_handle = self._loop.call_later(s.ping_interval, self._hb_tick)
        if s.idle_timeout is not None:
            self._idle_handle = self._loop.call_later(s.idle_timeout, self._idle_tick)
        log.opened(self)
        registry = self._registry
        if registry is not None:
            registry._add(self)
            if registry.shutting_down:  # accepted while the shutdown was under way
                self._shutdown(*registry._deadlines)

    # -- observations ----------------------------------------------------------------

    def _on_final_message(self, kind: WSMsgType, data: Any) -> None:
        """The receive loop met CLOSE, CLOSED, CLOSING or ERROR: record what it means."""
        life = self._life
        if kind is _CLOSE:
            life.close_received(int(data or 0))
            code = life.code_to_send()
            if code is not None and not self._closing:
                self._write_close(code)  # echo the peer's code (RFC 6455 5.5.1)
            self._close_transport()
        elif kind is WSMsgType.ERROR:
            if isinstance(data, WebSocketError):
                # aiohttp has sent data.code and is closing the transport itself; a peer
                # that does not read would keep it open: bound it
                life.observe(reason_for_frame_error(data.code), code=data.code, error=data)
                life.close_sent(data.code)
                self._closing = True
                self._arm_watchdog(self._close_budget())
            else:
                life.lost(data if isinstance(data, BaseException) else None)
        elif not life.decided:  # CLOSED / CLOSING: the stream ended under us
            life.lost()

    def _on_frame_error(self) -> None:
        """The parser rejected a frame: aiohttp will answer with 1002/1007/1009 and close,
        but only when somebody reads, and its close can wait forever in drain(): bound it."""
        if not self._frame_error and not self._life.decided:
            self._frame_error = True
            self._arm_watchdog(self._close_budget())

    def _on_transport_lost(self) -> None:
        """Called by the parser tap from aiohttp's ``connection_lost``: at once, once."""
        if self._flags & _STOPPED:
            return
        life = self._life
        if self._frame_error and not life.decided:
            # the watchdog beat aiohttp's report of the bad frame: its code is unknown here
            life.observe(EndReason.PROTOCOL_ERROR)
        life.lost(we_closed=self._closing or self.response.closed)
        self._cancel_timers()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._set(_STOPPED)
        if life.decided and self._conclusion is None:
            # the Ending does not wait for a handler busy elsewhere (a push loop, a queue)
            self._conclusion = self._loop.create_task(self._conclude())

    def _transport_gone(self) -> bool:
        return self._life.transport_lost or self._transport.is_closing()

    # -- timers --------------------------------------------------------------------------

    def _hb_tick(self) -> None:
        """Ping after ``ping_interval`` of silence; then expect data within ``ping_timeout``."""
        self._hb_handle = None
        if self._life.decided:
            return
        s = self.settings
        assert s.ping_interval is not None and s.ping_timeout is not None
        now = _monotonic()
        quiet = now - self._rx_at
        if quiet < s.ping_interval:
            self._hb_handle = self._loop.call_later(s.ping_interval - quiet, self._hb_tick)
            return
        if self._transport.is_closing():
            return
        self._transport.write(_PING)  # written even while a send() waits in drain()
        self._ping_at = now
        self._hb_handle = self._loop.call_later(s.ping_timeout, self._hb_check)

    def _hb_check(self) -> None:
        self._hb_handle = None
        s = self.settings
        assert s.ping_interval is not None and self._ping_at is not None
        if self._rx_at >= self._ping_at or getattr(self.request.protocol, "_reading_paused", False):
            # data came in; or aiohttp paused reading because our handler does not read,
            # so a pong may be waiting unseen: that silence is ours, not the peer's
            wait = max(0.0, self._rx_at + s.ping_interval - _monotonic())
            self._hb_handle = self._loop.call_later(wait, self._hb_tick)
            return
        if self._life.observe(EndReason.HEARTBEAT_TIMEOUT):
            self._abort()

    def _slow_check(self) -> None:
        """``slow_consumer_timeout`` after the backlog passed the limit: still over it?"""
        self._slow_handle = None
        if self._life.decided or self._transport.is_closing():
            return
        if not self._over_limit():
            return  # it caught up; the next send over the limit re-arms
        if self._life.observe(EndReason.SLOW_CONSUMER):
            self._closing = True
            self._transport.write(close_frame(1008, b"slow consumer"))  # best effort
            self._abort()  # its backlog, and our memory, go with the transport

    def _idle_tick(self) -> None:
        self._idle_handle = None
        if self._life.decided:
            return
        assert self.settings.idle_timeout is not None
        if self.messages_in != self._idle_seen:
            self._idle_seen = self.messages_in
            self._idle_handle = self._loop.call_later(self.settings.idle_timeout, self._idle_tick)
        elif self._life.observe(EndReason.IDLE_TIMEOUT):
            self._send_close(1000, b"idle timeout")
            self._ensure_reply_reader()

    def _cancel_timers(self) -> None:
        """Stop the heartbeat and idle timers (the watchdog lives until the transport is gone)."""
        for handle in (self._hb_handle, self._idle_handle, self._slow_handle):
            if handle is not None:
                handle.cancel()
        self._hb_handle = self._idle_handle = self._slow_handle = None

    # -- closing ---------------------------------------------------------------------------

    def _close_budget(self) -> float:
        budget = self.settings.close_timeout
        if self._deadline is not None:
            budget = min(budget, self._deadline - _monotonic())
        return max(budget, 0.0)

    def _arm_watchdog(self, delay: float) -> None:
        """Abort the transport unless it is gone within ``delay`` (earliest arming wins)."""
        when = _monotonic() + delay
        if self._flags & _STOPPED or when >= self._watchdog_at:
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = when
        self._watchdog = self._loop.call_later(delay, self._abort)

    def _abort(self) -> None:
        self._watchdog = None
        if not self._flags & _STOPPED:
            self._transport.abort()
            self._on_transport_lost()

    def _write_close(self, code: int, reason: bytes = b"") -> None:
        self._closing = True
        if not self._transport_gone():
            self._transport.write(close_frame(code, reason))
            self._life.close_sent(code)
        self._arm_watchdog(self._close_budget())

    def _send_close(self, code: int, reason: bytes = b"") -> None:
        """Start the closing handshake (the reply is read by whoever reads)."""
        if not self._closing:
            self._write_close(code, reason)

    def _close_transport(self) -> None:
        """RFC 6455 7.1.1: the server closes TCP first once close frames have crossed."""
        if not self._transport.is_closing():
            self._transport.close()
        self._arm_watchdog(self._close_budget())  # a peer that does not read keeps it open

    def _ensure_reply_reader(self) -> None:
        """From outside the handler: make sure someone reads the peer's close reply."""
        if self._reading or self._reply_reader is not None or self._flags & _STOPPED:
            return
        if asyncio.current_task() is self._task:
            return  # the handler itself will read it in __anext__ or at its exit
        self._reply_reader = self._loop.create_task(self._read_reply())

    async def _wait_stopped(self) -> None:
        """Until the transport is gone: read the reply here unless another task does."""
        if self._flags & _STOPPED:
            return
        if self._reading or self._reply_reader is not None:
            await asyncio.shield(self._future(_STOPPED))
        else:
            await self._read_reply()

    async def _read_reply(self) -> None:
        ws = self.response
        while not self._flags & _STOPPED:
            self._reading = True
            try:
                msg = await ws.receive()
            except RuntimeError:  # aiohttp refuses reads once closed several times
                self._abort()
                break
            finally:
                self._reading = False
            if msg.type in (_TEXT, _BINARY, _PINGT, _PONGT):
                continue  # data after our close frame is discarded (RFC 6455 1.4)
            self._on_final_message(msg.type, msg.data)
            break
        await asyncio.shield(self._future(_STOPPED))

    # -- the end -------------------------------------------------------------------------------

    async def _exit(self, exc: BaseException | None) -> None:
        """The handler left the ``accept`` block: end the connection, then let it go on."""
        self._reading = False
        life = self._life
        if not life.decided:
            how = (
                Exit.RETURNED
                if exc is None
                else Exit.RAISED
                if isinstance(exc, Exception)
                else Exit.CANCELLED
            )
            shutting_down = self._registry is not None and self._registry.shutting_down
            reason = reason_for_exit(
                how, transport_lost=self._transport_gone(), shutting_down=shutting_down
            )
            if reason is EndReason.CONNECTION_LOST:
                life.lost(exc if isinstance(exc, Exception) else None)
            else:
                life.observe(reason, error=exc if how is Exit.RAISED else None)
        if self._conclusion is None:
            self._conclusion = self._loop.create_task(self._conclude())
        self._left = True
        try:
            # shielded: a second cancellation propagates at once, the ending still completes
            await asyncio.shield(self._conclusion)
        finally:
            self._conclusion.add_done_callback(self._release)

    def _release(self, _: object = None) -> None:
        """The handler has left and the ending is complete: let the registry forget us."""
        if self._left and self._flags & _DONE and not self._flags & _FINISHED:
            self._set(_FINISHED)
            if self._registry is not None:
                self._registry._remove(self)

    async def _conclude(self) -> None:
        life = self._life
        interrupted: asyncio.CancelledError | None = None
        try:
            if not self._closing:
                code = life.code_to_send()
                if code is not None:
                    self._write_close(code)
            if life.reason is EndReason.CANCELLED:
                self._close_transport()  # best effort: the reply is not awaited
            elif not self._flags & _STOPPED:
                self._arm_watchdog(self._close_budget())
                await self._wait_stopped()
        except asyncio.CancelledError as exc:  # the loop is being torn down: end now,
            interrupted = exc  # and re-raise it once the ending and callbacks are done
            self._abort()
        except Exception:  # pragma: no cover - defensive: the ending must still be produced
            logger.exception("wsfinally: closing connection %s failed", self.id)
            self._abort()
        self._close_transport()
        self._cancel_timers()
        ending = life.finish(
            _monotonic(),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )
        if ending is None:  # pragma: no cover - finish() is only reached once
            if interrupted is not None:
                raise interrupted
            return
        self.ending = ending
        if self._registry is not None:
            self._registry._ended(self, ending)
        log.ended(self, ending)
        for callback in self._callbacks or ():
            try:
                await self._run_callback(callback, ending)
            except asyncio.CancelledError as exc:  # torn down: the others still run
                interrupted = exc
        self._callbacks = None
        self._set(_DONE)
        self._release()
        if interrupted is not None:
            raise interrupted

    async def _run_callback(self, callback: EndCallback, ending: Ending) -> None:
        """One end callback, bounded and isolated: failures are logged and counted.

        An async callback runs as its own task and is abandoned (cancelled, not waited
        for) at its timeout, so one that ignores cancellation cannot hold us up.
        """
        started = _monotonic()
        timeout = self.settings.callback_timeout
        if self._cb_deadline is not None:
            timeout = max(0.0, min(timeout, self._cb_deadline - started))
        try:
            result = callback(ending)
            if not inspect.isawaitable(result):
                return
            task = asyncio.ensure_future(result)
            done, _ = await asyncio.wait((task,), timeout=timeout)
            if not done:
                task.cancel()
                self._callback_failed(callback, f"outlived its {timeout:.3g} s timeout", None)
            elif task.cancelled():
                self._callback_failed(callback, "was cancelled", None)
            elif task.exception() is not None:
                error = task.exception()
                self._callback_failed(
                    callback, "raised", error if isinstance(error, Exception) else None
                )
        except Exception as exc:
            self._callback_failed(callback, "raised", exc)
        finally:
            if self._registry is not None and self._registry.observers:
                self._registry._callback_ran(self, _monotonic() - started)

    def _callback_failed(self, callback: EndCallback, what: str, exc: Exception | None) -> None:
        name = getattr(callback, "__qualname__", repr(callback))
        logger.error(
            "end callback %s of connection %s %s",
            name,
            self.id,
            what,
            exc_info=exc,
            extra={"wsf": {"event": "callback.failed", "id": self.id, "callback": name}},
        )
        if self._registry is not None:
            self._registry.stats.callback_failures += 1

    # -- shutdown (called by the registry) ---------------------------------------------------------

    def _shutdown(self, close_deadline: float, deadline: float) -> None:
        self._deadline = close_deadline
        self._cb_deadline = deadline
        # aiohttp's pre_shutdown() marks every protocol closed, which makes it drop
        # incoming data — including the peer's answer to our 1001. Reopen it: this
        # connection was upgraded and never serves another HTTP request.
        protocol = self.request.protocol
        if getattr(protocol, "_close", False):
            protocol._close = False
        if self._life.observe(EndReason.SERVER_SHUTDOWN):
            self._send_close(1001, b"server shutdown")
            self._ensure_reply_reader()
        else:
            self._arm_watchdog(self._close_budget())

    def _force(self) -> None:
        """The shutdown deadline is near: drop the transport, cancel a handler that lingers."""
        self._abort()
        if not self._left and self._task is not None and not self._task.done():
            self._task.cancel()
