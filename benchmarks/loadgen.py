"""The load generator: picows clients on uvloop, driven by JSON commands on stdin.

    python benchmarks/loadgen.py [--cpu N]

One JSON object per stdin line, one JSON result per stdout line:

* ``{"cmd": "echo", "url": U, "conns": C, "size": B, "duration": S}``: C connections, each
  in lockstep (send B bytes, wait for the echo, repeat) for S seconds. Result: messages,
  msg/s, p50/p99 round trip in microseconds, and this process's CPU share (1.0 = one
  core saturated: the generator, not the server, was the limit).
* ``{"cmd": "churn", "url": U, "workers": W, "duration": S}``: W workers, each
  connect + handshake + close, repeatedly. Result: handshakes/s.
* ``{"cmd": "receive", "url": U, "conns": N, "duration": S}``: open N connections and
  count the messages that arrive on all of them for S seconds (broadcast throughput).
* ``{"cmd": "hold", "url": U, "conns": N}``: open N connections and keep them;
  ``{"cmd": "release"}`` closes them (used for memory and for the SIGKILL test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EchoClient(WSListener):  # type: ignore[misc]
    def __init__(self, payload: bytes, samples: list[int]) -> None:
        self.payload = payload
        self.samples = samples
        self.count = 0
        self.sent_at = 0
        self.running = False
        self.transport: WSTransport | None = None
        self.idle = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.running = True
        self.sent_at = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY, self.payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.BINARY:
            return
        now = time.perf_counter_ns()
        self.count += 1
        if len(self.samples) < 500_000:
            self.samples.append(now - self.sent_at)
        if self.running:
            self.sent_at = now
            transport.send(WSMsgType.BINARY, self.payload)
        elif not self.idle.done():
            self.idle.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.idle.done():
            self.idle.set_result(None)


class Quiet(WSListener):  # type: ignore[misc]
    pass


class Counter(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.BINARY or frame.msg_type is WSMsgType.TEXT:
            self.count += 1


async def connect(url: str, factory: Any) -> tuple[WSTransport, Any]:
    return await asyncio.wait_for(
        ws_connect(factory, url, enable_auto_ping=False, websocket_handshake_timeout=10), 15
    )


async def close_all(transports: list[WSTransport]) -> None:
    for t in transports:
        t.send_close(WSCloseCode.OK)
    await asyncio.wait_for(
        asyncio.gather(*(t.wait_disconnected() for t in transports), return_exceptions=True), 15
    )


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1000


async def echo(url: str, conns: int, size: int, duration: float) -> dict[str, Any]:
    payload = os.urandom(size)
    samples: list[int] = []
    pairs = await asyncio.gather(
        *(connect(url, lambda: EchoClient(payload, samples)) for _ in range(conns))
    )
    clients = [listener for _, listener in pairs]
    for client in clients:  # warm-up round trip each, not measured
        client.start()
    await asyncio.sleep(0.05)
    samples.clear()
    for client in clients:
        client.count = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(duration)
    counted = sum(c.count for c in clients)
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds() - cpu0) / elapsed
    for client in clients:
        client.running = False
    await asyncio.wait_for(asyncio.gather(*(c.idle for c in clients)), 10)
    await close_all([t for t, _ in pairs])
    samples.sort()
    return {
        "messages": counted,
        "msg_per_s": counted / elapsed,
        "p50_us": percentile(samples, 0.50),
        "p99_us": percentile(samples, 0.99),
        "cpu": cpu,
    }


async def churn(url: str, workers: int, duration: float) -> dict[str, Any]:
    done = 0
    failures = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done, failures
        while time.perf_counter() < deadline:
            try:
                transport, _ = await connect(url, Quiet)
                transport.send_close(WSCloseCode.OK)
                await asyncio.wait_for(transport.wait_disconnected(), 5)
                done += 1
            except (OSError, asyncio.TimeoutError, Exception):
                failures += 1

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    return {"handshakes": done, "per_s": done / elapsed, "failures": failures,
            "cpu": (cpu_seconds() - cpu0) / elapsed}  # fmt: skip


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    held: list[WSTransport] = []
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "echo":
                out = await echo(cmd["url"], cmd["conns"], cmd["size"], cmd["duration"])
            elif cmd["cmd"] == "churn":
                out = await churn(cmd["url"], cmd["workers"], cmd["duration"])
            elif cmd["cmd"] == "hold":
                t0 = time.perf_counter()
                for start in range(0, cmd["conns"], 500):
                    batch = range(start, min(cmd["conns"], start + 500))
                    pairs = await asyncio.gather(*(connect(cmd["url"], Quiet) for _ in batch))
                    held.extend(t for t, _ in pairs)
                out = {"held": len(held), "seconds": time.perf_counter() - t0}
            elif cmd["cmd"] == "receive":  # open N, count what arrives for S seconds
                pairs = await asyncio.gather(
                    *(connect(cmd["url"], Counter) for _ in range(cmd["conns"]))
                )
                await asyncio.sleep(0.2)  # let the broadcast reach everyone first
                start = sum(c.count for _, c in pairs)
                t0 = time.perf_counter()
                await asyncio.sleep(cmd["duration"])
                got = sum(c.count for _, c in pairs) - start
                elapsed = time.perf_counter() - t0
                await close_all([t for t, _ in pairs])
                out = {"received": got, "per_s": got / elapsed}
            elif cmd["cmd"] == "release":
                await close_all(held)
                out = {"released": len(held)}
                held.clear()
            else:
                out = {"error": f"unknown command {cmd['cmd']!r}"}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop

    uvloop.run(main())
