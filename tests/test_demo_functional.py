"""The demo application: echo protocol at /ws, an index page at /."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from support import eventually
from wsfinally import REGISTRY, EndReason
from wsfinally.demo import make_app


@pytest.fixture
async def demo() -> AsyncIterator[tuple[web.Application, str]]:
    app = make_app(ping_interval=5)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield app, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_index_page_says_what_is_there(demo: tuple[web.Application, str]) -> None:
    _, base = demo
    async with aiohttp.ClientSession() as session, session.get(base + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        body = await resp.text()
    assert "/ws" in body and "/answer" in body


async def test_echo_protocol_answers_and_closes_on_close(
    demo: tuple[web.Application, str],
) -> None:
    app, base = demo
    async with aiohttp.ClientSession() as session, session.ws_connect(base + "/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "hello/answer"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_bytes()) == b"\x00\x01"
        await ws.send_str("close")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
    registry = app[REGISTRY]
    await eventually(lambda: len(registry) == 0, 2, "the connection to end")
    assert dict(registry.stats.endings) == {EndReason.SERVER_CLOSED: 1}


async def test_plain_get_on_the_websocket_route_is_a_client_error(
    demo: tuple[web.Application, str],
) -> None:
    _, base = demo
    async with aiohttp.ClientSession() as session, session.get(base + "/ws") as resp:
        assert 400 <= resp.status < 500
    assert len(demo[0][REGISTRY]) == 0
