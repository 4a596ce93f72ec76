"""Side-by-side benchmark of wsfinally and its peers, in one run, on this machine.

    python benchmarks/harness.py            # make bench: the full run (< 15 min)
    python benchmarks/harness.py --quick    # make bench-quick: a smoke run (< 2 min)
    python benchmarks/harness.py --metrics-overhead   # only metrics on vs off (~1 min)

Every server runs in its own process pinned to core 0; the load generator (picows
clients on uvloop, benchmarks/loadgen.py) runs in another pinned to core 1 and reports
its own CPU share: a point where it passed 90 % is flagged, the generator and not the
server was the limit there. The servers alternate in short slices within each round
(the order rotates every round) so that the machine's drift hits all alike; each point
is repeated and the median kept. Ratios are to raw aiohttp measured in the same run.

Writes benchmarks/results/latest.{json,md} and PNG plots next to them (quick mode:
quick.{json,md} and quick-*.png, so a smoke run never replaces the full results).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT))

import shutdown as shutdown_bench  # noqa: E402
from servers import DEMO_KINDS, KINDS  # noqa: E402

SERVER_CPU, LOADGEN_CPU = 0, 1
#: asyncio reads with sock.recv(256 KiB): glibc then grows and trims its heap (or maps and
#: unmaps) on every read, and which of its modes a process falls into is chance — the same
#: server measured 38k or 93k msg/s (4 KiB, 100 connections), raw aiohttp alike. Pinning the
#: thresholds takes that chance out of the throughput comparison (not of the memory one).
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "67108864"}
BASELINE = ("aiohttp", "asyncio")
SERVE = ("wsfinally-serve", "uvloop")  # `wsfinally serve`: uvloop by default
#: The demo app with metrics off and on (/metrics scraped every second while it is measured).
METRICS_PAIRS = [(kind, "uvloop") for kind in DEMO_KINDS]
SCRAPE_EVERY = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(
        self, kind: str, loop: str, heartbeat: bool = False, pinned_allocator: bool = True
    ) -> None:
        self.kind, self.loop, self.heartbeat = kind, loop, heartbeat
        self.env = {**os.environ, **(ALLOCATOR_ENV if pinned_allocator else {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.scrapes = 0  # /metrics answers read (demo-metrics only)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.loop}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Server:
        if self.kind == "wsfinally-serve":
            self.port = free_port()
            argv = [sys.executable, "-m", "wsfinally", "serve", "--port", str(self.port),
                    "--loop", self.loop]  # fmt: skip
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env=self.env,
            )  # fmt: skip
            os.sched_setaffinity(self.proc.pid, {SERVER_CPU})
            await self._wait_listening()
            return self
        argv = [sys.executable, str(ROOT / "servers.py"), self.kind, self.loop,
                "--cpu", str(SERVER_CPU)]  # fmt: skip
        if self.heartbeat:
            argv.append("--heartbeat")
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=self.env
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        self.port = int(line.split()[1])
        return self

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start listening")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class LoadGen:
    async def start(self) -> LoadGen:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "loadgen.py"), "--cpu", str(LOADGEN_CPU),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await self._read(30)
        return self

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("load generator exited")
        out: dict[str, Any] = json.loads(line)
        return out

    async def run(self, timeout: float = 120, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        out = await self._read(timeout)
        if "error" in out:
            raise RuntimeError(f"load generator: {out['error']} ({cmd})")
        return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def scraping(server: Server) -> None:
    """GET /metrics every SCRAPE_EVERY seconds, as Prometheus would, until cancelled."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
                body = await resp.read()
                if resp.status != 200 or b"wsfinally_connections_open" not in body:
                    raise RuntimeError(f"{server.name}: /metrics answered {resp.status}")
            server.scrapes += 1
            await asyncio.sleep(SCRAPE_EVERY)


async def measured(lg: LoadGen, server: Server, **cmd: Any) -> dict[str, Any]:
    """One load-generator run against ``server``, scraped meanwhile when it has metrics."""
    if server.kind != "demo-metrics":
        return await lg.run(url=server.url, **cmd)
    scraper = asyncio.create_task(scraping(server))
    try:
        return await lg.run(url=server.url, **cmd)
    finally:
        scraper.cancel()
        await asyncio.wait([scraper])
        if not scraper.cancelled() and scraper.exception() is not None:
            raise RuntimeError("the /metrics scraper failed") from scraper.exception()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def echo_and_churn(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    lg = await LoadGen().start()
    points = [(c, s) for c in args.conns for s in args.sizes]
    out: dict[str, Any] = {"echo": {}, "churn": {}}
    try:
        for conns, size in points:
            key = f"{conns}c/{size}B"
            raw: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
            for r in range(args.rounds):
                order = servers[r % len(servers) :] + servers[: r % len(servers)]
                for server in order:
                    res = await measured(lg, server, cmd="echo", conns=conns, size=size,
                                         duration=args.slice)  # fmt: skip
                    raw[server.name].append(res)
            out["echo"][key] = {
                name: {
                    "msg_per_s": median([r["msg_per_s"] for r in runs]),
                    "p50_us": median([r["p50_us"] for r in runs]),
                    "p99_us": median([r["p99_us"] for r in runs]),
                    "loadgen_cpu": max(r["cpu"] for r in runs),
                    "runs": [round(r["msg_per_s"]) for r in runs],
                }
                for name, runs in raw.items()
            }
            print(f"echo {key}: done", file=sys.stderr, flush=True)
        raw_churn: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for server in order:
                res = await measured(lg, server, cmd="churn", workers=10, duration=args.slice)
                raw_churn[server.name].append(res)
        out["churn"] = {
            name: {
                "per_s": median([r["per_s"] for r in runs]),
                "failures": sum(r["failures"] for r in runs),
                "loadgen_cpu": max(r["cpu"] for r in runs),
            }
            for name, runs in raw_churn.items()
        }
        print("churn: done", file=sys.stderr, flush=True)
    finally:
        await lg.stop()
    return out


async def idle_memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth per idle connection, heartbeat on, fresh server per measurement."""
    out: dict[str, Any] = {}
    for kind, loop in args.memory_servers:
        for n in args.memory_conns:
            server = await Server(kind, loop, heartbeat=True, pinned_allocator=False).start()
            lg = await LoadGen().start()
            try:
                assert server.proc is not None
                before = rss_kib(server.proc.pid)
                await lg.run(cmd="hold", url=server.url, conns=n, timeout=300)
                await asyncio.sleep(0.5)  # let the server finish accepting before reading RSS
                after = rss_kib(server.proc.pid)
                out.setdefault(f"{kind}/{loop}", {})[str(n)] = round((after - before) / n, 2)
            finally:
                await lg.stop()
                await server.stop()
        print(f"memory {kind}/{loop}: done", file=sys.stderr, flush=True)
    return out


async def killed_clients(n: int) -> dict[str, Any]:
    """n clients SIGKILLed at once: time until wsfinally has recorded all n endings."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsfinally", "serve", "--port", str(port), "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    os.sched_setaffinity(proc.pid, {SERVER_CPU})
    assert proc.stdout is not None
    reasons: dict[str, int] = {}
    last_ts = 0.0
    opened = asyncio.Event()
    listening = asyncio.Event()
    n_open = 0

    async def read_log() -> None:
        nonlocal last_ts, n_open
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if b'"server.started"' in line:
                listening.set()
            elif b'"connection.opened"' in line:
                n_open += 1
                if n_open == n:
                    opened.set()
            elif b'"connection.ended"' in line:
                e = json.loads(line)
                reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
                last_ts = max(last_ts, e["ts"])

    reader = asyncio.create_task(read_log())
    await asyncio.wait_for(listening.wait(), 30)
    lg = await LoadGen().start()
    try:
        await lg.run(cmd="hold", url=f"ws://127.0.0.1:{port}/ws", conns=n, timeout=120)
        await asyncio.wait_for(opened.wait(), 30)
        killed_at = time.time()
        lg.proc.kill()
        deadline = time.monotonic() + 10
        while sum(reasons.values()) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return {"clients": n, "ended": sum(reasons.values()), "reasons": reasons,
                "all_ended_s": round(last_ts - killed_at, 3)}  # fmt: skip
    finally:
        await lg.stop()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base and base == base else "—"


def metrics_report(results: dict[str, Any]) -> list[str]:
    """Metrics on vs off: the demo app, same run, same loop; ratio on / off."""
    on, off = (f"{kind}/{loop}" for kind, loop in reversed(METRICS_PAIRS))
    if off not in results["churn"] or on not in results["churn"]:
        return []
    lines = [f"## metrics overhead (demo app, `{on}` scraped every {SCRAPE_EVERY:g} s vs `{off}`)",
             "", "| point | metrics off | metrics on | on / off |", "|---|---:|---:|---:|"]  # fmt: skip
    for key, per in results["echo"].items():
        a, b = per[off]["msg_per_s"], per[on]["msg_per_s"]
        lines.append(f"| echo {key} msg/s | {a:,.0f} | {b:,.0f} | {ratio(b, a)} |")
    a, b = results["churn"][off]["per_s"], results["churn"][on]["per_s"]
    lines += [f"| churn handshakes/s | {a:,.0f} | {b:,.0f} | {ratio(b, a)} |", ""]
    return lines


def report(results: dict[str, Any], names: list[str]) -> str:
    lines = [f"# wsfinally benchmarks — {results['meta']['date']}", "",
             f"{results['meta']['machine']}; Python {results['meta']['python']}; "
             f"{results['meta']['versions']}; {results['meta']['mode']} run, "
             f"{results['meta']['rounds']} round(s) of {results['meta']['slice_s']} s slices, "
             "medians. Ratios: to raw aiohttp on asyncio in the same run; "
             "‡ the load generator's core was saturated (> 90 %). Echo and churn servers run "
             "with glibc's mmap/trim thresholds pinned (see ALLOCATOR_ENV in harness.py); the "
             "memory servers with the defaults.", ""]  # fmt: skip
    base = "/".join(BASELINE)
    for key, per in results["echo"].items():
        lines += [f"## echo {key}", "",
                  "| server | msg/s | × aiohttp/asyncio | × aiohttp same loop | p50 µs | p99 µs |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name in names:
            r = per[name]
            loop = name.split("/")[1]
            same = per.get(f"aiohttp/{loop}", {}).get("msg_per_s", float("nan"))
            flag = " ‡" if r["loadgen_cpu"] > 0.9 else ""
            lines.append(
                f"| {name} | {r['msg_per_s']:,.0f}{flag} | {ratio(r['msg_per_s'], per[base]['msg_per_s'])} "
                f"| {ratio(r['msg_per_s'], same)} | {r['p50_us']:.0f} | {r['p99_us']:.0f} |"
            )
        lines.append("")
    lines += ["## connection churn (connect + handshake + close, 10 workers)", "",
              "| server | per s | × aiohttp/asyncio | failures |", "|---|---:|---:|---:|"]  # fmt: skip
    for name in names:
        r = results["churn"][name]
        flag = " ‡" if r["loadgen_cpu"] > 0.9 else ""
        lines.append(f"| {name} | {r['per_s']:,.0f}{flag} | "
                     f"{ratio(r['per_s'], results['churn'][base]['per_s'])} | {r['failures']} |")  # fmt: skip
    lines += ["", "## idle memory per connection, heartbeat on (KiB of server RSS)", "",
              "| server | " + " | ".join(f"{n} conns" for n in results["meta"]["memory_conns"])
              + " | × aiohttp same loop |",
              "|---|" + "---:|" * (len(results["meta"]["memory_conns"]) + 1)]  # fmt: skip
    for name, per_n in results["memory"].items():
        loop = name.split("/")[1]
        base_mem = results["memory"].get(f"aiohttp/{loop}", {})
        last = str(results["meta"]["memory_conns"][-1])
        cells = " | ".join(f"{per_n.get(str(n), float('nan')):.1f}"
                           for n in results["meta"]["memory_conns"])  # fmt: skip
        lines.append(f"| {name} | {cells} | {ratio(per_n[last], base_mem.get(last, 0))} |")
    lines += ["", *metrics_report(results)]
    k = results["killed"]
    s = results["shutdown"]
    lines += ["## endings", "",
              f"- {k['clients']} clients SIGKILLed at once: all {k['ended']} endings recorded "
              f"{k['all_ended_s']} s after the kill ({k['reasons']}).",
              f"- shutdown with {s['connections']} open connections (`wsfinally serve`, uvloop): "
              f"every client had its 1001 after {s['last_1001_s']} s, the process exited after "
              f"{s['exit_s']} s with code {s['exit_code']} ({s['codes']}).", ""]  # fmt: skip
    return "\n".join(lines)


def plots(results: dict[str, Any], names: list[str], prefix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results["echo"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = [results["echo"][key][n]["msg_per_s"] for n in names]
        ax.barh(
            names, values, color=["#2a7" if n.startswith("wsfinally") else "#999" for n in names]
        )
        ax.set_title(f"echo {key}")
        ax.set_xlabel("msg/s")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{prefix}echo.png", dpi=100)
    plt.close(fig)
    mem = results["memory"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    last = str(results["meta"]["memory_conns"][-1])
    ax.barh(list(mem), [mem[n][last] for n in mem])
    ax.set_title(f"idle RSS per connection, {last} connections, heartbeat on")
    ax.set_xlabel("KiB")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{prefix}memory.png", dpi=100)
    plt.close(fig)


async def main(args: argparse.Namespace) -> None:
    import aiohttp
    import picows
    import uvloop
    import websockets

    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    if args.metrics_overhead:
        await metrics_overhead(args)
        return
    pairs = [(k, loop) for k in KINDS for loop in ("asyncio", "uvloop")] + [SERVE] + METRICS_PAIRS
    if args.quick:
        pairs = [(k, lp) for k, lp in pairs if k != "websockets-deflate"]
    servers = [await Server(k, lp).start() for k, lp in pairs]
    names = [s.name for s in servers]
    try:
        results = await echo_and_churn(args, servers)
    finally:
        for s in servers:
            await s.stop()
    results["memory"] = await idle_memory(args)
    results["killed"] = await killed_clients(1000)
    print("killed clients: done", file=sys.stderr, flush=True)
    results["shutdown"] = await shutdown_bench.once(args.shutdown_conns, "uvloop", 5.0)
    results["meta"] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": f"aiohttp {aiohttp.__version__}, websockets {websockets.__version__}, "
        f"picows {getattr(picows, '__version__', '?')}, uvloop {uvloop.__version__}",
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "slice_s": args.slice,
        "memory_conns": args.memory_conns,
        "elapsed_s": round(time.monotonic() - started, 1),
    }  # fmt: skip
    text = report(results, names)
    stem = "quick" if args.quick else "latest"  # a smoke run never replaces the full results
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{stem}.md").write_text(text)
    plots(results, names, prefix="quick-" if args.quick else "")
    print(text)
    print(f"\n(took {results['meta']['elapsed_s']} s; written {RESULTS}/{stem}.md, {stem}.json "
          "and the plots)")  # fmt: skip


async def metrics_overhead(args: argparse.Namespace) -> None:
    """Only the demo app with metrics off and on: echo and churn, alternating slices."""
    started = time.monotonic()
    servers = [await Server(k, lp).start() for k, lp in METRICS_PAIRS]
    try:
        results = await echo_and_churn(args, servers)
    finally:
        for s in servers:
            await s.stop()
    scrapes = servers[1].scrapes
    text = "\n".join([
        f"# metrics overhead — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}", "",
        f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{args.rounds} round(s) of {args.slice} s slices, medians; {scrapes} scrapes of "
        "/metrics during the metrics-on slices.", "",
        *metrics_report(results),
    ])  # fmt: skip
    (RESULTS / "metrics-overhead.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "metrics-overhead.md").write_text(text)
    print(text)
    print(f"(took {time.monotonic() - started:.1f} s; written {RESULTS}/metrics-overhead.md)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run for CI (< 2 min)")
    parser.add_argument("--metrics-overhead", action="store_true",
                        help="only the demo app with metrics on vs off (~1 min)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None,
                        help="with --metrics-overhead: rounds (default 5)")  # fmt: skip
    args = parser.parse_args()
    if args.metrics_overhead:
        args.rounds, args.slice = args.rounds or 5, 2.0
        args.conns, args.sizes = [1, 100], [256]
    elif args.quick:
        args.rounds, args.slice = 1, 0.4
        args.conns, args.sizes = [100], [256]
        args.memory_conns = [1000]
        args.memory_servers = [("aiohttp", "asyncio"), ("wsfinally-endpoint", "asyncio")]
        args.shutdown_conns = 1000
    else:
        args.rounds, args.slice = 3, 1.5
        args.conns, args.sizes = [1, 100], [32, 256, 4096]
        args.memory_conns = [1000, 10000]
        args.memory_servers = [(k, "asyncio") for k in KINDS if k != "websockets-deflate"] + [
            ("aiohttp", "uvloop"), ("wsfinally-endpoint", "uvloop")]  # fmt: skip
        args.shutdown_conns = 10000
    asyncio.run(main(args))
