"""What the hub tells its subscribers: members and the events of a room.

Pure module: no asyncio. A member is one connection in one room; its ``id`` is unique
across nodes (``<node>/<connection id>``). A leave always carries a reason: the
connection's :class:`~wsfinally.EndReason` value when it ended, ``node_lost`` when its
server node died, ``left`` when the application took it out of the room while the
connection stayed open.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LEFT", "UNKNOWN", "HubEvent", "Member"]

#: The leave reason of a member taken out of a room while its connection stays open.
LEFT = "left"
#: The leave reason when a node could not learn why (its event log was outrun during a
#: Redis outage): rare, logged, and never invented.
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Member:
    """One connection in one room, as every node sees it."""

    id: str
    node: str
    room: str
    presence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "node": self.node, "room": self.room, "presence": self.presence},
            separators=(",", ":"),
        )

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> Member:
        return cls(str(obj["id"]), str(obj["node"]), str(obj["room"]), obj.get("presence") or {})


@dataclass(frozen=True, slots=True)
class HubEvent:
    """``presence`` (the room's members, sent first to each new subscriber), ``join``
    or ``leave`` (with ``reason``)."""

    type: Literal["presence", "join", "leave"]
    room: str
    member: Member | None = None
    reason: str | None = None
    members: tuple[Member, ...] = ()
