"""Load process: open N websockets to URL, hold them, report how they were closed.

    python benchmarks/holdclients.py URL N

Prints ``open N <seconds>`` once all are connected, then one line when all have
closed: ``closed {"closed": n, "codes": {...}, "errors": n, "last_at": monotonic}``. aiohttp's client
answers close frames itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def hold(session: aiohttp.ClientSession, url: str, codes: Counter[int], ready: asyncio.Event,
               opened: list[int], n: int, last: list[float]) -> None:  # fmt: skip
    async with session.ws_connect(url, autoping=True, heartbeat=None) as ws:
        opened[0] += 1
        if opened[0] == n:
            ready.set()
        async for _ in ws:
            pass
        codes[ws.close_code or 0] += 1
        last[0] = time.monotonic()


async def main(url: str, n: int) -> None:
    codes: Counter[int] = Counter()
    ready = asyncio.Event()
    opened = [0]
    last = [0.0]
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(hold(session, url, codes, ready, opened, n, last)))
            if len(tasks) % 100 == 0:
                await asyncio.sleep(0)  # let the handshakes through
        await asyncio.wait_for(ready.wait(), 120)
        print(f"open {n} {time.monotonic() - started:.3f}", flush=True)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = sum(1 for r in results if isinstance(r, BaseException))
    report = {"closed": sum(codes.values()), "codes": codes, "errors": errors, "last_at": last[0]}
    print("closed " + json.dumps(report), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
