"""Time from cause to Ending for every exit path of the specification suite.

    python benchmarks/endings.py [--runs 20] [--loop asyncio|uvloop]

Each run: a fresh client process connects to an in-process server, is told to act
(or is signalled, or the server shuts down), and the time from that moment to the
first end callback is recorded. Prints a Markdown table (median, p90, max in ms)
and writes benchmarks/results/endings-<loop>.json. The cause is taken when the
harness tells the client to act, so figures include the pipe and process wake-up.
Heartbeat and close-timeout paths run with the short settings of the suite
(0.3 s + 0.3 s; 0.3 s), so their figures are those bounds, not the defaults'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import Client, Probe  # noqa: E402
from test_exit_paths_functional import PATHS, ExitPath, drive  # noqa: E402


async def once(path: ExitPath) -> tuple[float, str]:
    p = await Probe("endpoint", path.settings, path.runner).start()
    client = await Client.raw(p.url, path.scenario, *path.sends, wait=True)
    try:
        conn = await p.next_conn()
        await client.expect("ready")
        ending, elapsed, stopping = await drive(path, p, client, conn)
        if stopping is not None:
            await stopping
        return elapsed, ending.reason.value
    finally:
        await client.stop()
        await p.stop()


async def main(runs: int) -> list[dict[str, Any]]:
    rows = []
    for path in PATHS:
        times = []
        reasons = set()
        for _ in range(runs):
            elapsed, reason = await once(path)
            times.append(elapsed * 1000)
            reasons.add(reason)
        times.sort()
        rows.append({
            "path": path.id, "reason": "/".join(sorted(reasons)), "runs": runs,
            "median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "max_ms": round(times[-1], 2),
            "settings": path.settings,
        })  # fmt: skip
        print(f"{path.id}: median {rows[-1]['median_ms']} ms", file=sys.stderr)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        rows = uvloop.run(main(args.runs))
    else:
        rows = asyncio.run(main(args.runs))
    import aiohttp

    print(f"\n{args.loop}, aiohttp {aiohttp.__version__}, Python {sys.version.split()[0]}, "
          f"{args.runs} runs per path\n")  # fmt: skip
    print("| exit path | reason | median ms | p90 ms | max ms |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['reason']} | {r['median_ms']} | {r['p90_ms']} | {r['max_ms']} |")
    out = ROOT / "benchmarks" / "results" / f"endings-{args.loop}.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nwritten {out.relative_to(ROOT)}")
