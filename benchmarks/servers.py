"""The servers the harness compares, each an echo of binary and text messages.

    python benchmarks/servers.py KIND LOOP [--heartbeat] [--cpu N]

Prints ``ready <port>`` once listening on 127.0.0.1 (a free port), then serves until
SIGTERM/SIGINT. KIND is one of KINDS; LOOP is ``asyncio`` or ``uvloop``. ``--heartbeat``
turns on each server's keepalive at 20 s (wsfinally has it on by default, always);
KIND ``demo``/``demo-metrics`` is the demo app with metrics off/on (DEMO_KINDS);
``--cpu N`` pins the process to core N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

KINDS = (
    "wsfinally-endpoint",
    "wsfinally-accept",
    "aiohttp",
    "websockets",
    "websockets-deflate",
    "picows",
)
#: The demo app (``wsfinally.demo.make_app``, its echo at /ws) with metrics off and on: the
#: harness compares these two for the cost of metrics (scraping /metrics every second).
DEMO_KINDS = ("demo", "demo-metrics")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_aiohttp(kind: str, heartbeat: bool) -> None:
    from aiohttp import WSMsgType, web

    import wsfinally
    from wsfinally.demo import make_app

    app = web.Application()
    if kind in DEMO_KINDS:
        app = make_app(metrics=kind == "demo-metrics")
    elif kind == "aiohttp":

        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(heartbeat=20.0 if heartbeat else None)
            await ws.prepare(request)
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws

    elif kind == "wsfinally-endpoint":
        wsfinally.setup(app)

        @wsfinally.endpoint()
        async def handler(conn: wsfinally.Connection) -> None:  # type: ignore[misc]
            async for msg in conn:
                await conn.send(msg)

    else:
        wsfinally.setup(app)

        async def handler(request: web.Request) -> web.StreamResponse:
            async with wsfinally.accept(request) as conn:
                async for msg in conn:
                    await conn.send(msg)
            return conn.response

    if kind not in DEMO_KINDS:
        app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    say(f"ready {runner.addresses[0][1]}")
    await wait_for_signal()
    await runner.cleanup()


async def serve_websockets(kind: str, heartbeat: bool) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            await ws.send(msg)

    options: dict[str, Any] = {"ping_interval": 20.0 if heartbeat else None, "backlog": 4096}
    if kind == "websockets":
        options["compression"] = None
    async with serve(handler, "127.0.0.1", 0, **options) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        say(f"ready {port}")
        await wait_for_signal()


async def serve_picows(heartbeat: bool) -> None:
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
                transport.send(kind, frame.get_payload_as_memoryview())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request: WSUpgradeRequest) -> WSListener:
        return Echo()

    server = await ws_create_server(
        factory, "127.0.0.1", 0, enable_auto_ping=heartbeat, auto_ping_idle_timeout=20.0,
        backlog=4096,
    )  # fmt: skip
    say(f"ready {server.sockets[0].getsockname()[1]}")
    await wait_for_signal()
    server.close()


async def main(kind: str, heartbeat: bool) -> None:
    if kind.startswith("wsfinally") or kind == "aiohttp" or kind in DEMO_KINDS:
        await serve_aiohttp(kind, heartbeat)
    elif kind.startswith("websockets"):
        await serve_websockets(kind, heartbeat)
    elif kind == "picows":
        await serve_picows(heartbeat)
    else:
        raise SystemExit(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS + DEMO_KINDS)
    parser.add_argument("loop", choices=("asyncio", "uvloop"))
    parser.add_argument("--heartbeat", action="store_true")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.kind, args.heartbeat))
    else:
        asyncio.run(main(args.kind, args.heartbeat))
