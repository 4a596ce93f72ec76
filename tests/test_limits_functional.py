"""Limits, each hit by a real client process: slow consumers, connection caps, Origin,
auth, rate, handshake timeout, subprotocols."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import wsfinally
from support import Client, eventually, seconds
from wsfinally import Connection, Ending, EndReason

KiB = 1024


class Server:
    """An app whose /ws handler runs ``behaviour(conn)`` and records the endings."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[Connection] = asyncio.Queue()
        self.endings: dict[str, Ending] = {}
        self.registry: wsfinally.Registry | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.max_buffered = 0

    async def start(
        self, behaviour: Callable[[Connection], Awaitable[None]], **settings: Any
    ) -> Server:
        app = web.Application()
        self.registry = wsfinally.setup(app, **settings)

        @wsfinally.endpoint()
        async def handler(conn: Connection) -> None:
            conn.on_end(lambda e: self.endings.__setitem__(conn.id, e))
            self.conns.put_nowait(conn)
            await behaviour(conn)

        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app, shutdown_timeout=2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self.runner.addresses[0][1]}/ws"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    started: list[Server] = []

    async def start(behaviour: Callable[[Connection], Awaitable[None]], **settings: Any) -> Server:
        s = await Server().start(behaviour, **settings)
        started.append(s)
        return s

    yield start
    for s in started:
        await s.stop()


async def read_all(conn: Connection) -> None:
    async for _ in conn:
        pass


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- slow consumers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "chunk_size", "limit"),
    [
        ("send", 16 * KiB, 128 * KiB),
        ("send", 8 * 1024 * KiB, 64 * KiB),  # one message far over the limit blocks in drain()
        ("send_nowait", 16 * KiB, 128 * KiB),
        ("send_nowait", 60 * KiB, 64 * KiB),  # messages that never fit the remaining room
    ],
    ids=["send", "send-huge", "send_nowait", "send_nowait-big"],
)
async def test_peer_that_stops_reading_ends_slow_consumer_within_the_bound(
    how: str, chunk_size: int, limit: int, server: Any, clients: list[Client]
) -> None:
    chunk = b"x" * chunk_size
    srv: Server

    async def flood(conn: Connection) -> None:
        while not conn.closed:
            if how == "send":
                await conn.send(chunk)
            elif not conn.send_nowait(chunk):
                await asyncio.sleep(0.005)  # refused: the caller is not held up
            else:
                await asyncio.sleep(0)
            srv.max_buffered = max(srv.max_buffered, conn.buffered)

    srv = await server(flood, send_limit=limit, slow_consumer_timeout=0.5, ping_interval=None)
    client = await Client.raw(srv.url, "noread")
    clients.append(client)
    conn = await srv.conns.get()
    ending = await asyncio.wait_for(conn.wait_ended(), seconds(0.5 + 5))
    assert (ending.reason, ending.code, ending.clean) == (EndReason.SLOW_CONSUMER, 1006, False)
    # the backlog never grew past the limit plus one message (plus aiohttp's 16 KiB step)
    assert srv.max_buffered <= limit + len(chunk) + 16 * KiB
    await eventually(lambda: socket_of_conn_closed(conn), 2, "the transport to be aborted")


def socket_of_conn_closed(conn: Connection) -> bool:
    return conn.response.get_extra_info("socket") is None or conn._transport.is_closing()


async def test_ten_slow_peers_cost_at_most_their_send_limits_in_memory(
    server: Any, clients: list[Client]
) -> None:
    limit = 256 * KiB
    chunk = b"y" * (32 * KiB)

    async def fanout(conn: Connection) -> None:
        while conn.send_nowait(chunk) or not conn.closed:
            await asyncio.sleep(0.001)

    srv = await server(fanout, send_limit=limit, slow_consumer_timeout=30, ping_interval=None)
    before = rss_kib()
    peers = []
    for _ in range(10):
        peer = await Client.raw(srv.url, "noread")
        clients.append(peer)
        peers.append(await srv.conns.get())
    await eventually(lambda: all(c.buffered >= limit - len(chunk) for c in peers), 10, "full")
    grown = rss_kib() - before
    assert all(c.buffered <= limit for c in peers)
    # 10 x 256 KiB of backlog at most, plus slack for the interpreter's own growth
    assert grown < 10 * (limit + len(chunk)) // KiB + 8 * 1024, f"RSS grew {grown} KiB"


async def test_frozen_peer_ends_heartbeat_timeout_first_when_its_bound_is_shorter(
    server: Any, clients: list[Client]
) -> None:
    async def flood(conn: Connection) -> None:
        while True:
            await conn.send(b"z" * (16 * KiB))

    srv = await server(flood, send_limit=64 * KiB, slow_consumer_timeout=30,
                       ping_interval=0.3, ping_timeout=0.3)  # fmt: skip
    client = await Client.raw(srv.url, "noread")
    clients.append(client)
    conn = await srv.conns.get()
    ending = await asyncio.wait_for(conn.wait_ended(), seconds(0.6 + 2))
    assert ending.reason is EndReason.HEARTBEAT_TIMEOUT


# -- refused before the upgrade ---------------------------------------------------------------


async def test_max_connections_refuses_with_503(server: Any, clients: list[Client]) -> None:
    srv = await server(read_all, max_connections=2)
    for _ in range(2):
        c = await Client.raw(srv.url, "hold")
        clients.append(c)
        await c.expect("ready")
    third = await Client.raw(srv.url, "hold")
    clients.append(third)
    await third.expect("refused 503")
    assert srv.registry is not None and srv.registry.stats.refused["max_connections"] == 1
    assert len(srv.registry) == 2


async def test_max_connections_per_ip_refuses_with_429_and_frees_the_slot_on_end(
    server: Any, clients: list[Client]
) -> None:
    srv = await server(read_all, max_connections_per_ip=1)
    first = await Client.raw(srv.url, "hold", wait=True)
    clients.append(first)
    await first.expect("ready")
    second = await Client.raw(srv.url, "hold")
    clients.append(second)
    await second.expect("refused 429")
    first.signal(9)
    conn = await srv.conns.get()
    await asyncio.wait_for(conn.wait_ended(), seconds(2))
    await eventually(lambda: srv.registry is not None and len(srv.registry) == 0, 2, "release")
    third = await Client.raw(srv.url, "hold")
    clients.append(third)
    await third.expect("ready")


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(
    server: Any, clients: list[Client]
) -> None:
    srv = await server(read_all, max_connections_per_ip=1, trusted_proxies=("127.0.0.0/8",))
    a = await Client.raw(srv.url, "hold", header="X-Forwarded-For: 198.51.100.1")
    clients.append(a)
    await a.expect("ready")
    b = await Client.raw(srv.url, "hold", header="X-Forwarded-For: 198.51.100.2")
    clients.append(b)
    await b.expect("ready")  # another client behind the same proxy
    c = await Client.raw(srv.url, "hold", header="X-Forwarded-For: 198.51.100.1")
    clients.append(c)
    await c.expect("refused 429")  # the first one's address again


@pytest.mark.parametrize(
    ("origin", "allowed", "outcome"),
    [
        (None, None, "ready"),
        ("same", None, "ready"),
        ("http://evil.test", None, "refused 403"),
        ("http://app.test", ("http://app.test",), "ready"),
        ("http://evil.test", ("http://app.test",), "refused 403"),
    ],
)
async def test_origin_same_origin_by_default_allowlist_otherwise(
    origin: str | None, allowed: tuple[str, ...] | None, outcome: str, server: Any,
    clients: list[Client],
) -> None:  # fmt: skip
    srv = await server(read_all, allowed_origins=allowed)
    header = None
    if origin == "same":
        header = "Origin: " + srv.url.replace("ws://", "http://").rsplit("/", 1)[0]
    elif origin is not None:
        header = f"Origin: {origin}"
    client = await Client.raw(srv.url, "hold", header=header)
    clients.append(client)
    await client.expect(outcome)
    if outcome != "ready":
        assert srv.registry is not None and srv.registry.stats.refused["origin"] == 1


@pytest.mark.parametrize(
    ("token", "outcome"),
    [("good", "ready"), ("bad", "refused 403"), (None, "refused 401")],
)
async def test_auth_hook_decides_before_the_upgrade(
    token: str | None, outcome: str, server: Any, clients: list[Client]
) -> None:
    async def auth(request: web.Request) -> bool:
        value = request.headers.get("Authorization")
        if value is None:
            raise web.HTTPUnauthorized(text="token needed")
        return value == "Bearer good"

    srv = await server(read_all, auth=auth)
    header = f"Authorization: Bearer {token}" if token else None
    client = await Client.raw(srv.url, "hold", header=header)
    clients.append(client)
    await client.expect(outcome)


async def test_subprotocol_is_negotiated(server: Any, clients: list[Client]) -> None:
    srv = await server(read_all, protocols=("chat.v2", "chat.v1"))
    client = await Client.raw(srv.url, "hold", header="Sec-WebSocket-Protocol: chat.v1")
    clients.append(client)
    await client.expect("ready protocol=chat.v1")


# -- after the upgrade --------------------------------------------------------------------------


async def test_message_rate_limit_ends_rate_limited_1008(
    server: Any, clients: list[Client]
) -> None:
    srv = await server(read_all, rate_limit=5, rate_burst=5)
    client = await Client.raw(srv.url, "burst:50")
    clients.append(client)
    conn = await srv.conns.get()
    await client.expect("closed 1008")
    ending = await asyncio.wait_for(conn.wait_ended(), seconds(2))
    assert (ending.reason, ending.code) == (EndReason.RATE_LIMITED, 1008)
    assert ending.messages_in == 5


async def test_oversize_message_is_1009_and_exactly_the_limit_is_accepted(
    server: Any, clients: list[Client]
) -> None:
    async def echo(conn: Connection) -> None:
        async for msg in conn:
            await conn.send(f"len {len(msg)}")

    srv = await server(echo, max_message_size=1000)
    ok = await Client.raw(srv.url, "oversize:1000")
    clients.append(ok)
    await ok.expect("text len 1000")
    too_big = await Client.raw(srv.url, "oversize:1001")
    clients.append(too_big)
    await too_big.expect("closed 1009")


# -- the slow-loris defence of `wsfinally serve` ------------------------------------------------


async def test_serve_drops_a_client_that_never_finishes_its_handshake(
    clients: list[Client],
) -> None:
    server = await Client.spawn(sys.executable, "-m", "wsfinally", "serve", "--port", "0",
                                "--log-format", "json", "--handshake-timeout", "0.5")  # fmt: skip
    clients.append(server)
    started = await server.expect_event("server.started", timeout=15)
    port = int(started["urls"][0].rsplit(":", 1)[1].strip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")  # and then silence
    await writer.drain()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    data = await asyncio.wait_for(reader.read(), seconds(0.5 + 3))
    assert data == b"" or b"HTTP/1.1" in data
    assert loop.time() - t0 < seconds(0.5 + 2)
    writer.close()
    server.signal(15)
    assert await server.rest() == 0
