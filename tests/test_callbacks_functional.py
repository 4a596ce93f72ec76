"""End callbacks: sync or async, each once; a failing or hanging one never stops the others."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

import wsfinally
from support import Client, seconds
from wsfinally import Connection, Ending, EndReason


async def serve(handler: Any, **defaults: Any) -> tuple[web.AppRunner, str, wsfinally.Registry]:
    """``handler`` at /ws of a started app with ``setup(app, **defaults)``."""
    app = web.Application()
    registry = wsfinally.setup(app, **defaults)
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"ws://127.0.0.1:{runner.addresses[0][1]}/ws", registry


async def test_failing_and_hanging_callbacks_are_logged_counted_and_do_not_stop_others(
    clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    def raises(ending: Ending) -> None:
        ran.append("raises")
        raise ValueError("callback bug")

    async def hangs(ending: Ending) -> None:
        ran.append("hangs")
        await asyncio.sleep(3600)

    async def async_ok(ending: Ending) -> None:
        ran.append("async_ok")

    def sync_ok(ending: Ending) -> None:
        ran.append("sync_ok")

    @wsfinally.endpoint(callback_timeout=0.2)
    async def handler(conn: Connection) -> None:
        for cb in (raises, hangs, async_ok, sync_ok):
            conn.on_end(cb)
        accepted.put_nowait(conn)
        async for _ in conn:
            pass

    runner, url, registry = await serve(handler)
    try:
        caplog.set_level(logging.ERROR, "wsfinally")
        client = await Client.raw(url, "close:1000")
        clients.append(client)
        conn = await asyncio.wait_for(accepted.get(), seconds(5))
        ending = await asyncio.wait_for(conn.wait_ended(), seconds(3))
        assert ending.reason is EndReason.CLIENT_CLOSED
        assert ran == ["raises", "hangs", "async_ok", "sync_ok"]
        assert registry.stats.callback_failures == 2
        failures = [
            r for r in caplog.records if getattr(r, "wsf", {}).get("event") == "callback.failed"
        ]
        assert len(failures) == 2
        assert all(conn.id in r.getMessage() for r in failures)
        assert any(r.exc_info and r.exc_info[0] is ValueError for r in failures)
    finally:
        await runner.cleanup()


async def test_a_hanging_callback_does_not_hold_up_shutdown(clients: list[Client]) -> None:
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    released = asyncio.Event()

    async def hangs(ending: Ending) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            released.set()

    @wsfinally.endpoint(callback_timeout=60)
    async def handler(conn: Connection) -> None:
        conn.on_end(hangs)
        accepted.put_nowait(conn)
        async for _ in conn:
            pass

    runner, url, _ = await serve(handler, shutdown_timeout=1.0)
    client = await Client.raw(url, "hold")
    clients.append(client)
    conn = await asyncio.wait_for(accepted.get(), seconds(5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(runner.cleanup(), seconds(3))
    assert loop.time() - started < 1.0 + seconds(0.3)
    await client.expect("closed 1001")
    assert conn.ending is not None and conn.ending.reason is EndReason.SERVER_SHUTDOWN
    await asyncio.wait_for(released.wait(), seconds(1))


async def test_callback_registered_after_the_end_runs_at_once(clients: list[Client]) -> None:
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    @wsfinally.endpoint()
    async def handler(conn: Connection) -> None:
        accepted.put_nowait(conn)
        async for _ in conn:
            pass

    runner, url, _ = await serve(handler)
    try:
        clients.append(await Client.raw(url, "fin"))
        conn = await asyncio.wait_for(accepted.get(), seconds(5))
        ending = await asyncio.wait_for(conn.wait_ended(), seconds(3))
        got: list[Any] = []
        done = asyncio.Event()

        async def late(e: Ending) -> None:
            got.append(e)
            done.set()

        conn.on_end(lambda e: got.append(e))
        conn.on_end(late)
        await asyncio.wait_for(done.wait(), seconds(1))
        assert got == [ending, ending]
    finally:
        await runner.cleanup()


async def test_close_is_idempotent_and_returns_with_the_ending_recorded(
    clients: list[Client],
) -> None:
    results: asyncio.Queue[Ending] = asyncio.Queue()

    @wsfinally.endpoint()
    async def handler(conn: Connection) -> None:
        conn.on_end(results.put_nowait)
        async for _ in conn:
            await conn.close(4000, "first")
            assert conn.ending is not None and results.qsize() == 1  # recorded, callbacks ran
            await conn.close(1000, "second")
        await conn.close(1001)

    runner, url, _ = await serve(handler)
    try:
        client = await Client.raw(url, "hold", "bye")
        clients.append(client)
        await client.expect("closed 4000")
        await client.expect("eof")
        ending = await asyncio.wait_for(results.get(), seconds(3))
        assert (ending.reason, ending.code, ending.clean) == (EndReason.SERVER_CLOSED, 4000, True)
        assert results.empty()
    finally:
        await runner.cleanup()


async def test_close_refuses_codes_that_may_not_be_sent(clients: list[Client]) -> None:
    errors: asyncio.Queue[BaseException] = asyncio.Queue()

    @wsfinally.endpoint()
    async def handler(conn: Connection) -> None:
        try:
            await conn.close(1006)
        except ValueError as exc:
            errors.put_nowait(exc)

    runner, url, _ = await serve(handler)
    try:
        clients.append(await Client.raw(url, "hold"))
        exc = await asyncio.wait_for(errors.get(), seconds(5))
        assert "1006" in str(exc)
    finally:
        await runner.cleanup()
