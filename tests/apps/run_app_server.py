"""A user's app in the classic style, served by ``web.run_app`` (graceful-shutdown test).

Prints ``listening <port>``, then for each connection ``after-loop <n>`` when the
code after ``async for`` runs and ``ended <reason> <code>`` from its end callback.
"""

from __future__ import annotations

import socket
import sys

from aiohttp import web

import wsfinally


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def handler(request: web.Request) -> web.StreamResponse:
    async with wsfinally.accept(request) as conn:
        conn.on_end(lambda e: say(f"ended {e.reason.value} {e.code} {e.clean}"))
        n = 0
        async for msg in conn:
            n += 1
            await conn.send(f"{msg}/answer")
        say(f"after-loop {n}")
    return conn.response


def main() -> None:
    app = web.Application()
    wsfinally.setup(app, shutdown_timeout=float(sys.argv[1]))
    app.router.add_get("/ws", handler)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    say(f"listening {sock.getsockname()[1]}")
    loop = None
    if len(sys.argv) > 2 and sys.argv[2] == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, sock=sock, print=None, loop=loop)
    say("exited")


if __name__ == "__main__":
    main()
