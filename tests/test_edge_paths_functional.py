"""Exit paths at the edges: a peer that does not read, a handler that does not read,
a read that timed out. Each with a real client process, asyncio and uvloop."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiohttp import web

import wsfinally
from support import Client, Probe, conn_buffered, eventually, open_sockets, seconds
from wsfinally import Connection, Ending, EndReason


async def test_frame_error_while_our_output_is_unread_ends_within_close_timeout(
    probe: Any, clients: list[Client]
) -> None:
    p: Probe = await probe(close_timeout=0.5, ping_interval=None)
    client = await Client.raw(p.url, "noread-garbage", "fill", wait=True)
    clients.append(client)
    conn = await p.next_conn()
    await client.expect("ready")
    client.go()
    await eventually(lambda: conn_buffered(conn) > 0, 5, "our buffer to hold unread data")
    client.go()  # now the bad frame
    ending = await p.ended(conn, 0.5 + 1)
    assert (ending.reason, ending.code, ending.clean) == (EndReason.PROTOCOL_ERROR, 1002, False)
    await eventually(lambda: p.sockets[conn.id] not in open_sockets(), 1, "the socket to close")


async def test_cancelled_with_a_frozen_peer_and_unread_output_still_releases_the_socket(
    probe: Any, clients: list[Client]
) -> None:
    p: Probe = await probe(close_timeout=0.5, ping_interval=None)
    client = await Client.raw(p.url, "hold", wait=True)
    clients.append(client)
    conn = await p.next_conn()
    await client.expect("ready")
    client.signal(signal.SIGSTOP)
    filler = asyncio.create_task(conn.send(b"x" * (8 << 20)))  # far more than the kernel takes
    await eventually(lambda: conn_buffered(conn) > 0, 5, "our buffer to hold unread data")
    p.tasks[conn.id].cancel()
    ending = await p.ended(conn, 1)
    assert (ending.reason, ending.code) == (EndReason.CANCELLED, 1011)
    await eventually(lambda: p.sockets[conn.id] not in open_sockets(), 0.5 + 1, "abort")
    await asyncio.gather(filler, return_exceptions=True)


async def test_heartbeat_does_not_blame_the_peer_while_our_handler_does_not_read(
    probe: Any, clients: list[Client]
) -> None:
    # The handler sleeps past ping_interval + ping_timeout while the peer keeps sending:
    # aiohttp pauses reading, so the peer's pongs wait unseen in the socket. Not its fault.
    p: Probe = await probe(ping_interval=0.2, ping_timeout=0.2)
    big = "y" * 30000
    client = await Client.raw(p.url, "close:1000", "sleep:1.2", *[big] * 12, wait=True)
    clients.append(client)
    conn = await p.next_conn()
    await client.expect("ready")
    client.go()
    ending = await p.ended(conn, 1.2 + 2)
    assert ending.reason is EndReason.CLIENT_CLOSED, ending
    assert ending.messages_in == 13


async def test_close_after_a_read_that_timed_out_is_clean_and_prompt(clients: list[Client]) -> None:
    endings: asyncio.Queue[Ending] = asyncio.Queue()

    @wsfinally.endpoint(close_timeout=3)
    async def handler(conn: Connection) -> None:
        conn.on_end(endings.put_nowait)
        try:
            await asyncio.wait_for(conn.__anext__(), 0.05)
        except asyncio.TimeoutError:
            pass
        await conn.close(1000)

    app = web.Application()
    wsfinally.setup(app)
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = await Client.raw(f"ws://127.0.0.1:{runner.addresses[0][1]}/ws", "hold")
        clients.append(client)
        ending = await asyncio.wait_for(endings.get(), seconds(1.5))
        assert (ending.reason, ending.code, ending.clean) == (EndReason.SERVER_CLOSED, 1000, True)
        assert ending.duration < 1.0
    finally:
        await runner.cleanup()


async def test_push_only_handler_gets_its_ending_when_the_peer_drops(
    probe: Any, clients: list[Client]
) -> None:
    # The handler waits on something else (here: sleeps); the peer's FIN must still end
    # the connection at once, callbacks included, without waiting for the handler.
    p: Probe = await probe()
    client = await Client.raw(p.url, "fin", "sleep:5", wait=True)
    clients.append(client)
    conn = await p.next_conn()
    await client.expect("ready")
    client.go()
    ending = await p.ended(conn, 1)
    assert ending.reason is EndReason.CONNECTION_LOST
    assert p.sync_calls[conn.id] == 1
    assert not p.tasks[conn.id].done()  # the handler is still asleep; its ending is not
    p.tasks[conn.id].cancel()
    await eventually(lambda: p.registry is not None and len(p.registry) == 0, 1, "release")
