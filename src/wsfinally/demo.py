"""The demo application: the echo protocol at ``/ws`` and an index page at ``/``.

Echo protocol: text ``close`` -> the server closes with 1000; any other text ->
the same text + ``/answer``; binary -> echoed unchanged.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .connection import Connection
from .endpoint import endpoint
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


def make_app(**settings: Any) -> web.Application:
    """The demo app; ``settings`` become the defaults of every connection."""
    app = web.Application()
    setup(app, **settings)
    app.router.add_get("/", index)
    app.router.add_get("/ws", echo)
    return app
