from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import uvloop

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
