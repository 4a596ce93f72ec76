"""The hub: rooms, broadcast and presence over one small backend interface.

Each node is the truth for its own members: joins and leaves of local connections are
applied and told to local subscribers at once, and handed to the backend without waiting
for it. What other nodes report arrives as versioned events (one counter per room) and is
applied to a per-room *view*; a view is read once from a snapshot, and events already in
the snapshot are dropped, so a subscriber gets its ``presence`` first and then every
change exactly once. Applying an event is idempotent (a join of a present member, a leave
of an absent one, changes nothing), which is what makes a backend that publishes at least
once deliver exactly once.

A connection that ends leaves every room it joined, once, and the leave carries its
:class:`~wsfinally.EndReason`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .events import LEFT, UNKNOWN, HubEvent, Member

if TYPE_CHECKING:
    from ..connection import Connection
    from ..ending import Ending

__all__ = ["Backend", "Change", "Hub", "HubStats", "Snapshot", "Subscriber"]

logger = logging.getLogger("wsfinally.hub")

Subscriber = Callable[[HubEvent], Any]


class Change(NamedTuple):
    """One published change of a room: its ``version`` within the room's ``generation``
    (a room's history starts again when a backend lost it, e.g. an empty Redis restart)."""

    version: int
    kind: str  # "join" or "leave"
    member: Member
    reason: str | None = None
    generation: str = ""


@dataclass
class Snapshot:
    """A room as the backend holds it: ``version`` counts the room's changes so far in
    ``generation``; ``log`` holds the latest changes (oldest first) for replay."""

    version: int
    members: list[Member]
    log: list[Change]
    generation: str = ""


class Backend(Protocol):
    """Where a hub meets the other nodes. Every method but ``snapshot``, ``start`` and
    ``stop`` returns at once: local delivery never waits for a backend."""

    async def start(self, hub: Hub) -> None: ...

    async def stop(self) -> None: ...

    def joined(self, member: Member) -> None: ...

    def left(self, member: Member, reason: str) -> None: ...

    def published(self, room: str, data: str | bytes, exclude: str | None) -> None: ...

    async def snapshot(self, room: str) -> Snapshot | None:
        """The room now, or None when the backend cannot tell (it is unreachable)."""
        ...

    def resync(self, room: str) -> None:
        """Bring the hub's view of ``room`` back in line as soon as the backend can (by
        calling ``Hub._resync`` with a fresh snapshot); a no-op for a single process."""
        ...


@dataclass
class HubStats:
    """Counters (metrics read them)."""

    joins: int = 0
    leaves: int = 0
    broadcasts: int = 0
    delivered: int = 0  # messages accepted by a local connection's send buffer
    skipped: int = 0  # local members not open, or refusing (over their send limit)
    subscriber_errors: int = 0


class _View:
    """The members of one room on other nodes, as this node knows them.

    ``buffer`` is not None while the view waits for a resync (it was read while the
    backend was away, or the backend's subscription was renewed): changes are held there
    and applied, past the fresh snapshot's version, when the resync comes.
    """

    __slots__ = ("buffer", "generation", "members", "pending", "ready", "unconfirmed", "version")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.version = -1  # -1: never in line with the backend
        self.generation = ""
        self.ready: asyncio.Future[None] | None = None  # set while the first snapshot loads
        self.pending: list[Change] | None = []  # changes that came while it loaded
        self.buffer: list[Change] | None = None
        self.unconfirmed: set[str] = set()  # awaiting their node's return after a reset


class Hub:
    """Rooms of connections on this node, joined up with other nodes by ``backend``."""

    def __init__(self, backend: Backend | None = None, *, node: str | None = None) -> None:
        if backend is None:
            from .memory import MemoryBackend

            backend = MemoryBackend()
        self.backend = backend
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stats = HubStats()
        self._local: dict[str, dict[str, tuple[Connection, Member]]] = {}  # room -> id ->
        self._rooms_of: dict[str, dict[str, Member]] = {}  # connection id -> room -> member
        self._subs: dict[str, list[Subscriber]] = {}
        self._member_subs: dict[str, Subscriber] = {}  # member id + room -> its on_event
        self._views: dict[str, _View] = {}
        self._hooked: set[str] = set()  # connections whose end callback is registered
        self._started = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, app: object = None) -> None:
        if not self._started:
            self._started = True
            await self.backend.start(self)

    async def stop(self, app: object = None) -> None:
        if self._started:
            self._started = False
            await self.backend.stop()

    # -- public API ----------------------------------------------------------------

    async def join(
        self,
        conn: Connection,
        room: str,
        presence: Mapping[str, Any] | None = None,
        *,
        on_event: Subscriber | None = None,
    ) -> list[Member]:
        """Put ``conn`` in ``room``; the room's members (across nodes, ``conn`` included).

        ``on_event`` (sync) first gets a ``presence`` event, then every ``join`` and
        ``leave`` of the room until ``conn`` leaves it. When ``conn`` ends, it leaves
        every room with its end reason, once. Raises ``ConnectionResetError`` when the
        connection is already closing, ``ValueError`` when it is already in ``room``.
        """
        if conn.closed:
            raise ConnectionResetError(f"websocket {conn.id} is closing")
        if room in self._rooms_of.get(conn.id, {}):
            raise ValueError(f"{conn.id} is already in room {room!r}")
        payload = dict(presence or {})
        json.dumps(payload)  # TypeError now, to the caller, not later in a backend's sender
        view = await self._view(room)
        if conn.closed:  # it ended while the room was being read
            self._maybe_drop_view(room)
            raise ConnectionResetError(f"websocket {conn.id} is closing")
        if room in self._rooms_of.get(conn.id, {}):
            raise ValueError(f"{conn.id} is already in room {room!r}")
        member = Member(f"{self.node}/{conn.id}", self.node, room, payload)
        rooms = self._rooms_of.get(conn.id)
        if rooms is None:
            rooms = self._rooms_of[conn.id] = {}
        if conn.id not in self._hooked:  # one end callback per connection, however many joins
            self._hooked.add(conn.id)
            conn.on_end(functools.partial(self._on_connection_end, conn.id))
        rooms[room] = member
        self._local.setdefault(room, {})[member.id] = (conn, member)
        self.stats.joins += 1
        self._emit(HubEvent("join", room, member))
        members = self._members_of(room, view)
        if on_event is not None:
            self._member_subs[_key(member)] = on_event
            self._subs.setdefault(room, []).append(on_event)
            self._call(on_event, HubEvent("presence", room, members=tuple(members)))
        self.backend.joined(member)
        return members

    def leave(self, conn: Connection, room: str, reason: str = LEFT) -> bool:
        """Take ``conn`` out of ``room`` (leave reason ``left``); False if it was not in."""
        return self._leave(conn.id, room, reason)

    def rooms(self, conn: Connection) -> list[str]:
        return list(self._rooms_of.get(conn.id, ()))

    async def members(self, room: str) -> list[Member]:
        """The room's members on every node (as this node knows them)."""
        view = self._views.get(room)
        if view is not None and view.pending is None:
            return self._members_of(room, view)
        snap = await self.backend.snapshot(room)
        remote = [m for m in snap.members if m.node != self.node] if snap else []
        return remote + [m for _, m in self._local.get(room, {}).values()]

    def broadcast(self, room: str, data: str | bytes, *, exclude: Connection | None = None) -> int:
        """Send ``data`` to every member of ``room`` on every node; never waits.

        Local members get it through ``send_nowait``: one that is not open or holds
        ``send_limit`` unread is skipped (and ends ``slow_consumer`` if it stays so).
        Returns how many local members took it.
        """
        self.stats.broadcasts += 1
        skip = None if exclude is None else f"{self.node}/{exclude.id}"
        taken = self._deliver(room, data, skip)
        self.backend.published(room, data, skip)
        return taken

    async def subscribe(self, room: str, callback: Subscriber) -> Callable[[], None]:
        """``callback`` (sync) gets ``presence`` now, then the room's joins and leaves.

        Returns the function that unsubscribes.
        """
        view = await self._view(room)
        self._subs.setdefault(room, []).append(callback)
        self._call(
            callback, HubEvent("presence", room, members=tuple(self._members_of(room, view)))
        )

        def unsubscribe() -> None:
            subs = self._subs.get(room)
            if subs and callback in subs:
                subs.remove(callback)
                self._maybe_drop_view(room)

        return unsubscribe

    def counts(self) -> tuple[int, int]:
        """(rooms with a member on this node, members on this node)."""
        return len(self._local), sum(len(m) for m in self._local.values())

    # -- local membership ----------------------------------------------------------

    def _on_connection_end(self, conn_id: str, ending: Ending) -> None:
        self._hooked.discard(conn_id)
        for room in list(self._rooms_of.get(conn_id, ())):
            self._leave(conn_id, room, ending.reason.value)

    def _leave(self, conn_id: str, room: str, reason: str) -> bool:
        rooms = self._rooms_of.get(conn_id)
        member = rooms.pop(room, None) if rooms is not None else None
        if member is None:
            return False
        if not rooms:
            del self._rooms_of[conn_id]
        local = self._local.get(room)
        if local is not None:
            local.pop(member.id, None)
            if not local:
                del self._local[room]
        own = self._member_subs.pop(_key(member), None)
        if own is not None:
            subs = self._subs.get(room)
            if subs and own in subs:
                subs.remove(own)
        self.stats.leaves += 1
        self._emit(HubEvent("leave", room, member, reason))
        self.backend.left(member, reason)
        self._maybe_drop_view(room)
        return True

    # -- what other nodes say (called by the backend) -------------------------------

    def _remote(self, change: Change) -> None:
        """One change from the backend's stream, in the order the backend published it."""
        member = change.member
        if member.node == self.node:
            return  # our own members: we are their truth
        room = member.room
        view = self._views.get(room)
        if view is None:
            return  # nobody here cares about this room
        if view.pending is not None:  # its snapshot is still loading
            view.pending.append(change)
            return
        if view.buffer is not None:  # waiting for its resync
            view.buffer.append(change)
            return
        if change.generation != view.generation:
            if not view.generation and view.version == 0 and change.version == 1:
                view.generation = change.generation  # the room's first change since we read it
            else:  # the room's history started again (the backend lost it): read it anew
                view.buffer = [change]
                self.backend.resync(room)
                return
        if change.version <= view.version:
            return  # already in the snapshot
        view.version = change.version
        self._apply(view, change.kind, member, change.reason)

    def _apply(self, view: _View, kind: str, member: Member, reason: str | None) -> None:
        view.unconfirmed.discard(member.id)
        if kind == "join":
            if member.id not in view.members:
                view.members[member.id] = member
                self._emit(HubEvent("join", member.room, member))
            else:
                view.members[member.id] = member
        elif member.id in view.members:
            del view.members[member.id]
            self._emit(HubEvent("leave", member.room, member, reason or UNKNOWN))

    def _begin_resync(self) -> None:
        """The backend is about to subscribe anew: hold every view's changes until its
        resync (views still loading are marked too: their snapshot may predate the gap)."""
        for view in self._views.values():
            if view.buffer is None:
                view.buffer = []

    def _needs_resync(self) -> list[str]:
        return [room for room, v in self._views.items() if v.buffer is not None and not v.pending]

    def _resync(self, room: str, snap: Snapshot, grace: float) -> None:
        """Bring a view back in line from a fresh snapshot.

        Same history (generation) as the view: replay the logged changes it missed; if
        the log does not reach back far enough, apply the difference with leave reason
        ``unknown`` (and log it). A new history (the backend lost the room): replay the new
        log, add the members it does not know, and give the members it knows that the
        backend lost ``grace`` seconds for their node to bring them back before they
        leave as ``node_lost``. A view never in line (read while the backend was away)
        takes the snapshot's members. Changes held since then follow.
        """
        view = self._views.get(room)
        if view is None or view.pending is not None:
            return
        held, view.buffer = view.buffer or [], None
        mine = [c for c in snap.log if c.member.node != self.node]
        present = {m.id: m for m in snap.members if m.node != self.node}
        same = view.version >= 0 and snap.generation == view.generation
        missed = [c for c in mine if c.version > view.version] if same else []
        in_line = same and (
            snap.version == view.version or any(c.version == view.version + 1 for c in snap.log)
        )
        if in_line:
            for change in missed:
                self._apply(view, change.kind, change.member, change.reason)
        else:
            reset = view.version >= 0 and not same
            if reset:
                for change in mine:
                    self._apply(view, change.kind, change.member, change.reason)
            for member in present.values():
                self._apply(view, "join", member, None)
            gone = [m for mid, m in view.members.items() if mid not in present]
            if gone and reset:
                view.unconfirmed.update(m.id for m in gone)
                asyncio.get_running_loop().call_later(grace, self._expire_unconfirmed, room)
            elif gone:
                logger.warning(
                    "hub: room %r: %d leave(s) older than the event log", room, len(gone)
                )
                for member in gone:
                    self._apply(view, "leave", member, UNKNOWN)
        view.version = snap.version
        view.generation = snap.generation
        for change in held:
            if change.generation == view.generation and change.version > view.version:
                view.version = change.version
                self._apply(view, change.kind, change.member, change.reason)

    def _expire_unconfirmed(self, room: str) -> None:
        view = self._views.get(room)
        if view is None or not view.unconfirmed:
            return
        for mid in list(view.unconfirmed):
            member = view.members.get(mid)
            if member is not None:
                self._apply(view, "leave", member, "node_lost")
        view.unconfirmed.clear()

    def _deliver(self, room: str, data: str | bytes, skip: str | None) -> int:
        """Hand ``data`` to this node's members of ``room`` (called for remote ones too)."""
        taken = 0
        for mid, (conn, _) in list(self._local.get(room, {}).items()):
            if mid == skip:
                continue
            if conn.send_nowait(data):
                taken += 1
            else:
                self.stats.skipped += 1
        self.stats.delivered += taken
        return taken

    def _tracked_rooms(self) -> list[str]:
        return list(self._views)

    def _local_members(self) -> Iterable[Member]:
        for room in self._local.values():
            for _, member in room.values():
                yield member

    # -- views ---------------------------------------------------------------------

    async def _view(self, room: str) -> _View:
        while True:
            view = self._views.get(room)
            if view is None:
                view = self._views[room] = _View()
                view.ready = asyncio.get_running_loop().create_future()
                try:
                    snap = await self.backend.snapshot(room)
                except BaseException:
                    waiter, view.ready = view.ready, None
                    if self._views.get(room) is view:
                        del self._views[room]
                    waiter.set_result(None)  # the others waiting load it themselves
                    raise
                self._load(room, view, snap)
                return view
            if view.ready is None:
                return view
            await asyncio.shield(view.ready)
            # loaded, or given up, or dropped since: look again

    def _load(self, room: str, view: _View, snap: Snapshot | None) -> None:
        pending, view.pending = view.pending or [], None
        if snap is None:  # the backend is away: hold the changes until it resyncs us
            view.buffer = (view.buffer or []) + pending
        else:
            view.version = snap.version
            view.generation = snap.generation
            for member in snap.members:
                if member.node != self.node:
                    view.members[member.id] = member
            if view.buffer is not None:  # its subscription was renewed while it loaded
                view.buffer.extend(pending)
            else:
                for change in pending:
                    self._remote(change)
        if view.ready is not None:
            view.ready.set_result(None)
            view.ready = None
        if view.buffer is not None:
            self.backend.resync(room)

    def _maybe_drop_view(self, room: str) -> None:
        view = self._views.get(room)
        if view is not None and view.pending is None and not self._local.get(room):
            if not self._subs.get(room):
                self._subs.pop(room, None)
                del self._views[room]

    def _members_of(self, room: str, view: _View) -> list[Member]:
        return list(view.members.values()) + [m for _, m in self._local.get(room, {}).values()]

    # -- delivery to subscribers ---------------------------------------------------

    def _emit(self, event: HubEvent) -> None:
        for callback in list(self._subs.get(event.room, ())):
            self._call(callback, event)

    def _call(self, callback: Subscriber, event: HubEvent) -> None:
        try:
            callback(event)
        except Exception:
            self.stats.subscriber_errors += 1
            logger.exception("hub: a subscriber of room %r raised", event.room)


def _key(member: Member) -> str:
    return f"{member.id}\n{member.room}"
