"""Rooms, broadcast and presence: in memory on one process, through Redis across many.

``setup_hub(app)`` installs a :class:`Hub` under :data:`HUB`; handlers ``await
hub.join(conn, room, presence, on_event=...)``, ``hub.broadcast(room, data)`` and read
``await hub.members(room)``. A connection that ends leaves every room it joined, once,
with its end reason; a server node that dies leaves its members' rooms as ``node_lost``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import Backend, Hub, HubStats, Snapshot, Subscriber
from .events import LEFT, UNKNOWN, HubEvent, Member
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = [
    "HUB",
    "LEFT",
    "UNKNOWN",
    "Backend",
    "Hub",
    "HubEvent",
    "HubStats",
    "Member",
    "MemoryBackend",
    "RedisBackend",
    "Snapshot",
    "Subscriber",
    "setup_hub",
]

HUB: web.AppKey[Hub] = web.AppKey("wsfinally.hub", Hub)


def setup_hub(
    app: web.Application,
    backend: Backend | None = None,
    *,
    redis: str | None = None,
    node: str | None = None,
    **redis_options: Any,
) -> Hub:
    """Install a hub on ``app`` (started and stopped with it); returns it.

    In memory by default; ``redis="redis://host:6379/0"`` (with ``RedisBackend``'s
    options: ``lease_ttl``, ``namespace``, ...) shares it between server nodes.
    Call it before the application starts.
    """
    if HUB in app:
        raise RuntimeError("wsfinally.hub.setup_hub() was already called for this application")
    if redis is not None:
        if backend is not None:
            raise ValueError("give a backend or a redis URL, not both")
        backend = RedisBackend(redis, **redis_options)
    elif redis_options:
        raise TypeError(f"options for the Redis backend without a URL: {sorted(redis_options)}")
    hub = Hub(backend, node=node)
    app[HUB] = hub
    app.on_startup.append(hub.start)
    # on_cleanup runs after on_shutdown: wsfinally's shutdown has ended every connection
    # by then, so their leaves are queued and the backend can say them before it stops
    app.on_cleanup.append(hub.stop)
    return hub
