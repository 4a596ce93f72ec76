"""Broadcast throughput to 100 readers with and without peers that stopped reading.

    python benchmarks/slow_consumer.py [--runs 3] [--slow 1] [--duration 2]

A wsfinally server (its own process, core 0) broadcasts 256-byte messages with
``send_nowait`` to every connection as fast as it can. 100 picows readers (core 1) count
what they receive. Runs alternate: without slow peers, then with ``--slow`` raw clients
that never read, measured once they have filled their buffers (``--settle``). Reports the
readers' msg/s both ways and the ratio, the time until each
slow peer ended ``slow_consumer``, and the server's RSS growth while they were held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from harness import LoadGen, free_port, rss_kib  # noqa: E402

SERVER = r"""
import asyncio, json, sys, time
from aiohttp import web
import wsfinally

members = set()

async def broadcast():
    msg = b"b" * 256
    while True:
        for conn in list(members):
            conn.send_nowait(msg)
        await asyncio.sleep(0)

@wsfinally.endpoint()
async def ws(conn):
    members.add(conn)
    conn.on_end(lambda e: (members.discard(conn), print(json.dumps(
        {"ended": e.reason.value, "after_s": round(e.duration, 3), "t": time.time()}),
        flush=True)))
    async for _ in conn:
        pass

async def main():
    app = web.Application()
    wsfinally.setup(app, send_limit=256 * 1024, slow_consumer_timeout=float(sys.argv[2]))
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    print(json.dumps({"ready": True}), flush=True)
    task = asyncio.create_task(broadcast())
    await asyncio.Event().wait()

import uvloop
uvloop.run(main())
"""


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(port), str(args.timeout),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.sched_setaffinity(server.pid, {0})
    assert server.stdout is not None
    await asyncio.wait_for(server.stdout.readline(), 30)
    url = f"ws://127.0.0.1:{port}/ws"
    lg = await LoadGen().start()
    without: list[float] = []
    with_slow: list[float] = []
    detections: list[float] = []
    rss_growth: list[int] = []
    try:
        for _ in range(args.runs):
            r = await lg.run(cmd="receive", url=url, conns=100, duration=args.duration)
            without.append(r["per_s"])
            before = rss_kib(server.pid)
            slow = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "wsfinally.testing.rawclient",
                    url,
                    "noread",
                    stdout=asyncio.subprocess.DEVNULL,
                )
                for _ in range(args.slow)
            ]
            # let them fill their kernel buffers and reach the send limit: from then on the
            # broadcast only meets refusals there (the filling itself is bounded work)
            await asyncio.sleep(args.settle)
            r = await lg.run(cmd="receive", url=url, conns=100, duration=args.duration)
            with_slow.append(r["per_s"])
            rss_growth.append(rss_kib(server.pid) - before)
            ended = 0
            deadline = time.monotonic() + args.timeout + 10
            while ended < args.slow and time.monotonic() < deadline:
                line = await asyncio.wait_for(server.stdout.readline(), args.timeout + 10)
                e = json.loads(line)
                if e.get("ended") == "slow_consumer":
                    ended += 1
                    detections.append(e["after_s"])
            for p in slow:
                p.kill()
                await p.wait()
    finally:
        await lg.stop()
        server.kill()
        await server.wait()
    ratio = statistics.median(with_slow) / statistics.median(without)
    print(f"\nbroadcast to 100 readers, {args.slow} slow peer(s), send_limit 256 KiB, "
          f"slow_consumer_timeout {args.timeout} s, {args.runs} runs\n")  # fmt: skip
    print("| | msg/s received by the 100 readers (median) |")
    print("|---|---:|")
    print(f"| without slow peers | {statistics.median(without):,.0f} |")
    print(f"| with {args.slow} slow peer(s) | {statistics.median(with_slow):,.0f} |")
    print(f"\nthroughput ratio with/without: {ratio:.2f}")
    if detections:
        print(f"slow peers ended slow_consumer after {min(detections):.2f}–{max(detections):.2f} s "
              f"(connection age at its ending; timeout {args.timeout} s)")  # fmt: skip
    print(f"server RSS growth while {args.slow} slow peer(s) were held: "
          f"median {statistics.median(rss_growth)} KiB")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow", type=int, default=1)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=6.0, help="slow_consumer_timeout")
    parser.add_argument("--settle", type=float, default=1.5, help="s before measuring")
    asyncio.run(run(parser.parse_args()))
