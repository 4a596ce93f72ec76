"""The hub's contract, run against the in-memory backend and a real Redis.

Real servers (the demo app: its chat on the hub), real websockets, client processes that
really die. Under Redis every test has a namespace of its own; two nodes in one process
are two apps with two hubs and two Redis clients, exactly as two processes would be.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wsfinally
from hubsupport import ChatClient, Node, namespace
from support import Client, eventually, seconds, serving
from wsfinally.hub import HUB, LEFT, HubEvent

BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
async def nodes(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``await nodes()``: a started demo node; under Redis, all of a test's nodes share
    one namespace (memory: each node is its own world)."""
    started: list[Node] = []
    options: dict[str, Any] = {}
    if request.param == "redis":
        options = {
            "redis": request.getfixturevalue("redis_url"),
            "namespace": namespace(),
            "lease_ttl": 2.0,
            "scan_interval": 0.2,
        }

    async def start() -> Node:
        node = await Node.start(**options)
        started.append(node)
        return node

    start.backend = request.param  # type: ignore[attr-defined]
    yield start
    for node in reversed(started):
        await node.stop()


def leaves(client: ChatClient, name: str) -> list[dict[str, Any]]:
    return client.said(lambda m: m["type"] == "leave" and m["name"] == name)


async def test_a_joiner_gets_presence_first_then_joins_leaves_and_messages(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    node = await nodes()
    alice = await ChatClient.connect(session, node.base, "r1", "alice")
    assert alice.heard[0] == {**alice.heard[0], "type": "presence", "members": ["alice"]}
    bob = await ChatClient.connect(session, node.base, "r1", "bob")
    assert bob.heard[0]["type"] == "presence"
    assert sorted(bob.heard[0]["members"]) == ["alice", "bob"]
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "bob", "bob's join")
    await bob.say("hello")
    for member in (alice, bob):
        await member.wait(lambda m: m.get("text") == "hello" and m["name"] == "bob", "hello")
    assert not bob.said(lambda m: m["type"] == "join")  # not its own join
    await bob.close()
    leave = await alice.wait(lambda m: m["type"] == "leave", "bob's leave")
    assert (leave["name"], leave["reason"]) == ("bob", "client_closed")
    await alice.close()


async def test_a_killed_client_process_leaves_once_as_connection_lost(
    nodes: Any, session: aiohttp.ClientSession, clients: list[Client]
) -> None:
    node = await nodes()
    alice = await ChatClient.connect(session, node.base, "r1", "alice")
    ws_url = node.base.replace("http://", "ws://")
    carol = await Client.raw(f"{ws_url}/chat?room=r1&name=carol", "hold")
    clients.append(carol)
    await carol.expect("ready")
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "carol", "carol's join")
    carol.signal(9)
    leave = await alice.wait(lambda m: m["type"] == "leave", "carol's leave")
    assert leave["reason"] == "connection_lost"
    # once: a later event arrives, and still only one leave of carol was told
    bob = await ChatClient.connect(session, node.base, "r1", "bob")
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "bob", "bob's join")
    assert len(leaves(alice, "carol")) == 1
    hub = node.app[HUB]
    assert [m.presence["name"] for m in await hub.members("r1")] == ["alice", "bob"]
    await bob.close()
    await alice.close()


async def test_broadcast_skips_a_member_that_stopped_reading_and_never_waits(
    nodes: Any, session: aiohttp.ClientSession, clients: list[Client]
) -> None:
    node = await nodes()
    ws_url = node.base.replace("http://", "ws://")
    sloth = await Client.raw(f"{ws_url}/chat?room=r1&name=sloth", "noread")
    clients.append(sloth)
    await sloth.expect("ready")
    alice = await ChatClient.connect(session, node.base, "r1", "alice")
    hub = node.app[HUB]
    pad = "x" * 60_000
    sent = 0
    while hub.stats.skipped == 0:  # until the sloth holds send_limit unread and refuses
        text = json.dumps({"type": "message", "name": "srv", "text": str(sent), "pad": pad})
        hub.broadcast("r1", text)  # synchronous: it cannot wait for anyone
        sent += 1
        assert sent < 400, "the member that stopped reading never refused a message"
        await asyncio.sleep(0)  # alice's reader runs in this process too
    hub.broadcast("r1", json.dumps({"type": "message", "name": "srv", "text": "after"}))
    await alice.wait(lambda m: m.get("text") == "after", "the last broadcast", timeout=10)
    texts = [m["text"] for m in alice.heard if m["type"] == "message"]
    assert texts == [str(i) for i in range(sent)] + ["after"]  # all of them, in order
    # what the sloth holds stays bounded by its send limit (plus the message that crossed it)
    sloth_conn = next(
        c for c in node.app[wsfinally.REGISTRY].connections.values() if "sloth" in c.request.path_qs
    )
    assert sloth_conn.buffered <= sloth_conn.settings.send_limit + 61_000
    await alice.close()


async def test_an_explicit_leave_says_left_and_an_ending_after_it_says_nothing(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    node = await nodes()
    hub = node.app[HUB]
    events: list[HubEvent] = []
    unsubscribe = await hub.subscribe("r1", events.append)
    assert events[0].type == "presence" and events[0].members == ()
    alice = await ChatClient.connect(session, node.base, "r1", "alice")
    await eventually(lambda: any(e.type == "join" for e in events), 5, "alice's join")
    conn = next(iter(node.app[wsfinally.REGISTRY].connections.values()))
    assert hub.rooms(conn) == ["r1"]
    assert hub.leave(conn, "r1") is True
    assert hub.leave(conn, "r1") is False  # idempotent
    await alice.close()
    await conn.wait_ended()
    kinds = [(e.type, e.reason) for e in events[1:]]
    assert kinds == [("join", None), ("leave", LEFT)]
    unsubscribe()


async def test_a_connection_in_several_rooms_leaves_each_once_with_its_reason(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    node = await nodes()
    hub = node.app[HUB]
    seen: dict[str, list[HubEvent]] = {"a": [], "b": [], "c": []}
    for room, events in seen.items():
        await hub.subscribe(room, events.append)
    joined = asyncio.Event()

    async def multi(request: web.Request) -> web.StreamResponse:
        async with wsfinally.accept(request) as conn:
            for room in seen:
                await hub.join(conn, room, {"name": "multi"})
            joined.set()
            async for _ in conn:
                pass
        return conn.response

    # a route added to the running node's router is not allowed: use a second app
    app = web.Application()
    wsfinally.setup(app)
    app[HUB] = hub
    app.router.add_get("/multi", multi)
    async with serving(app) as base:
        async with session.ws_connect(f"{base}/multi") as ws:
            await asyncio.wait_for(joined.wait(), seconds(5))
            await ws.close(code=4001)
        for room, events in seen.items():
            await eventually(lambda ev=events: len(ev) >= 3, 5, f"the leave of room {room}")
            assert [(e.type, e.reason) for e in events[1:]] == [
                ("join", None),
                ("leave", "client_closed"),
            ]


async def test_shutdown_leaves_every_member_with_server_shutdown(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    node = await nodes()
    hub = node.app[HUB]
    events: list[HubEvent] = []
    await hub.subscribe("r1", events.append)
    members = [await ChatClient.connect(session, node.base, "r1", f"m{i}") for i in range(3)]
    await node.stop()
    for m in members:
        await asyncio.wait_for(m.closed.wait(), seconds(5))
        assert m.ws.close_code == 1001
    left = [(e.member.presence["name"], e.reason) for e in events if e.type == "leave" and e.member]
    assert sorted(left) == [(f"m{i}", "server_shutdown") for i in range(3)]


@pytest.mark.parametrize("nodes", ["redis"], indirect=True)
async def test_a_member_on_one_node_hears_a_member_on_another(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    a, b = await nodes(), await nodes()
    alice = await ChatClient.connect(session, a.base, "r1", "alice")
    bob = await ChatClient.connect(session, b.base, "r1", "bob")
    assert sorted(bob.heard[0]["members"]) == ["alice", "bob"]
    await alice.wait(lambda m: m["type"] == "join" and m["name"] == "bob", "bob's join")
    await alice.say("from a")
    await bob.wait(lambda m: m.get("text") == "from a", "alice's message on node b")
    await bob.say("from b")
    await alice.wait(lambda m: m.get("text") == "from b", "bob's message on node a")
    await bob.close()
    leave = await alice.wait(lambda m: m["type"] == "leave", "bob's leave on node a")
    assert leave["reason"] == "client_closed"
    assert [m.presence["name"] for m in await a.app[HUB].members("r1")] == ["alice"]
    await alice.close()


@pytest.mark.parametrize("nodes", ["redis"], indirect=True)
async def test_concurrent_joins_on_two_nodes_tell_everyone_presence_then_each_change_once(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    """Every member's view, built from its presence and then its events, ends equal to the
    room, with no join or leave twice: the snapshot/version rule (hub-notes: 3 of 6 trials
    went wrong without it)."""
    a, b = await nodes(), await nodes()
    names = [f"u{i}" for i in range(16)]
    clients = await asyncio.gather(
        *(ChatClient.connect(session, (a, b)[i % 2].base, "busy", n) for i, n in enumerate(names))
    )
    for c in clients:
        await eventually(lambda c=c: _view_of(c) == set(names), 10, f"{c.name}'s full room")
    for c in clients[::2]:
        await c.close()
    rest = set(names[1::2])
    for c in clients[1::2]:
        await eventually(lambda c=c: _view_of(c) == rest, 10, f"{c.name}'s room after leaves")
        for n in names:
            assert len(leaves(c, n)) <= 1, (c.name, n, c.heard)
            joins = c.said(lambda m, n=n: m["type"] == "join" and m["name"] == n)
            assert len(joins) <= 1, (c.name, n, c.heard)
    for c in clients[1::2]:
        await c.close()


def _view_of(client: ChatClient) -> set[str]:
    """The room as a member can know it: its presence, then each join and leave."""
    view: dict[str, str] = {}
    for m in client.heard:
        if m["type"] == "presence":
            view = {d["id"]: d["name"] for d in m["detail"]}
        elif m["type"] == "join":
            assert m["id"] not in view, f"{client.name}: join of a present member {m}"
            view[m["id"]] = m["name"]
        elif m["type"] == "leave":
            assert m["id"] in view, f"{client.name}: leave of an absent member {m}"
            del view[m["id"]]
    return set(view.values())


async def test_chat_rejects_what_is_not_a_message_without_ending(
    nodes: Any, session: aiohttp.ClientSession
) -> None:
    node = await nodes()
    alice = await ChatClient.connect(session, node.base, "r1", "alice")
    await alice.ws.send_str("not json")
    await alice.ws.send_str(json.dumps({"type": "nope"}))
    await alice.wait(lambda m: m["type"] == "error", "an error reply")
    await alice.say("still here")
    await alice.wait(lambda m: m.get("text") == "still here", "its own message")
    await alice.close()
