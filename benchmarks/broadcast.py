"""Hub broadcast latency, and how long a dead node's members take to leave.

    python benchmarks/broadcast.py [--members 1000,10000] [--rounds 5] [--redis URL]
                                   [--node-death] [--json PATH]

Broadcast: N members (picows clients in this process, pinned to core 1) join one room;
a sender asks the server to ``hub.broadcast`` one message; the figure is the time from
the send until the last of the N members has it (median and max over ``--rounds``).
``memory``: one server process (core 0). ``redis``: two server processes (core 0) sharing
a Redis, half the members on each, the message sent to the first: the second node's half
gets it through Redis. ``CLOCK_MONOTONIC`` is one clock for every process here.

Node death (``--node-death``): two ``wsfinally serve --redis`` nodes with the default
10 s lease; 100 chat members on the second, a watcher on the first; the second is
SIGKILLed; the figure is the time until the watcher has heard every leave (``node_lost``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from harness import free_port  # noqa: E402

SERVER = r"""
import asyncio, json, sys, resource
from aiohttp import web
import wsfinally
from wsfinally.hub import HUB, setup_hub

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, backend, url, ns = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

@wsfinally.endpoint(ping_interval=None)
async def member(conn):
    await conn.request.app[HUB].join(conn, "bench")
    conn.send_nowait("joined")
    async for _ in conn:
        pass

@wsfinally.endpoint(ping_interval=None)
async def send(conn):
    hub = conn.request.app[HUB]
    async for msg in conn:
        hub.broadcast("bench", msg)

async def main():
    app = web.Application()
    wsfinally.setup(app)
    if backend == "redis":
        setup_hub(app, redis=url, namespace=ns)
    else:
        setup_hub(app)
    app.router.add_get("/member", member)
    app.router.add_get("/send", send)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(15, stop.set)
    await stop.wait()
    await runner.cleanup()

import uvloop
uvloop.run(main())
"""


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _server(port: int, backend: str, url: str, ns: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(port), backend, url, ns,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.sched_setaffinity(proc.pid, {0})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if b"ready" not in line:
        raise RuntimeError(f"server did not start: {line!r}")
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.communicate(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.communicate()


async def broadcast_case(backend: str, members: int, rounds: int, redis: str) -> dict[str, Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    arrivals: dict[int, list[float]] = {}
    joined = [0]
    all_joined = asyncio.get_running_loop().create_future()

    class Member(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            text = frame.get_payload_as_ascii_text()
            if text == "joined":
                joined[0] += 1
                if joined[0] == members and not all_joined.done():
                    all_joined.set_result(None)
                return
            got = arrivals.setdefault(int(text), [])
            got.append(time.monotonic())

    ns = "bench" + uuid.uuid4().hex[:8]
    ports = [free_port()] + ([free_port()] if backend == "redis" else [])
    procs = [await _server(p, backend, redis, ns) for p in ports]
    transports: list[Any] = []
    try:
        sem = asyncio.Semaphore(200)

        async def join(port: int) -> None:
            async with sem:
                t, _ = await asyncio.wait_for(
                    ws_connect(Member, f"ws://127.0.0.1:{port}/member", enable_auto_ping=False),
                    30,
                )
                transports.append(t)

        await asyncio.gather(*(join(ports[i % len(ports)]) for i in range(members)))
        await asyncio.wait_for(all_joined, 60)
        sender, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{ports[0]}/send")
        transports.append(sender)
        results = []
        for seq in range(rounds + 1):  # the first round warms up and is not counted
            sent = time.monotonic()
            sender.send(WSMsgType.TEXT, str(seq).encode())
            deadline = sent + 30
            while len(arrivals.get(seq, ())) < members:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"round {seq}: {len(arrivals.get(seq, ()))}/{members}")
                await asyncio.sleep(0.001)  # the members' frames arrive in this loop
            if seq:
                results.append((max(arrivals[seq]) - sent) * 1000)
            await asyncio.sleep(0.2)  # let both nodes go idle between rounds
        return {
            "backend": backend,
            "members": members,
            "nodes": len(ports),
            "median_ms": round(statistics.median(results), 2),
            "max_ms": round(max(results), 2),
            "rounds": rounds,
        }
    finally:
        for t in transports:
            t.disconnect()
        for proc in procs:
            await _stop(proc)


async def node_death_case(redis: str, members: int = 100) -> dict[str, Any]:
    import aiohttp

    ns = "bench" + uuid.uuid4().hex[:8]
    ports = [free_port(), free_port()]
    procs = []
    for port in ports:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wsfinally", "serve", "--port", str(port), "--redis", redis,
            "--hub-namespace", ns, "--log-format", "json",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for port in ports:  # wait until each node listens
                for _ in range(300):
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
            watcher = await session.ws_connect(f"http://127.0.0.1:{ports[0]}/chat?name=w")
            doomed = [
                await session.ws_connect(f"http://127.0.0.1:{ports[1]}/chat?name=m{i}")
                for i in range(members)
            ]
            joins, leaves, reasons = 0, 0, set()
            killed = 0.0
            while True:
                msg = await asyncio.wait_for(watcher.receive(), 60)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"the watcher's connection ended: {msg}")
                m = json.loads(msg.data)
                if m["type"] == "join":
                    joins += 1
                    if joins == members:
                        killed = time.monotonic()
                        os.killpg(procs[1].pid, signal.SIGKILL)
                elif m["type"] == "leave":
                    leaves += 1
                    reasons.add(m["reason"])
                    if leaves == members:
                        break
            took = time.monotonic() - killed
            for ws in doomed:
                await ws.close()
            await watcher.close()
        return {"members": members, "lease_ttl_s": 10.0, "all_left_after_s": round(took, 2),
                "reasons": sorted(reasons)}  # fmt: skip
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--node-death", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    _raise_nofile()
    os.sched_setaffinity(0, {1})
    rows = []
    for n in (int(x) for x in args.members.split(",") if x):
        for backend in args.backends.split(","):
            row = await broadcast_case(backend, n, args.rounds, args.redis)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| backend | nodes | members | until the last has it: median ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['nodes']} | {r['members']:,} | {r['median_ms']} | "
              f"{r['max_ms']} |")  # fmt: skip
    out: dict[str, Any] = {"broadcast": rows}
    if args.node_death:
        death = await node_death_case(args.redis)
        out["node_death"] = death
        print(f"\nnode death: {death['members']} members of a SIGKILLed node left the others "
              f"after {death['all_left_after_s']} s (lease 10 s), reasons {death['reasons']}")  # fmt: skip
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(out, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
