"""Headless Chromium against the demo server: a real browser's websocket endings."""

from __future__ import annotations

from typing import Any

from browser import chromium_launcher
from hubsupport import Node
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


async def test_chat_page_in_two_browsers_shows_a_killed_browsers_leave_with_its_reason(
    tmp_path: Any,
) -> None:
    node = await Node.start()
    try:
        async with chromium_launcher() as launch:
            first, second = await launch(), await launch()
            errors: list[str] = []
            alice = await first.browser.new_page()
            alice.on("pageerror", lambda exc: errors.append(str(exc)))
            alice.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await alice.goto(f"{node.base}/chat?room=lobby&name=alice")
            await alice.wait_for_function("document.getElementById('count').textContent === '1'")
            bob = await second.browser.new_page()
            await bob.goto(f"{node.base}/chat?room=lobby&name=bob")
            for page in (alice, bob):
                await page.wait_for_function(
                    "document.getElementById('count').textContent === '2'",
                    timeout=seconds(5) * 1000,
                )
            await bob.fill("#text", "hello from bob")
            await bob.click("#send")
            await alice.wait_for_selector("#log li.msg >> text=bob: hello from bob")
            second.kill()  # the whole browser, every process of it, at once
            leave = alice.locator("#log li.leave[data-name='bob']")
            await leave.wait_for(timeout=seconds(5) * 1000)
            assert await leave.get_attribute("data-reason") == "connection_lost"
            assert await alice.locator("#count").text_content() == "1"
            await alice.screenshot(path=str(tmp_path / "chat.png"))
            assert not errors, errors
    finally:
        await node.stop()
