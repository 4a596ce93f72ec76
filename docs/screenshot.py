"""Makes docs/dashboard.png: the demo app under a scripted mix of endings, its dashboard in
headless Chromium (tests/browser.py). Loopback only, about 40 s, every client bounded.

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import chromium_launcher  # noqa: E402
from support import Client  # noqa: E402
from wsfinally.demo import make_app  # noqa: E402

SCENARIOS = [
    ("close:1000", ["hi"]), ("close:4001", ["hi", "there"]), ("fin", ["a"]), ("rst", []),
    ("hold", ["close"]), ("garbage", []), ("oversize:5000", []), ("burst:3", []),
]  # fmt: skip


async def main() -> None:
    app = make_app(metrics=True, dashboard=True, ping_interval=0.5, max_message_size=4096)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    url = f"ws://127.0.0.1:{port}/ws"
    rng = random.Random(6)
    clients: list[Client] = []
    try:
        async with chromium_launcher() as launch:
            chrome = await launch()
            page = await chrome.browser.new_page(viewport={"width": 1280, "height": 960})
            await page.goto(f"http://127.0.0.1:{port}/_wsfinally/")
            for second in range(36):
                for _ in range(rng.randint(0, 4)):
                    scenario, sends = rng.choice(SCENARIOS)
                    clients.append(await Client.raw(url, scenario, *sends))
                if second % 6 == 0:  # some stay open, answering pings, until the end
                    clients.append(await Client.raw(url, "hold", "stay"))
                if second % 9 == 4:  # one dies
                    victim = next((c for c in clients if c.argv[-2:] == ["--send", "stay"]
                                   and c.proc.returncode is None), None)  # fmt: skip
                    if victim is not None:
                        await victim.stop()
                await asyncio.sleep(1)
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
    finally:
        for c in clients:
            await c.stop()
        await runner.cleanup()
    print("written", ROOT / "docs" / "dashboard.png")


if __name__ == "__main__":
    asyncio.run(main())
