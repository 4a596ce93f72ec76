"""What metrics cost per connection and per scrape, measured in-process on real connections.

    python benchmarks/metrics_cost.py [--conns 1000]

The echo benchmark's ratio (harness.py --metrics-overhead) is the end-to-end figure, but on a
shared machine its noise is larger than the effect; this times the pieces instead: the
observer's work when a connection opens and ends (run on a real accepted connection, the
gauge going up and back down), a heartbeat pong, and one scrape of /metrics with N open
connections (loopback clients, held open, bounded in number).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from aiohttp import web

import wsfinally
from wsfinally.ending import Ending, EndReason
from wsfinally.metrics import setup_metrics


def per_call_us(fn: object, n: int) -> float:
    call = fn  # type: ignore[assignment]
    started = time.perf_counter()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.perf_counter() - started) / n * 1e6


async def main(conns: int) -> None:
    app = web.Application()
    wsfinally.setup(app)
    metrics = setup_metrics(app)
    accepted: list[wsfinally.Connection] = []

    @wsfinally.endpoint()
    async def hold(conn: wsfinally.Connection) -> None:
        accepted.append(conn)
        async for _ in conn:
            pass

    app.router.add_get("/ws", hold)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(f"ws://{base}/ws") for _ in range(conns)]
        deadline = time.monotonic() + 30
        while len(accepted) < conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        conn = accepted[0]
        ending = Ending(EndReason.CLIENT_CLOSED, 1000, True, None, 1.5, 3, 3, 30, 30)

        def open_and_end() -> None:
            metrics.opened(conn)
            metrics.ended(conn, ending)

        n = 100_000
        cycle = min(per_call_us(open_and_end, n) for _ in range(3))
        pong = min(per_call_us(lambda: metrics.pong(conn, 0.0005), n) for _ in range(3))
        scrape = min(per_call_us(metrics.expose, 200) for _ in range(3))
        async with session.get(f"http://{base}/metrics") as resp:
            assert resp.status == 200
        print(f"open + end of one connection (observer work): {cycle:.2f} µs")
        print(f"one heartbeat pong: {pong:.2f} µs")
        print(f"one scrape with {len(accepted)} open connections: {scrape / 1000:.2f} ms")
        for ws in sockets:
            await ws.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000, help="open connections (≤ 5000)")
    args = parser.parse_args()
    asyncio.run(main(min(args.conns, 5000)))
