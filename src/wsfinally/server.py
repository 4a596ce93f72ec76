"""The registry of live connections and graceful shutdown on aiohttp's app lifecycle.

``setup(app)`` stores a :class:`Registry` under :data:`REGISTRY` and appends its
``shutdown`` to ``app.on_shutdown`` — aiohttp's documented pattern for closing
websockets with 1001 — plus a deadline: every connection gets its 1001, handler
loops end normally, end callbacks run, and whatever lingers is aborted and its
handler cancelled before the deadline, not after aiohttp's 2 x shutdown_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .connection import _FINISHED
from .ending import Ending, EndReason
from .settings import Settings

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["REGISTRY", "Observer", "Registry", "Stats", "setup"]

logger = logging.getLogger("wsfinally")

#: Close handshakes and end callbacks get this share of the shutdown deadline;
#: lingering handlers are cancelled at ``_FORCE_AT``; the rest is slack.
_CLOSE_SHARE = 0.8
_FORCE_AT = 0.9


@dataclass
class Stats:
    """Counters kept by the registry (metrics read them)."""

    opened: int = 0
    endings: Counter[EndReason] = field(default_factory=Counter)
    callback_failures: int = 0
    forced_at_shutdown: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # handshakes refused, by cause


class Observer:
    """Watches the connections of a :class:`Registry` (metrics, the dashboard).

    Append one to ``registry.observers``; override what you need. Each method is called
    on the event loop, synchronously, once per event: keep it cheap and never await.
    One that raises is logged and skipped; the connection's ending goes on regardless.
    """

    def opened(self, conn: Connection) -> None:
        """``conn`` was accepted (its handshake completed)."""

    def ended(self, conn: Connection, ending: Ending) -> None:
        """``conn`` ended; called once, before its end callbacks run."""

    def pong(self, conn: Connection, rtt: float) -> None:
        """A pong answered our heartbeat ping after ``rtt`` seconds."""

    def callback_ran(self, conn: Connection, seconds: float) -> None:
        """One end callback of ``conn`` finished (or failed, or timed out) after ``seconds``."""


class Registry:
    """Live connections of one application, and its shutdown.

    ``observers`` (a list of :class:`Observer`) hear of every connection opened and ended.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: dict[str, Connection] = {}
        self.stats = Stats()
        self.shutting_down = False
        self._deadlines = (0.0, 0.0)  # (close handshakes, everything), monotonic
        self._settings_cache: dict[tuple[tuple[str, Any], ...], Settings] = {}
        self._admitted = 0  # handshakes admitted and connections not yet released
        self._per_client: Counter[str] = Counter()
        self.observers: list[Observer] = []

    def admit(self, client: str) -> str | None:
        """Take a connection slot for ``client``, or say why not (``max_connections``,
        ``max_connections_per_ip``). No await between the check and the count."""
        s = self.settings
        if s.max_connections is not None and self._admitted >= s.max_connections:
            self.stats.refused["max_connections"] += 1
            return "max_connections"
        if (
            s.max_connections_per_ip is not None
            and self._per_client[client] >= s.max_connections_per_ip
        ):
            self.stats.refused["max_connections_per_ip"] += 1
            return "max_connections_per_ip"
        self._admitted += 1
        self._per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self._admitted -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def settings_for(self, overrides: dict[str, Any]) -> Settings:
        """The app's defaults with ``overrides`` applied, built once per distinct set."""
        if not overrides:
            return self.settings
        if any(callable(v) or isinstance(v, (list, dict, set)) for v in overrides.values()):
            # a callable may be built per request (a closure, a partial): caching would grow
            return Settings.build(self.settings, **overrides)
        key = tuple(sorted(overrides.items()))
        settings = self._settings_cache.get(key)
        if settings is None:
            settings = self._settings_cache[key] = Settings.build(self.settings, **overrides)
        return settings

    async def _on_startup(self, app: web.Application) -> None:
        self.shutting_down = False

    def __len__(self) -> int:
        return len(self.connections)

    def _add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.stats.opened += 1
        self._notify("opened", conn)

    def _ended(self, conn: Connection, ending: Ending) -> None:
        self.stats.endings[ending.reason] += 1
        self._notify("ended", conn, ending)

    def _pong(self, conn: Connection, rtt: float) -> None:
        self._notify("pong", conn, rtt)

    def _callback_ran(self, conn: Connection, seconds: float) -> None:
        self._notify("callback_ran", conn, seconds)

    def _notify(self, hook: str, conn: Connection, *args: Any) -> None:
        """Call ``hook`` on every observer; one that raises is logged and the rest go on.

        The hooks are synchronous: a ``CancelledError`` raised by one (``.result()`` of a
        cancelled future, say) is its own failure, never a cancellation of our task.
        """
        for observer in tuple(self.observers):  # one may remove itself
            try:
                getattr(observer, hook)(conn, *args)
            except (Exception, asyncio.CancelledError):
                logger.exception("observer %r failed on %s(%s)", observer, hook, conn.id)

    def _remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self.release(conn.client)

    async def shutdown(self, app: web.Application | None = None) -> None:
        """Close every connection with 1001 and wait until each has ended and its handler
        has left, within ``shutdown_timeout``; then abort and cancel what lingers."""
        started = time.monotonic()
        timeout = self.settings.shutdown_timeout
        self._deadlines = (started + timeout * _CLOSE_SHARE, started + timeout)
        self.shutting_down = True  # from here on, _start() shuts new arrivals down too
        protocol_tasks = []
        for conn in list(self.connections.values()):
            # aiohttp's own shutdown then walks every connection whose protocol task has not
            # finished (~100 µs each): waiting for those tasks too leaves it nothing to do
            task = getattr(conn.request.protocol, "_task_handler", None)
            if task is not None:
                protocol_tasks.append(task)
            conn._shutdown(*self._deadlines)
        total = len(self.connections)
        await self._wait_finished(started + timeout * _FORCE_AT)
        pending_tasks = [t for t in protocol_tasks if not t.done()]
        remaining = started + timeout * _FORCE_AT - time.monotonic()
        if pending_tasks and remaining > 0:
            await asyncio.wait(pending_tasks, timeout=remaining)
        forced = 0
        for conn in list(self.connections.values()):
            if not conn._is_finished:
                forced += 1
                conn._force()
        unfinished = await self._wait_finished(started + timeout)
        self.stats.forced_at_shutdown += forced
        took = time.monotonic() - started
        fields = {"event": "server.shutdown", "connections": total, "forced": forced,
                  "unfinished": unfinished, "duration_s": round(took, 3)}  # fmt: skip
        logger.info(
            "shutdown: %d connection(s) closed in %.3f s (%d forced, %d unfinished)",
            total, took, forced, unfinished, extra={"wsf": fields},
        )  # fmt: skip

    async def _wait_finished(self, until: float) -> int:
        """Wait for every registered connection (late arrivals too) to finish, until ``until``.

        Returns how many had not finished by then.
        """
        while True:
            pending = [
                c._future(_FINISHED) for c in self.connections.values() if not c._is_finished
            ]
            remaining = until - time.monotonic()
            if not pending or remaining <= 0:
                return len(pending)
            await asyncio.wait(pending, timeout=remaining)


REGISTRY: web.AppKey[Registry] = web.AppKey("wsfinally.registry", Registry)


def setup(app: web.Application, **defaults: Any) -> Registry:
    """Install the registry and graceful shutdown on ``app``; ``defaults`` apply to every
    connection accepted under it (``accept``/``endpoint`` settings override them).

    Call it before the application starts (aiohttp freezes its signals then).
    """
    if REGISTRY in app:
        raise RuntimeError("wsfinally.setup() was already called for this application")
    registry = Registry(Settings.build(**defaults))
    app[REGISTRY] = registry
    # first: aiohttp drops incoming data once pre_shutdown() ran, until our hook reopens
    # each websocket; and the endings (whose callbacks may use resources that later
    # on_shutdown hooks close) come before the rest
    app.on_shutdown.insert(0, registry.shutdown)
    app.on_startup.append(registry._on_startup)  # an application may be started again
    return registry


def find_registry(request: web.BaseRequest) -> Registry | None:
    """The registry of the application serving ``request`` (sub-apps see their parents')."""
    try:
        return request.config_dict.get(REGISTRY)  # type: ignore[attr-defined, no-any-return]
    except AttributeError:
        return None
