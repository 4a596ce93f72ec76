"""The demo application: the echo protocol at ``/ws``, the chat at ``/chat``, an index at ``/``.

Echo protocol: text ``close`` -> the server closes with 1000; any other text ->
the same text + ``/answer``; binary -> echoed unchanged.

The index page (``static/index.html``) opens websockets from the browser and ends them
each way a browser can; ``/ws/violation`` is its test route for a protocol violation
(docs/dashboard.md says which ending each button produces). With ``metrics=True`` the
app serves ``/metrics``; with ``dashboard=True`` the live dashboard at ``/_wsfinally/``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from aiohttp import web

from .connection import Connection, data_frame
from .endpoint import endpoint
from .hub import setup_hub
from .server import REGISTRY, setup

__all__ = ["DASHBOARD_PATH", "echo", "make_app", "violation"]

DASHBOARD_PATH = "/_wsfinally/"
INDEX = files("wsfinally").joinpath("static").joinpath("index.html").read_text("utf-8")


@endpoint()
async def echo(conn: Connection) -> None:
    async for msg in conn:
        if msg == "close":
            await conn.close(1000)
        elif isinstance(msg, str):
            await conn.send(msg + "/answer")
        else:
            await conn.send(msg)


@endpoint()
async def violation(conn: Connection) -> None:
    """Sends a text frame that is not UTF-8 (a browser cannot send a malformed frame itself).

    RFC 6455 8.1: the browser must _Fail the WebSocket Connection_. Chromium does it with a
    close frame of 1002 (its page sees 1006), so the server's Ending is ``client_closed``
    1002: the peer closed first, with that code.
    """
    transport = conn.request.transport
    if transport is not None:
        payload = b"\xff\xfe not UTF-8"
        transport.write(data_frame(0x1, payload))
        conn.messages_out += 1  # written past send(): counted by hand
        conn.bytes_out += len(payload)
    async for _ in conn:
        pass


async def index(request: web.Request) -> web.Response:
    app = request.app
    link = (
        f'<a id="dashboard-link" href="{DASHBOARD_PATH}">the live dashboard</a>'
        if app.get(_DASHBOARD_ON)
        else "the dashboard (off: <code>wsfinally serve</code> turns it on)"
    )
    text = (
        INDEX.replace("{{MAX_MESSAGE_SIZE}}", str(app[REGISTRY].settings.max_message_size))
        .replace("{{DASHBOARD_LINK}}", link)
        .replace("{{DASHBOARD_URL}}", html.escape(DASHBOARD_PATH if app.get(_DASHBOARD_ON) else ""))
    )
    # no-store: Chromium keeps a page it may restore (back/forward cache) with its websockets
    # open; the demo's "navigate away" is meant to end them
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


_DASHBOARD_ON = web.AppKey("wsfinally.demo.dashboard", bool)


def make_app(
    *,
    metrics: bool = False,
    dashboard: bool = False,
    dashboard_token: str | None = None,
    local_networks: Iterable[str] | None = None,
    redis: str | None = None,
    hub_options: dict[str, Any] | None = None,
    **settings: Any,
) -> web.Application:
    """The demo app; ``settings`` become the defaults of every connection.

    ``metrics``: Prometheus metrics at ``/metrics``. ``dashboard``: the live dashboard at
    ``/_wsfinally/`` (``dashboard_token`` and ``local_networks``: its access rule). The
    chat's hub is in memory, or shared through Redis at ``redis`` (``hub_options`` go to
    :class:`~wsfinally.hub.RedisBackend`: ``lease_ttl``, ``namespace``, ...).
    """
    from .chat import chat

    app = web.Application()
    setup(app, **settings)
    hub = setup_hub(app, redis=redis, **(hub_options or {}))
    app[_DASHBOARD_ON] = dashboard
    app.router.add_get("/", index)
    app.router.add_get("/ws", echo)
    app.router.add_get("/ws/violation", violation)
    app.router.add_get("/chat", chat)
    if metrics:
        from .metrics import setup_metrics, track_hub

        setup_metrics(app)
        track_hub(app, hub.counts)
    if dashboard:
        from .dashboard import LOCAL_NETWORKS, setup_dashboard

        setup_dashboard(
            app, DASHBOARD_PATH, token=dashboard_token,
            local_networks=LOCAL_NETWORKS if local_networks is None else local_networks,
        )  # fmt: skip
    return app
