"""Headless Chromium against the demo server: a real browser's websocket endings."""

from __future__ import annotations

from typing import Any

from browser import chromium_launcher
from support import Probe, seconds
from wsfinally import EndReason


async def test_a_killed_browser_ends_its_websocket_as_connection_lost(probe: Any) -> None:
    p: Probe = await probe()
    async with chromium_launcher() as launch:
        chrome = await launch()
        page = await chrome.browser.new_page()
        await page.goto(p.url.replace("ws://", "http://").replace("/ws", "/missing"))
        reply = await page.evaluate(
            """url => new Promise((ok, fail) => {
                const ws = new WebSocket(url);
                ws.onopen = () => ws.send('hi');
                ws.onmessage = e => ok(e.data);
                ws.onerror = () => fail('websocket error');
            })""",
            p.url,
        )
        assert reply == "hi/answer"
        conn = await p.next_conn()
        chrome.kill()
        ending = await p.ended(conn, seconds(5))
        assert ending.reason is EndReason.CONNECTION_LOST, ending
        assert ending.code == 1006 and not ending.clean
