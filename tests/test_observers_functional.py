"""Registry observers: each hears every event once; one that raises never breaks an ending."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wsfinally
from support import Client, Probe, eventually, serving
from wsfinally import Connection, Ending, EndReason, Observer


class Recording(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def opened(self, conn: Connection) -> None:
        self.events.append(("opened", conn.id))

    def ended(self, conn: Connection, ending: Ending) -> None:
        self.events.append(("ended", conn.id))

    def pong(self, conn: Connection, rtt: float) -> None:
        assert rtt == conn.last_rtt and rtt > 0
        self.events.append(("pong", conn.id))

    def callback_ran(self, conn: Connection, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("callback_ran", conn.id))


class Raising(Observer):
    def opened(self, conn: Connection) -> None:
        raise RuntimeError("opened")

    def ended(self, conn: Connection, ending: Ending) -> None:
        raise RuntimeError("ended")

    def pong(self, conn: Connection, rtt: float) -> None:
        raise RuntimeError("pong")

    def callback_ran(self, conn: Connection, seconds: float) -> None:
        raise RuntimeError("callback_ran")


async def test_an_observer_that_raises_is_logged_and_the_others_still_hear_everything(
    probe: Any, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    p: Probe = await probe(ping_interval=0.05, ping_timeout=1)
    assert p.registry is not None
    recording = Recording()
    p.registry.observers += [Raising(), recording]
    client = await Client.raw(p.url, "hold", "hello", wait=True)
    clients.append(client)
    conn = await p.next_conn()
    client.go()
    await eventually(lambda: ("pong", conn.id) in recording.events, 3, "a pong")
    await conn.close(4000)
    ending = await p.ended(conn, 3)
    assert (ending.reason, ending.code, ending.clean) == (EndReason.SERVER_CLOSED, 4000, True)
    await eventually(lambda: p.async_calls[conn.id] == 1, 3, "the async callback")
    kinds = [kind for kind, cid in recording.events if cid == conn.id]
    assert kinds[0] == "opened" and kinds.count("opened") == 1
    assert kinds.count("ended") == 1 and kinds.count("callback_ran") == 2  # the probe's two
    assert kinds.index("ended") < kinds.index("callback_ran")
    assert p.sync_calls[conn.id] == 1 and p.log.ended[conn.id] == 1
    failed = {r.getMessage().split(" failed on ")[1].split("(")[0] for r in caplog.records
              if r.levelno == logging.ERROR and " failed on " in r.getMessage()}  # fmt: skip
    assert failed == {"opened", "ended", "pong", "callback_ran"}


class LeavesAfterOne(Observer):
    """Removes itself from the registry when it hears its first ending."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def ended(self, conn: Connection, ending: Ending) -> None:
        self.observers.remove(self)


class RaisesCancelled(Observer):
    def ended(self, conn: Connection, ending: Ending) -> None:
        raise asyncio.CancelledError  # e.g. .result() of a cancelled future, called in sync code


async def test_an_observer_removing_itself_or_raising_cancelled_never_costs_the_next_one(
    probe: Any, clients: list[Client]
) -> None:
    """Review: the next observer missed the event; a CancelledError broke the ending."""
    p: Probe = await probe()
    assert p.registry is not None
    observers = p.registry.observers
    after, last = Recording(), Recording()
    observers[:0] = [LeavesAfterOne(observers), after, RaisesCancelled(), last]
    client = await Client.raw(p.url, "close:1000")
    clients.append(client)
    conn = await p.next_conn()
    ending = await p.ended(conn, 5)  # the ending and its callbacks completed
    assert ending.reason is EndReason.CLIENT_CLOSED
    assert ("ended", conn.id) in after.events
    assert ("ended", conn.id) in last.events
    assert p.sync_calls[conn.id] == 1
    await eventually(lambda: conn.id not in p.registry.connections, 2, "the entry to go")  # type: ignore[union-attr]


async def test_an_application_started_again_accepts_websockets_again(
    clients: list[Client],
) -> None:
    """Review: the registry stayed 'shutting down' after a first run."""
    app = web.Application()
    wsfinally.setup(app)

    @wsfinally.endpoint()
    async def echo(conn: Connection) -> None:
        async for msg in conn:
            await conn.send(msg)

    app.router.add_get("/ws", echo)
    for _ in range(2):
        async with (
            serving(app) as base,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{base}/ws") as ws,
        ):
            await ws.send_str("again")
            assert (await ws.receive()).data == "again"
