"""The Redis hub when Redis or the way to it fails: real Redis, a real TCP relay cut in
the middle, real websockets. Regression tests for a review's findings are named so."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wsfinally
from hubsupport import ChatClient, Node, RedisProxy, free_port, namespace
from support import Client, eventually, serving
from test_hub_functional import _view_of, leaves
from wsfinally.hub import HUB, Hub, RedisBackend


@pytest.fixture
async def started() -> AsyncIterator[list[Any]]:
    """Nodes and relays to stop at the end, whatever happened."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        if isinstance(item, Node):
            await item.stop()
        else:
            await item.cut()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def _pair(redis_url: str, started: list[Any]) -> tuple[Node, Node, RedisProxy]:
    """node1 reaches Redis through a relay the test can cut; node2 directly."""
    ns = namespace()
    proxy = RedisProxy(_port(redis_url))
    await proxy.start()
    started.append(proxy)
    options = {"namespace": ns, "lease_ttl": 3.0, "scan_interval": 0.2}
    node1 = await Node.start(redis=proxy.url, **options)
    started.append(node1)
    node2 = await Node.start(redis=redis_url, **options)
    started.append(node2)
    return node1, node2, proxy


async def test_a_node_cut_off_from_redis_replays_what_it_missed_with_the_real_reasons(
    redis_url: str, session: aiohttp.ClientSession, started: list[Any]
) -> None:
    node1, node2, proxy = await _pair(redis_url, started)
    alice = await ChatClient.connect(session, node1.base, "r", "alice")
    bob = await ChatClient.connect(session, node2.base, "r", "bob")
    carol = await ChatClient.connect(session, node2.base, "r", "carol")
    await eventually(lambda: _view_of(alice) == {"alice", "bob", "carol"}, 5, "the full room")
    backend = node1.app[HUB].backend
    assert isinstance(backend, RedisBackend)
    await proxy.cut()
    await eventually(lambda: not backend.connected, 5, "node1 to notice the cut")
    await carol.close()  # Redis keeps its state; node1 hears none of this now
    dave = await ChatClient.connect(session, node2.base, "r", "dave")
    await bob.wait(lambda m: m["type"] == "leave" and m["name"] == "carol", "carol's leave")
    await proxy.restore()
    leave = await alice.wait(
        lambda m: m["type"] == "leave" and m["name"] == "carol", "carol's leave on node1", 10
    )
    assert leave["reason"] == "client_closed"  # replayed from the room's log: the truth
    await eventually(lambda: _view_of(alice) == {"alice", "bob", "dave"}, 10, "dave on node1")
    assert backend.stats.outages == 1 and backend.stats.reconnects == 1
    assert len(leaves(alice, "carol")) == 1
    for c in (alice, bob, dave):
        await c.close()


async def test_a_room_read_while_redis_is_away_learns_its_members_when_it_is_back(
    redis_url: str, session: aiohttp.ClientSession, started: list[Any]
) -> None:
    """A view built while this node cannot reach Redis says only what it knows, then
    learns the room. (Review finding 9 — live events reaching such a view through a
    subscription that outlived the failed read — was reproduced with a relay that fails
    only the read; this relay cuts both, so this test passes on the code before the fix.)"""
    node1, node2, proxy = await _pair(redis_url, started)
    pat = await ChatClient.connect(session, node2.base, "r", "pat")
    dan = await ChatClient.connect(session, node2.base, "r", "dan")
    backend = node1.app[HUB].backend
    assert isinstance(backend, RedisBackend)
    await proxy.cut()
    await eventually(lambda: not backend.connected, 5, "node1 to notice the cut")
    ann = await ChatClient.connect(session, node1.base, "r", "ann")
    assert ann.heard[0]["members"] == ["ann"]  # node1 cannot know more now, and says so
    await proxy.restore()
    await eventually(lambda: _view_of(ann) == {"ann", "pat", "dan"}, 10, "ann to see pat, dan")
    await eventually(lambda: _view_of(pat) == {"ann", "pat", "dan"}, 10, "pat to see ann")
    for c in (ann, pat, dan):
        await c.close()


async def test_redis_unreachable_at_start_keeps_local_rooms_working_and_waiting_bounded(
    session: aiohttp.ClientSession, started: list[Any]
) -> None:
    """Review finding 1: broadcasts waiting for Redis grew without bound."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    node = await Node.start(redis=closed, namespace=namespace(), max_pending_messages=100)
    started.append(node)
    hub = node.app[HUB]
    backend = hub.backend
    assert isinstance(backend, RedisBackend) and not backend.connected
    alice = await ChatClient.connect(session, node.base, "r", "alice")
    bob = await ChatClient.connect(session, node.base, "r", "bob")
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "bob", "bob's join")
    for i in range(1000):
        hub.broadcast("r", f'{{"type":"message","name":"srv","text":"{i}"}}')
    await bob.wait(lambda m: m.get("text") == "999", "the last local broadcast")
    assert len(backend._messages) == 100  # the newest 100 wait for Redis
    assert backend.stats.dropped_messages == 900
    assert backend.stats.outages == 0  # it was never up: nothing went down
    await alice.close()
    await bob.close()


async def test_a_quiet_room_still_delivers_after_its_key_ttl(
    redis_url: str, session: aiohttp.ClientSession, started: list[Any]
) -> None:
    """Review finding 8: the room's version expired while it had members."""
    ns = namespace()
    node1 = await Node.start(redis=redis_url, namespace=ns, key_ttl=0.3)
    node2 = await Node.start(redis=redis_url, namespace=ns, key_ttl=0.3)
    started += [node1, node2]
    alice = await ChatClient.connect(session, node1.base, "r", "alice")
    bob = await ChatClient.connect(session, node2.base, "r", "bob")
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "bob", "bob's join")
    await asyncio.sleep(0.6)  # the cause under test: time passing, twice key_ttl
    carol = await ChatClient.connect(session, node2.base, "r", "carol")
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "carol", "carol's join")
    for c in (alice, bob, carol):
        await c.close()


async def test_join_refuses_a_presence_json_cannot_carry(
    redis_url: str, session: aiohttp.ClientSession, started: list[Any]
) -> None:
    """Review finding 3: it killed the Redis sender for good."""
    node = await Node.start(redis=redis_url, namespace=namespace())
    started.append(node)
    hub = node.app[HUB]
    refused: list[BaseException] = []

    async def bad(request: web.Request) -> web.StreamResponse:
        async with wsfinally.accept(request) as conn:
            try:
                await hub.join(conn, "r", {"when": datetime.now()})
            except TypeError as exc:
                refused.append(exc)
            await hub.join(conn, "r", {"name": "ok"})
            async for _ in conn:
                pass
        return conn.response

    app = web.Application()
    wsfinally.setup(app)
    app.router.add_get("/bad", bad)
    async with serving(app) as base:
        watcher = await ChatClient.connect(session, node.base, "r", "watcher")
        async with session.ws_connect(f"{base}/bad"):
            await watcher.wait(lambda m: m["type"] == "join" and m["name"] == "ok", "ok's join")
        assert len(refused) == 1
        await watcher.close()


async def test_stopping_the_redis_backend_propagates_a_cancellation(redis_url: str) -> None:
    """Review finding 10: stop() could swallow its own cancellation."""
    outcomes = set()
    for k in range(0, 40, 3):
        hub = Hub(RedisBackend(redis_url, namespace=namespace()))
        await hub.start()
        task = asyncio.create_task(hub.stop())
        for _ in range(k):
            await asyncio.sleep(0)  # let stop() get k steps in
        accepted = task.cancel()
        try:
            await task
            assert not accepted, f"stop() returned although cancelled after {k} steps"
            outcomes.add("finished first")
        except asyncio.CancelledError:
            outcomes.add("cancelled")
            await hub.backend.stop()  # a second stop finishes the job
    assert "cancelled" in outcomes


async def test_serve_refuses_a_bad_redis_url_before_starting() -> None:
    """Review finding 15: a bad URL got through to a traceback at start."""
    proc = await Client.spawn(
        sys.executable, "-m", "wsfinally", "serve", "--port", "0",
        "--redis", "redis://127.0.0.1:notaport/0",
    )  # fmt: skip
    code = await proc.rest(timeout=20)
    assert code == 2
    assert any("bad redis URL" in line for line in proc.lines), proc.lines
    assert not any("Traceback" in line for line in proc.lines), proc.lines


async def test_a_connection_switching_rooms_keeps_one_end_callback(
    session: aiohttp.ClientSession, started: list[Any]
) -> None:
    """Review finding 12: each rejoin after leaving every room added a callback."""
    node = await Node.start()
    started.append(node)
    hub = node.app[HUB]
    alice = await ChatClient.connect(session, node.base, "r0", "alice")
    conn = next(iter(node.app[wsfinally.REGISTRY].connections.values()))
    for i in range(50):
        hub.leave(conn, f"r{i}")
        await hub.join(conn, f"r{i + 1}")
    assert len(conn._callbacks or ()) == 1
    await alice.close()
    await conn.wait_ended()
    assert hub.counts() == (0, 0)
