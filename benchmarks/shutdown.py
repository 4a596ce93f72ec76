"""Graceful shutdown with many open connections: SIGTERM -> every client has its 1001
-> the process has exited.

    python benchmarks/shutdown.py [--connections 1000] [--runs 3] [--loop uvloop|asyncio]

Server: ``wsfinally serve`` (its own process); clients: benchmarks/holdclients.py
(another process). Prints, per run, the time from SIGTERM to the last 1001 seen by
the clients and to the server's exit, and the close codes the clients received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def lines(proc: asyncio.subprocess.Process, want: str, timeout: float) -> str:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"process ended before {want!r}")
        line = raw.decode().strip()
        if want in line:
            return line


async def once(n: int, loop: str, deadline: float) -> dict[str, float | int | str]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsfinally", "serve", "--port", "0", "--log-format", "json",
        "--loop", loop, "--shutdown-timeout", str(deadline),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    started = json.loads(await lines(server, "server.started", 30))
    url = started["urls"][0].replace("http://", "ws://") + "ws"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "holdclients.py"), url, str(n),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    endings: dict[str, int] = {}

    async def drain_server() -> None:
        # read the log from the start: a server whose stdout pipe fills stops serving
        assert server.stdout is not None
        while line := await server.stdout.readline():
            if b'"connection.ended"' in line:
                e = json.loads(line)
                key = f"{e['reason']}/{e['code']}/{'clean' if e['clean'] else 'unclean'}"
                endings[key] = endings.get(key, 0) + 1
        await server.wait()

    drain = asyncio.create_task(drain_server())
    try:
        await lines(holder, "open", 120)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.shield(drain), deadline + 10)
        exited = time.monotonic() - sent
        report = json.loads((await lines(holder, "closed", 30)).split(" ", 1)[1])
        codes = report["codes"]
        last = float(report["last_at"]) - sent
        return {"connections": n, "last_1001_s": round(last, 3), "exit_s": round(exited, 3),
                "codes": json.dumps(codes), "endings": json.dumps(endings),
                "exit_code": server.returncode or 0}  # fmt: skip
    finally:
        for proc in (holder, server):
            if proc.returncode is None:
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)


async def main(n: int, runs: int, loop: str, deadline: float) -> None:
    rows = [await once(n, loop, deadline) for _ in range(runs)]
    print(f"\nshutdown with {n} open connections, server loop {loop}, "
          f"deadline {deadline} s, {os.cpu_count()} cores\n")  # fmt: skip
    print("| run | all 1001 received (s) | process exited (s) | codes clients got | "
          "endings logged | exit code |")  # fmt: skip
    print("|---:|---:|---:|---|---|---:|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['last_1001_s']} | {r['exit_s']} | {r['codes']} | {r['endings']} "
              f"| {r['exit_code']} |")  # fmt: skip
    med = statistics.median(float(r["exit_s"]) for r in rows)
    print(f"\nmedian exit: {med:.3f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--deadline", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.runs, args.loop, args.deadline))
