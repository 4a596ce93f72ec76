"""The live dashboard in headless Chromium, its access rule, and the demo page's buttons."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from browser import chromium_launcher
from support import ROOT, Client, eventually, seconds
from wsfinally import REGISTRY, Connection, Ending, Observer
from wsfinally.demo import make_app

ARTIFACTS = ROOT / "test-artifacts"
#: WSFINALLY_DOCS_SCREENSHOT=1 also writes the screenshot to docs/dashboard.png.
DOCS_SCREENSHOT = os.environ.get("WSFINALLY_DOCS_SCREENSHOT", "") == "1"


class Seen(Observer):
    """What the server saw: every connection opened and every ending, in order."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.endings: list[tuple[Connection, Ending]] = []

    def opened(self, conn: Connection) -> None:
        self.conns.append(conn)

    def ended(self, conn: Connection, ending: Ending) -> None:
        self.endings.append((conn, ending))

    def opened_on(self, path: str) -> list[Connection]:
        return [c for c in self.conns if c.request.path == path]

    def ending_of(self, conn: Connection) -> Ending | None:
        return next((e for c, e in self.endings if c is conn), None)


@dataclass
class Demo:
    base: str
    app: web.Application
    seen: Seen
    runner: web.AppRunner
    errors: list[str] = field(default_factory=list)


async def start_demo(**options: Any) -> Demo:
    app = make_app(metrics=True, dashboard=True, **options)
    seen = Seen()
    app[REGISTRY].observers.append(seen)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return Demo(f"127.0.0.1:{runner.addresses[0][1]}", app, seen, runner)


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    d = await start_demo()
    yield d
    await d.runner.cleanup()


def watch_errors(page: Any, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))


async def test_dashboard_shows_a_connection_from_another_page_then_its_ending_within_a_second(
    demo: Demo,
) -> None:
    async with chromium_launcher() as launch:
        chrome = await launch()
        dash = await chrome.browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        watch_errors(dash, errors)
        await dash.goto(f"http://{demo.base}/_wsfinally/")
        await dash.wait_for_selector('#status[data-state="live"]', timeout=seconds(5) * 1000)
        # another page, in a context of its own, opens a websocket to the echo route
        other = await (await chrome.browser.new_context()).new_page()
        await other.goto(f"http://{demo.base}/")
        reply = await other.evaluate(
            """url => new Promise((ok, fail) => {
                window.sock = new WebSocket(url);
                window.sock.onopen = () => window.sock.send('hi');
                window.sock.onmessage = e => ok(e.data);
                window.sock.onerror = () => fail('websocket error');
            })""",
            f"ws://{demo.base}/ws",
        )
        assert reply == "hi/answer"
        (conn,) = demo.seen.opened_on("/ws")
        row = f'#open tr[data-id="{conn.id}"]'
        await dash.wait_for_selector(row, timeout=seconds(2) * 1000)
        assert await dash.inner_text(f"{row} td.route") == "/ws"
        open_now = int(await dash.inner_text("#open-now"))
        assert open_now == 2  # this one and the dashboard's own feed
        # the other page closes it with a code of its choice: the ending shows within 1 s
        await other.evaluate("window.sock.close(4321, 'bye from the other page')")
        closed_at = time.monotonic()
        ended = f'#endings tr[data-id="{conn.id}"]'
        await dash.wait_for_selector(ended, timeout=seconds(1) * 1000)
        shown_after = time.monotonic() - closed_at
        assert shown_after < seconds(1), shown_after
        assert await dash.get_attribute(ended, "data-reason") == "client_closed"
        assert await dash.inner_text(f"{ended} td.code") == "4321"
        assert await dash.inner_text(f"{ended} td.clean") == "yes"
        assert await dash.inner_text(f"{ended} td.route") == "/ws"
        await dash.wait_for_selector(row, state="detached", timeout=seconds(1) * 1000)
        ending = demo.seen.ending_of(conn)
        assert ending is not None and (ending.reason.value, ending.code) == ("client_closed", 4321)
        # a few more endings from the demo page's buttons, then a tick of the charts
        for button in ("server-close", "oversize", "violation", "close-code"):
            await other.click(f"#{button}")
        await eventually(lambda: len(demo.seen.endings) == 5, 5, "the buttons' endings")
        await dash.wait_for_function(
            "document.querySelectorAll('#endings tbody tr').length === 5",
            timeout=seconds(3) * 1000,
        )
        await dash.wait_for_function(
            "document.querySelectorAll('#endings-chart rect').length > 0",
            timeout=seconds(3) * 1000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        shot = await dash.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        if DOCS_SCREENSHOT:
            (ROOT / "docs" / "dashboard.png").write_bytes(shot)
        assert errors == []


async def test_demo_page_buttons_end_connections_as_the_page_says(demo: Demo) -> None:
    expected = {
        "close-code": ("/ws", "client_closed", 4002),
        "server-close": ("/ws", "server_closed", 1000),
        "oversize": ("/ws", "message_too_big", 1009),
        "violation": ("/ws/violation", "client_closed", 1002),
        "reload": ("/ws", "client_closed", 1001),
        "navigate": ("/ws", "client_closed", 1001),
    }
    async with chromium_launcher() as launch:
        chrome = await launch()
        page = await chrome.browser.new_page()
        errors: list[str] = []
        watch_errors(page, errors)
        await page.goto(f"http://{demo.base}/")
        await page.fill("#code", "4002")
        for n, (button, (path, reason, code)) in enumerate(expected.items(), 1):
            await page.click(f"#{button}")
            await eventually(lambda n=n: len(demo.seen.endings) >= n, 5, f"{button}'s ending")  # type: ignore[misc]
            conn, ending = demo.seen.endings[n - 1]
            assert (conn.request.path, ending.reason.value, ending.code) == (path, reason, code), (
                button
            )
            if button == "reload":
                await page.wait_for_selector(
                    "#sockets tbody:empty", state="attached", timeout=seconds(5) * 1000
                )
        await page.wait_for_url(f"http://{demo.base}/_wsfinally/", timeout=seconds(5) * 1000)
    # Chromium reports the bad frame it was sent, and only that
    assert errors == [
        f"console: WebSocket connection to 'ws://{demo.base}/ws/violation' failed: "
        "Could not decode a text frame as UTF-8."
    ]


async def fetch(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def feed_status(url: str, **headers: str) -> tuple[int, str]:
    """101 and the snapshot's type, or the HTTP status the upgrade was refused with."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers) as ws:
                first = await ws.receive_json(timeout=seconds(5))
                return 101, first["type"]
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, ""


async def test_access_rule_needs_the_token_from_outside_the_local_networks() -> None:
    # 127.0.0.1 is not "local" here, so this test's client counts as remote
    d = await start_demo(dashboard_token="s3cret t0ken", local_networks=("10.0.0.0/8",))
    base = f"http://{d.base}/_wsfinally/"
    feed = f"ws://{d.base}/_wsfinally/feed"
    try:
        assert await fetch(base) == 403
        assert await fetch(base + "app.js") == 403
        assert await feed_status(feed) == (403, "")
        for wrong in ("?token=s3cret", "?token=", "?token=s3cret%20t0ken2"):
            assert await fetch(base + wrong) == 403
            assert await feed_status(feed + wrong) == (403, "")
        assert await fetch(base, Authorization="Bearer nope") == 403
        token = "?token=s3cret%20t0ken"
        assert await fetch(base + token) == 200
        assert await fetch(base + "app.js" + token) == 200
        assert await fetch(base + "app.css" + token) == 200
        assert await feed_status(feed + token) == (101, "snapshot")
        assert await fetch(base, Authorization="Bearer s3cret t0ken") == 200
        assert await feed_status(feed, Authorization="Bearer s3cret t0ken") == (101, "snapshot")
        # the page passes the token on to its files and its feed
        async with aiohttp.ClientSession() as session, session.get(base + token) as resp:
            page = await resp.text()
        assert 'src="app.js?token=s3cret%20t0ken"' in page
        # the rule guards the dashboard only: the demo's own routes stay open
        assert await fetch(f"http://{d.base}/") == 200
        assert await fetch(f"http://{d.base}/metrics") == 200
        assert await fetch(base + "nothing-here" + token) == 404
    finally:
        await d.runner.cleanup()


async def test_loopback_is_local_by_default_but_not_through_a_proxy(demo: Demo) -> None:
    base = f"http://{demo.base}/_wsfinally/"
    assert await fetch(base) == 200
    assert await fetch(base + "app.js") == 200
    assert await feed_status(f"ws://{demo.base}/_wsfinally/feed") == (101, "snapshot")
    assert await fetch(base, **{"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await fetch(base, Forwarded="for=203.0.113.9") == 403
    # no token configured: nothing lets a remote request in
    assert await fetch(base + "?token=", **{"X-Forwarded-For": "203.0.113.9"}) == 403


@pytest.mark.parametrize("flags", [(), ("--no-metrics", "--no-dashboard")], ids=["on", "off"])
async def test_serve_has_metrics_and_dashboard_unless_turned_off(
    flags: tuple[str, ...], clients: list[Client]
) -> None:
    server = await Client.spawn(
        sys.executable, "-m", "wsfinally", "serve", "--port", "0", "--log-format", "json", *flags
    )
    clients.append(server)
    started = await server.expect_event("server.started", timeout=15)
    base = started["urls"][0].rstrip("/")
    expected = 404 if flags else 200
    assert await fetch(base + "/metrics") == expected
    assert await fetch(base + "/_wsfinally/") == expected
    assert await fetch(base + "/") == 200
    if not flags:
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
            assert "wsfinally_connections_open" in await resp.text()


def test_static_files_ship_inside_the_package() -> None:
    from importlib.resources import files

    static = files("wsfinally.dashboard").joinpath("static")
    for name in ("index.html", "app.js", "app.css"):
        text = static.joinpath(name).read_text("utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?(https?:)?//""", text), (
            name
        )
    assert files("wsfinally").joinpath("static").joinpath("index.html").is_file()
    assert Path(str(static)).is_dir()


async def test_a_page_under_another_name_pointed_at_us_is_not_local(demo: Demo) -> None:
    """Review: DNS rebinding — evil.example resolving to 127.0.0.1 passed the address rule."""
    port = demo.base.rsplit(":", 1)[1]
    base = f"http://{demo.base}/_wsfinally/"
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    assert await fetch(base, Host=evil["Host"]) == 403
    assert await feed_status(f"ws://{demo.base}/_wsfinally/feed", **evil) == (403, "")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", "[::1]", "x.localhost"):
        assert await fetch(base, Host=host) == 200, host


async def test_the_feed_keeps_its_own_settings_whatever_the_apps_are() -> None:
    """Review: the feed inherited the app's Origin allowlist, auth hook and idle timeout."""

    async def refuse_all(request: web.Request) -> bool:
        return False

    strict = await start_demo(
        allowed_origins=("https://app.example",), auth=refuse_all, idle_timeout=0.2
    )
    anyone = await start_demo(allowed_origins=("*",))
    try:
        own = {"Origin": f"http://{strict.base}"}
        url = f"ws://{strict.base}/_wsfinally/feed"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=own) as ws:
            assert (await ws.receive_json(timeout=seconds(5)))["type"] == "snapshot"
            quiet_until = time.monotonic() + 0.6  # three idle timeouts of the app's
            while time.monotonic() < quiet_until:
                msg = await ws.receive(timeout=seconds(2))
                assert msg.type is aiohttp.WSMsgType.TEXT, msg  # still open
        # an app that lets any Origin in does not let another site's page read the feed
        foreign = {"Origin": "http://evil.example"}
        assert await feed_status(f"ws://{anyone.base}/_wsfinally/feed", **foreign) == (403, "")
    finally:
        await strict.runner.cleanup()
        await anyone.runner.cleanup()


async def test_a_token_is_read_from_the_query_and_the_header_and_bad_bytes_are_refused() -> None:
    """Review: a non-UTF-8 Authorization header gave 500; ?token= hid a good Bearer."""
    d = await start_demo(dashboard_token="s3cret", local_networks=("10.0.0.0/8",))
    base = f"http://{d.base}/_wsfinally/"
    try:
        assert await fetch(base + "?token=old", Authorization="Bearer s3cret") == 200
        reader, writer = await asyncio.open_connection(*d.base.rsplit(":", 1))
        writer.write(
            b"GET /_wsfinally/ HTTP/1.1\r\nHost: " + d.base.encode()
            + b"\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        status = await asyncio.wait_for(reader.readline(), seconds(5))
        writer.close()
        assert status.split()[1] == b"403", status
    finally:
        await d.runner.cleanup()
