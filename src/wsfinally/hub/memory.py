"""The in-memory backend (the default): one process, no setup.

Every member is local, so there is nobody else to tell: the hub's own bookkeeping is
the whole truth and nothing here can fail or wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core import Snapshot
from .events import Member

if TYPE_CHECKING:
    from .core import Hub

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """A hub backend for a single process."""

    connected = True

    async def start(self, hub: Hub) -> None:
        pass

    async def stop(self) -> None:
        pass

    def joined(self, member: Member) -> None:
        pass

    def left(self, member: Member, reason: str) -> None:
        pass

    def published(self, room: str, data: str | bytes, exclude: str | None) -> None:
        pass

    async def snapshot(self, room: str) -> Snapshot | None:
        return Snapshot(0, [], [])

    def resync(self, room: str) -> None:
        pass
