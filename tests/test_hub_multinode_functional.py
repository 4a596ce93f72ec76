"""Several ``wsfinally serve --redis`` processes sharing one real Redis.

Nodes die for real (SIGKILL, SIGSTOP) and Redis is killed and started again, empty, on
the same port. Members are chat clients over real websockets in this process.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from hubsupport import ChatClient, RedisServer, namespace, serve_node
from support import Client, eventually, seconds
from test_hub_functional import _view_of, leaves

LEASE = 2.0  # seconds; the CLI's reaper scans every second
DETECT = LEASE + 1.0  # a dead node's members leave within its lease plus one scan


async def _nodes(clients: list[Client], redis: str, count: int) -> list[str]:
    ns = namespace()
    started = await asyncio.gather(*(serve_node(redis, ns, LEASE) for _ in range(count)))
    clients.extend(p for p, _ in started)
    return [base for _, base in started]


async def _full_room(members: list[ChatClient], names: set[str], timeout: float = 10) -> None:
    """Each member's view (presence, then joins and leaves) comes to be exactly ``names``."""
    for m in members:
        await eventually(lambda m=m: _view_of(m) == names, timeout, f"{m.name} to see {names}")


async def test_members_on_three_nodes_see_each_other_and_a_killed_node_leaves_as_node_lost(
    redis_url: str, session: aiohttp.ClientSession, clients: list[Client]
) -> None:
    n1, n2, n3 = await _nodes(clients, redis_url, 3)
    alice = await ChatClient.connect(session, n1, "lobby", "alice")
    bob = await ChatClient.connect(session, n2, "lobby", "bob")
    carol = await ChatClient.connect(session, n3, "lobby", "carol")
    assert sorted(carol.heard[0]["members"]) == ["alice", "bob", "carol"]
    await _full_room([alice, bob, carol], {"alice", "bob", "carol"})
    await carol.say("hi from n3")
    for m in (alice, bob):
        await m.wait(lambda x: x.get("text") == "hi from n3", "carol's message")

    killed_at = time.monotonic()
    clients[2].signal(signal.SIGKILL)
    for m in (alice, bob):
        leave = await m.wait(
            lambda x: x["type"] == "leave" and x["name"] == "carol", "carol's leave", DETECT + 2
        )
        took = time.monotonic() - killed_at
        assert leave["reason"] == "node_lost", leave
        assert took <= seconds(DETECT + 0.5), f"node death noticed after {took:.2f} s"
    await asyncio.wait_for(carol.closed.wait(), seconds(5))
    await alice.say("still here")
    await bob.wait(lambda x: x.get("text") == "still here", "alice's message after the death")
    for m in (alice, bob):
        assert len(leaves(m, "carol")) == 1  # one survivor reaped n3; nobody heard it twice
    await alice.close()
    await bob.close()


async def test_a_frozen_node_is_declared_lost_then_comes_back_and_rejoins_its_members(
    redis_url: str, session: aiohttp.ClientSession, clients: list[Client]
) -> None:
    n1, n2 = await _nodes(clients, redis_url, 2)
    alice = await ChatClient.connect(session, n1, "lobby", "alice")
    bob = await ChatClient.connect(session, n2, "lobby", "bob")
    await _full_room([alice, bob], {"alice", "bob"})
    clients[1].signal(signal.SIGSTOP)  # a node that stops answering: GC pause, VM stall
    try:
        leave = await alice.wait(
            lambda x: x["type"] == "leave" and x["name"] == "bob", "bob's leave", DETECT + 2
        )
        assert leave["reason"] == "node_lost"
    finally:
        clients[1].signal(signal.SIGCONT)
    # its lease is gone: the node registers again and says its members are back
    await alice.wait(
        lambda x: x["type"] == "join" and x["name"] == "bob", "bob's return", LEASE + 3
    )
    await _full_room([alice], {"alice", "bob"})
    await bob.say("back")
    await alice.wait(lambda x: x.get("text") == "back", "bob's message after the freeze")
    await alice.close()
    await bob.close()


async def test_redis_restarted_empty_mid_run_loses_no_member_and_misses_no_leave(
    redis_server: RedisServer, session: aiohttp.ClientSession, clients: list[Client]
) -> None:
    n1, n2, n3 = await _nodes(clients, redis_server.url, 3)
    alice = await ChatClient.connect(session, n1, "lobby", "alice")
    erin = await ChatClient.connect(session, n1, "lobby", "erin")
    bob = await ChatClient.connect(session, n2, "lobby", "bob")
    dave = await ChatClient.connect(session, n2, "lobby", "dave")
    gus = await ChatClient.connect(session, n3, "lobby", "gus")
    await _full_room([alice, erin, bob, dave, gus], {"alice", "erin", "bob", "dave", "gus"})

    redis_server.kill()
    for p in clients:
        await p.expect_event("hub.redis_down", timeout=10)
    # local delivery goes on while Redis is away
    await alice.say("during the outage")
    await erin.wait(lambda x: x.get("text") == "during the outage", "a local message")
    frank = await ChatClient.connect(session, n1, "lobby", "frank")  # joins during it
    await alice.wait(lambda x: x["type"] == "join" and x["name"] == "frank", "frank's join")
    await dave.close()  # leaves during it, on the other node
    await bob.wait(lambda x: x["type"] == "leave" and x["name"] == "dave", "dave's leave (local)")

    redis_server.start()  # same port, empty
    for p in clients:
        up = await p.expect_event("hub.redis_up", timeout=15)
        assert up["reset"] is True
    leave = await alice.wait(
        lambda x: x["type"] == "leave" and x["name"] == "dave", "dave's leave on n1", 10
    )
    assert leave["reason"] == "client_closed"  # the truth, not a guess
    await bob.wait(lambda x: x["type"] == "join" and x["name"] == "frank", "frank on n2", 10)
    everyone = {"alice", "erin", "bob", "frank", "gus"}
    await _full_room([alice, erin, bob, frank, gus], everyone, timeout=LEASE + 5)
    # nobody who stayed was reported gone, and nothing was told twice
    for m in (alice, erin, bob, frank, gus):
        for name in everyone:
            assert not leaves(m, name), (m.name, name, m.heard)
        assert len(leaves(m, "dave")) <= 1
    await bob.say("after the restart")
    await frank.wait(lambda x: x.get("text") == "after the restart", "a message across nodes")
    await gus.wait(lambda x: x.get("text") == "after the restart", "the message on node 3")
    # the nodes' leases live again in the new Redis: a node killed now is still noticed
    clients[2].signal(signal.SIGKILL)
    for m in (alice, bob):
        leave = await m.wait(
            lambda x: x["type"] == "leave" and x["name"] == "gus", "gus's leave", DETECT + 2
        )
        assert leave["reason"] == "node_lost"
    for m in (alice, erin, bob, frank):
        await m.close()
