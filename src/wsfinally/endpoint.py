"""The public ways in: ``async with accept(request) as conn`` and ``@endpoint()``.

Both give the same guarantee: whatever way the handler leaves (returns, raises,
is cancelled), the connection is ended exactly once and its end callbacks have
run before control goes on; exceptions and cancellation propagate.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .connection import Connection
from .ending import EndReason
from .limits import client_address, origin_allowed
from .server import Registry, find_registry
from .settings import Settings

__all__ = ["accept", "endpoint"]

logger = logging.getLogger("wsfinally")

Handler = Callable[[Connection], Awaitable[None]]


_DEFAULTS = Settings()


def _refused(registry: Registry | None, cause: str) -> None:
    if registry is not None:
        registry.stats.refused[cause] += 1


class accept:  # noqa: N801 - used like a function: ``async with accept(request) as conn``
    """Prepare the websocket for ``request`` and yield its :class:`Connection`.

    Settings given here override those given to ``setup()``; bad ones raise here.
    """

    __slots__ = ("_base", "_conn", "_overrides", "_request")

    def __init__(self, request: web.Request, **settings: Any) -> None:
        self._request = request
        self._overrides = settings
        # validates now, naming the bad setting; no allocation when there is nothing to check
        self._base = Settings.build(**settings) if settings else _DEFAULTS
        self._conn: Connection | None = None

    @classmethod
    def _with(cls, request: web.Request, base: Settings, overrides: dict[str, Any]) -> accept:
        """For ``endpoint``: settings already validated, no dict copied per request."""
        self = cls.__new__(cls)
        self._request, self._base, self._overrides, self._conn = request, base, overrides, None
        return self

    async def __aenter__(self) -> Connection:
        request = self._request
        registry = find_registry(request)
        settings = registry.settings_for(self._overrides) if registry is not None else self._base
        if registry is not None and registry.shutting_down:
            _refused(registry, "shutting_down")
            raise web.HTTPServiceUnavailable(text="server is shutting down")
        # refused before the upgrade: an HTTP status, no websocket, no connection state
        if not origin_allowed(
            request.headers.get("Origin"), request.host, request.secure, settings.allowed_origins
        ):
            _refused(registry, "origin")
            raise web.HTTPForbidden(text="origin not allowed")
        client = ""  # counted per address only when a per-address limit is set
        if registry is not None and registry.settings.max_connections_per_ip is not None:
            client = client_address(
                request.remote, request.headers.getall("X-Forwarded-For", []),
                settings.trusted_proxies,
            )  # fmt: skip
        if registry is not None:
            cause = registry.admit(client)
            if cause == "max_connections":
                raise web.HTTPServiceUnavailable(text="too many connections")
            if cause is not None:
                raise web.HTTPTooManyRequests(text="too many connections from this address")
        try:
            if settings.auth is not None:
                try:  # bounded: a hook that hangs must not hold a connection slot
                    allowed = await asyncio.wait_for(
                        settings.auth(request), settings.handshake_timeout
                    )
                except web.HTTPException:
                    _refused(registry, "auth")
                    raise
                except asyncio.TimeoutError:
                    _refused(registry, "auth")
                    raise web.HTTPServiceUnavailable(text="authentication timed out") from None
                if not allowed:  # only an explicit yes admits (a missing return refuses)
                    _refused(registry, "auth")
                    raise web.HTTPForbidden(text="not allowed")
            ws = web.WebSocketResponse(
                timeout=settings.close_timeout,
                receive_timeout=None,
                autoclose=False,
                autoping=False,
                heartbeat=None,
                # aiohttp rejects a message of exactly max_msg_size; ours admits it
                max_msg_size=settings.max_message_size + 1,
                compress=settings.compress,
                protocols=settings.protocols,
                # how much aiohttp writes between checks of the transport's pause: small, so
                # the backlog stays near send_limit (a check is one flag test)
                writer_limit=min(16 * 1024, settings.send_limit),
            )
            await ws.prepare(request)
            conn = Connection(request, ws, settings, registry)
            conn.client = client
            conn._start()
        except BaseException:
            if registry is not None:
                registry.release(client)
            raise
        self._conn = conn
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._conn is not None
        await self._conn._exit(exc)
        return False


def ending_id(ctx: accept) -> str:
    return ctx._conn.id if ctx._conn is not None else "?"


AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint(**settings: Any) -> Callable[[Handler], AiohttpHandler]:
    """Decorator: ``async def handler(conn)`` becomes an aiohttp request handler.

    An exception from the handler ends the connection ``handler_error`` (1011) and is
    logged with the connection id; cancellation propagates.
    """
    base = Settings.build(**settings) if settings else _DEFAULTS  # fails at import time

    def decorate(handler: Handler) -> AiohttpHandler:
        @functools.wraps(handler)
        async def aiohttp_handler(request: web.Request) -> web.StreamResponse:
            ctx = accept._with(request, base, settings)
            try:
                async with ctx as conn:
                    await handler(conn)
            except Exception as exc:
                ending = ctx._conn.ending if ctx._conn is not None else None
                if ending is None:
                    raise  # the handshake itself failed: aiohttp answers it
                if ending.reason is EndReason.HANDLER_ERROR:
                    logger.error("handler of connection %s raised", ending_id(ctx), exc_info=exc)
                elif ending.error is not exc and not isinstance(exc, ConnectionResetError):
                    raise
                # else: the connection had ended already; the error is its consequence
            assert ctx._conn is not None
            return ctx._conn.response

        return aiohttp_handler

    return decorate
