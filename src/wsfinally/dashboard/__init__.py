"""A live page of the connections of one application, served by wsfinally itself.

Mount it as an aiohttp sub-application (docs/dashboard.md)::

    app.add_subapp("/_wsfinally/", dashboard_app(app[wsfinally.REGISTRY]))

or in one call, ``setup_dashboard(app)``. The page (static files shipped in this package: no
CDN, works offline) opens a websocket at ``feed`` served through :func:`wsfinally.endpoint`:
a snapshot first, then every second a sample (open connections, endings by reason) and,
within 100 ms, each opening and ending. Pushes use ``send_nowait``: a dashboard that does
not keep up misses messages and ends ``slow_consumer``; it never holds anything up.

Access rule, for the page, its files and the feed alike: a request from an address in
``local_networks`` (loopback by default) is served; any other gets 403, unless ``token`` is
set and the request presents it (``?token=`` or ``Authorization: Bearer``). A request that
came through a proxy (``Forwarded`` or ``X-Forwarded-For``) never counts as local, nor one
whose ``Host`` is not ``localhost`` or a local address (DNS rebinding: another site's page
whose name was pointed at this machine). The feed has its own settings, not the app's: an
app-wide Origin allowlist, auth hook or idle timeout neither opens nor shuts it.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from ..endpoint import endpoint
from ..metrics import route_of
from ..server import REGISTRY, Observer, Registry

if TYPE_CHECKING:
    from ..connection import Connection
    from ..ending import Ending

__all__ = ["DASHBOARD", "LOCAL_NETWORKS", "Dashboard", "dashboard_app", "setup_dashboard"]

#: Who may see the dashboard without a token.
LOCAL_NETWORKS = ("127.0.0.0/8", "::1/128")
#: Heartbeat round-trip buckets of the page's histogram, milliseconds (upper bounds).
RTT_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: Events pushed per flush at most (the per-second counts still count every ending).
MAX_EVENTS = 50
FLUSH_EVERY = 0.1
OPEN_ROWS = 50
_STATIC = {
    "app.js": "application/javascript",
    "app.css": "text/css",
}


class Dashboard(Observer):
    """What the page shows, kept in memory: a per-second ring of the last ``history``
    seconds, the ``latest`` endings, the heartbeat round-trip histogram; and the feeds."""

    def __init__(
        self,
        registry: Registry,
        *,
        token: str | None = None,
        local_networks: Iterable[str] = LOCAL_NETWORKS,
        history: int = 600,
        latest: int = 100,
    ) -> None:
        self.registry = registry
        self.token = token or None
        self.local_networks = tuple(ipaddress.ip_network(n) for n in local_networks)
        self.samples: deque[dict[str, Any]] = deque(maxlen=history)
        self.latest: deque[dict[str, Any]] = deque(maxlen=latest)
        self.rtt = [0] * (len(RTT_BUCKETS_MS) + 1)
        self.feeds: set[Connection] = set()
        self._this_second: Counter[str] = Counter()
        self._events: list[dict[str, Any]] = []
        self._seq = 0  # numbers events: a state says which it already holds
        self._dropped = 0
        self._flush: asyncio.TimerHandle | None = None
        self._wall_offset = time.time() - time.monotonic()
        registry.observers.append(self)

    # -- Observer --------------------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        if self.feeds:
            self._push({"kind": "opened", "row": self._open_row(conn, time.monotonic())})

    def ended(self, conn: Connection, ending: Ending) -> None:
        self._this_second[ending.reason.value] += 1
        row = {
            "t": round(time.time(), 3),
            "id": conn.id,
            "peer": conn.peer,
            "route": route_of(conn),
            "reason": ending.reason.value,
            "code": ending.code,
            "clean": ending.clean,
            "duration": round(ending.duration, 4),
            "messages_in": ending.messages_in,
            "messages_out": ending.messages_out,
        }
        self.latest.append(row)
        self.feeds.discard(conn)
        if self.feeds:
            self._push({"kind": "ended", "row": row})

    def pong(self, conn: Connection, rtt: float) -> None:
        self.rtt[bisect_left(RTT_BUCKETS_MS, rtt * 1000)] += 1

    # -- what the page gets ----------------------------------------------------------------

    def open_count(self) -> int:
        stats = self.registry.stats
        return stats.opened - stats.endings.total()

    def _open_row(self, conn: Connection, now: float) -> dict[str, Any]:
        age = now - conn._life.opened_at
        return {"id": conn.id, "peer": conn.peer, "route": route_of(conn), "age": round(age, 1)}

    def open_rows(self) -> list[dict[str, Any]]:
        """The newest ``OPEN_ROWS`` open connections, newest first."""
        now = time.monotonic()
        rows = []
        for conn in reversed(self.registry.connections.values()):
            if conn.ending is None:
                rows.append(self._open_row(conn, now))
                if len(rows) == OPEN_ROWS:
                    break
        return rows

    def _state(self) -> dict[str, Any]:
        stats = self.registry.stats
        return {
            "open_now": self.open_count(),
            "open": self.open_rows(),
            "totals": {r.value: n for r, n in stats.endings.items()},
            "refused": dict(stats.refused),
            "opened": stats.opened,
            "rtt": {"buckets_ms": RTT_BUCKETS_MS, "counts": self.rtt},
            # events up to this one are in the figures above, flushed or not: the page
            # must not count them again when they arrive after this state
            "seq": self._seq,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "now": round(time.time(), 3),
            "history": list(self.samples),
            "latest": list(self.latest),
            **self._state(),
        }

    def tick(self) -> None:
        """Close the current second: append its sample and push it to every feed."""
        sample = {
            "t": int(time.time()),
            "open": self.open_count(),
            "ended": dict(self._this_second),
        }
        self._this_second.clear()
        self.samples.append(sample)
        if self.feeds:
            self._send({"type": "tick", "now": round(time.time(), 3), "sample": sample,
                        **self._state()})  # fmt: skip

    async def run(self) -> None:
        """Tick on every wall-clock second until cancelled."""
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            self.tick()

    def _push(self, event: dict[str, Any]) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._dropped += 1
            return
        self._seq += 1
        event["seq"] = self._seq
        self._events.append(event)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._flush_events)

    def _flush_events(self) -> None:
        self._flush = None
        events, self._events = self._events, []
        dropped, self._dropped = self._dropped, 0
        self._send({"type": "events", "events": events, "dropped": dropped})

    def _send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        for feed in list(self.feeds):
            feed.send_nowait(text)  # refused when it lags: it misses this one

    # -- access ----------------------------------------------------------------------------

    def allowed(self, request: web.BaseRequest) -> bool:
        """The access rule of the module docstring."""
        if self.token is not None:
            expected = self.token.encode()
            auth = request.headers.get("Authorization", "")
            for presented in (
                request.query.get("token"),
                auth[7:].strip() if auth[:7].lower() == "bearer " else None,
            ):
                if presented is not None and hmac.compare_digest(
                    presented.encode("utf-8", "surrogateescape"), expected
                ):
                    return True
        if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
            return False
        if not self._local_name(request.host):
            return False  # DNS rebinding: another site's page, its name pointed at us
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False  # a unix socket or an unknown peer: not known to be local
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.local_networks)

    def _local_name(self, host: str) -> bool:
        """The ``Host`` a local browser sends for a local page: ``localhost`` (or a name
        under it) or an address in ``local_networks``, with or without a port."""
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:8080
            name = name[1 : name.find("]")] if "]" in name else name[1:]
        elif name.count(":") == 1:  # 127.0.0.1:8080, localhost:8080
            name = name.rpartition(":")[0]
        if name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.local_networks)


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("wsfinally.dashboard", Dashboard)


def _static(name: str) -> bytes:
    return files(__name__).joinpath("static").joinpath(name).read_bytes()


def dashboard_app(
    registry: Registry,
    *,
    token: str | None = None,
    local_networks: Iterable[str] = LOCAL_NETWORKS,
    history: int = 600,
) -> web.Application:
    """The dashboard of ``registry``'s connections, as a sub-application to mount.

    ``token``: lets a request from outside ``local_networks`` in when it presents it.
    ``history``: seconds of per-second samples kept (and charted).
    """
    dash = Dashboard(registry, token=token, local_networks=local_networks, history=history)

    @web.middleware
    async def access(request: web.Request, handler: Any) -> web.StreamResponse:
        if not dash.allowed(request):
            raise web.HTTPForbidden(
                text="the wsfinally dashboard answers local addresses only, or a token"
            )
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[access])
    app[DASHBOARD] = dash
    index = _static("index.html").decode()

    async def page(request: web.Request) -> web.Response:
        token = request.query.get("token")
        qs = html.escape(f"?token={quote(token, safe='')}") if token else ""
        return web.Response(
            text=index.replace("{{QS}}", qs),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=_STATIC[name])

    # its own settings, not the application's: the access rule above is its gate, and an
    # app-wide Origin allowlist, auth hook or idle timeout must not open or shut it
    @endpoint(allowed_origins=None, auth=None, idle_timeout=None, rate_limit=None)
    async def feed(conn: Connection) -> None:
        conn.send_nowait(json.dumps(dash.snapshot(), separators=(",", ":")))
        dash.feeds.add(conn)
        try:
            async for _ in conn:
                pass  # the page says nothing; reading answers its pings and close
        finally:
            dash.feeds.discard(conn)

    async def ticker(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(dash.run())
        yield
        task.cancel()
        await asyncio.wait([task])  # (wait, unlike await, never raises the task's cancel)

    app.router.add_get("/", page)
    app.router.add_get("/feed", feed)
    app.router.add_get("/{name}", static)
    app.cleanup_ctx.append(ticker)
    return app


def setup_dashboard(
    app: web.Application,
    path: str = "/_wsfinally/",
    *,
    token: str | None = None,
    local_networks: Iterable[str] = LOCAL_NETWORKS,
    history: int = 600,
) -> Dashboard:
    """Mount the dashboard of ``app``'s connections at ``path`` (after ``wsfinally.setup``)."""
    if REGISTRY not in app:
        raise RuntimeError("call wsfinally.setup(app) before setup_dashboard(app)")
    sub = dashboard_app(app[REGISTRY], token=token, local_networks=local_networks,
                        history=history)  # fmt: skip
    app.add_subapp(path, sub)
    return sub[DASHBOARD]
