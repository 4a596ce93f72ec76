from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import pytest
import uvloop

from hubsupport import RedisServer, missing, redis_answers, shared_redis_url
from support import Client, Probe

LOOPS: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on plain asyncio and on uvloop."""
    return LOOPS


@pytest.fixture
async def probe() -> AsyncIterator[Callable[..., Awaitable[Probe]]]:
    """``await probe(style, runner_kwargs=None, **settings)``: a started probe server."""
    started: list[Probe] = []

    async def start(
        style: str = "endpoint", runner_kwargs: dict[str, Any] | None = None, **settings: Any
    ) -> Probe:
        p = await Probe(style, settings, runner_kwargs or {}).start()
        started.append(p)
        return p

    yield start
    for p in started:
        await p.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Client processes to kill at the end of the test, whatever happened."""
    spawned: list[Client] = []
    yield spawned
    for c in spawned:
        await c.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for websockets and HTTP requests made in this process."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis that answers: the machine's (or ``$WSFINALLY_REDIS_URL``), else a throwaway
    ``redis-server`` started for the session. Neither: skipped locally, failed in CI."""
    url = shared_redis_url()
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    if redis_answers(host, int(port)):
        yield url
        return
    server = RedisServer()
    try:
        server.start()
    except RuntimeError as exc:
        missing(f"a Redis server ({exc})")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may kill and start again."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
