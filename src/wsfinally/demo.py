"""The demo application: the echo protocol at ``/ws``, the chat at ``/chat``, an index at ``/``.

Echo protocol: text ``close`` -> the server closes with 1000; any other text ->
the same text + ``/answer``; binary -> echoed unchanged.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .connection import Connection
from .endpoint import endpoint
from .hub import setup_hub
from .server import setup

__all__ = ["echo", "make_app"]

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsfinally demo</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}
code{background:#eee;padding:0 .2em}</style></head>
<body><h1>wsfinally demo server</h1>
<p>Every websocket accepted here ends exactly once, with a truthful reason, and the server
logs one <code>connection.ended</code> line for it.</p>
<ul>
<li><a href="/chat"><code>/chat</code></a> — chat rooms with live presence: each leave is
shown with its reason (close the tab, kill the browser, stop a server node).</li>
<li><code>/ws</code> — echo: text <code>close</code> makes the server close with 1000; any other
text comes back with <code>/answer</code> appended; binary comes back unchanged.</li>
</ul>
<p>Try it: <button id="go">open /ws and send "hello"</button> <span id="out"></span></p>
<script>
document.getElementById('go').onclick = () => {
  const out = document.getElementById('out');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.onopen = () => ws.send('hello');
  ws.onmessage = (e) => { out.textContent = 'got: ' + e.data; ws.send('close'); };
  ws.onclose = (e) => { out.textContent += ` (closed ${e.code})`; };
};
</script></body></html>
"""


@endpoint()
async def echo(conn: Connection) -> None:
    async for msg in conn:
        if msg == "close":
            await conn.close(1000)
        elif isinstance(msg, str):
            await conn.send(msg + "/answer")
        else:
            await conn.send(msg)


async def index(request: web.Request) -> web.Response:
    return web.Response(text=INDEX, content_type="text/html")


def make_app(
    *, redis: str | None = None, hub_options: dict[str, Any] | None = None, **settings: Any
) -> web.Application:
    """The demo app; ``settings`` become the defaults of every connection.

    The chat's hub is in memory, or shared through Redis at ``redis`` (``hub_options``
    go to :class:`~wsfinally.hub.RedisBackend`: ``lease_ttl``, ``namespace``, ...).
    """
    from .chat import chat

    app = web.Application()
    setup(app, **settings)
    setup_hub(app, redis=redis, **(hub_options or {}))
    app.router.add_get("/", index)
    app.router.add_get("/ws", echo)
    app.router.add_get("/chat", chat)
    return app
