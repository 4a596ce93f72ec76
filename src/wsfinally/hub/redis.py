"""The Redis backend: presence and messages shared by many server nodes.

State in Redis, every key under one hash tag (``{wsf}:…``):

- ``nodes`` (set) and ``lease:<node>`` (a key with a TTL each node renews every third of it);
- ``node:<node>`` (set): the node's members, so a dead node's members can be found;
- ``room:<room>:m`` (hash member id -> member), ``room:<room>:v`` (the room's event counter),
  ``room:<room>:log`` (the latest events, newest first, for replay after an outage).

Every change is one Lua script that updates the state, counts the room's version, logs
the event and publishes it on ``events`` in one atomic step. When a node's lease expires,
each survivor runs the reaper; the script removes the dead node from ``nodes`` and publishes
its members' leaves (reason ``node_lost``) in the same step, so exactly one survivor does it.

Local delivery never waits for Redis: the hub hands operations to queues that one task
applies in order, in pipelined batches. When Redis goes away the outage is logged and
counted, local delivery goes on, and the queues keep presence changes (all of them: one
join and one leave per member at most) and up to ``max_pending_messages`` broadcasts for
other nodes (beyond that the oldest waiting are dropped and counted, outage or burst).
On reconnection the node subscribes again, re-registers its lease and every member it
holds (joins are idempotent), sends what waited (leaves are published at least once and
applied at most once), and brings each room it watches back in line from a snapshot plus
the event log. A node that finds its lease gone (it froze past it, or Redis restarted
empty) registers again the same way. Keys are built inside scripts: one Redis, not Redis
Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .core import Change, Snapshot
from .events import Member

if TYPE_CHECKING:
    from .core import Hub

__all__ = ["RedisBackend", "RedisStats"]

logger = logging.getLogger("wsfinally.hub")

T = TypeVar("T")

# The room's version is a hash {n: counter, g: generation}. A generation is born with the
# room's first change (HSETNX of a fresh id), so a room whose history Redis lost (a restart,
# an expiry) starts a new one and every node knows to read it anew. The version and the log
# expire ``key_ttl`` after the room was left empty, never while it has members.
_VERSION = """
redis.call('HSETNX', KEYS[2], 'g', ARGV[7])
local g = redis.call('HGET', KEYS[2], 'g')
local v = redis.call('HINCRBY', KEYS[2], 'n', 1)
"""

_TAIL = """
redis.call('LPUSH', KEYS[3], ev)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
else
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
redis.call('PUBLISH', ARGV[4], ev)
return v
"""

# KEYS: room members, room version, room log, node members, node lease
# ARGV: member id, member json, log size, channel, node entry, key ttl ms, new generation
_JOIN = (
    """
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[5])
"""
    + _VERSION
    + """
local ev = '{"t":"join","v":' .. v .. ',"g":"' .. g .. '","m":' .. ARGV[2] .. '}'
"""
    + _TAIL
)

# KEYS, ARGV: as _JOIN, then the reason as a JSON string. Published even when the member
# is not (or no longer) there: leaves are said at least once and applied at most once.
_LEAVE = (
    """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[5])
"""
    + _VERSION
    + """
local ev = '{"t":"leave","v":' .. v .. ',"g":"' .. g .. '","r":' .. ARGV[8]
  .. ',"m":' .. ARGV[2] .. '}'
"""
    + _TAIL
)

# KEYS: nodes; ARGV: key prefix, channel, log size, key ttl ms, new generation.
# Removing the node from ``nodes`` is the claim: one survivor publishes its members' leaves.
_REAP = """
local lost = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'lease:' .. node) == 0 then
    redis.call('SREM', KEYS[1], node)
    local set = ARGV[1] .. 'node:' .. node
    for _, entry in ipairs(redis.call('SMEMBERS', set)) do
      local e = cjson.decode(entry)
      local base = ARGV[1] .. 'room:' .. e[1]
      local mj = redis.call('HGET', base .. ':m', e[2])
      if mj then
        redis.call('HDEL', base .. ':m', e[2])
        redis.call('HSETNX', base .. ':v', 'g', ARGV[5])
        local g = redis.call('HGET', base .. ':v', 'g')
        local v = redis.call('HINCRBY', base .. ':v', 'n', 1)
        local ev = '{"t":"leave","v":' .. v .. ',"g":"' .. g .. '","r":"node_lost","m":'
          .. mj .. '}'
        redis.call('LPUSH', base .. ':log', ev)
        redis.call('LTRIM', base .. ':log', 0, tonumber(ARGV[3]) - 1)
        if redis.call('HLEN', base .. ':m') == 0 then
          redis.call('PEXPIRE', base .. ':v', ARGV[4])
          redis.call('PEXPIRE', base .. ':log', ARGV[4])
        end
        redis.call('PUBLISH', ARGV[2], ev)
      end
    end
    redis.call('DEL', set)
    table.insert(lost, node)
  end
end
return lost
"""

# KEYS: lease; ARGV: ttl ms. A lease that is gone is not recreated: the caller registers.
_RENEW = "return redis.call('PEXPIRE', KEYS[1], ARGV[1])"

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis-py is an optional dependency
    _RedisError = OSError  # type: ignore[misc, assignment]

_ERRORS: tuple[type[BaseException], ...] = (_RedisError, OSError, asyncio.TimeoutError)
_BATCH = 256


@dataclass
class RedisStats:
    """Counters of the Redis backend (metrics read them)."""

    outages: int = 0
    reconnects: int = 0
    dropped_messages: int = 0  # broadcasts for other nodes dropped: over max_pending_messages
    bad_payloads: int = 0
    nodes_reaped: int = 0  # dead nodes this node removed (each by exactly one survivor)
    resyncs: int = 0  # times this node found its lease gone and registered again
    sender_errors: int = 0  # unexpected failures of the sender (logged; the op is dropped)


class _Op:
    __slots__ = ("attempted", "dropped", "kind", "member", "payload", "reason")

    def __init__(
        self, kind: str, member: Member | None = None, reason: str = "", payload: bytes = b""
    ) -> None:
        self.kind = kind  # "join", "leave" or "msg"
        self.member = member
        self.reason = reason
        self.payload = payload
        self.dropped = False
        self.attempted = False  # sent to Redis at least once: it may have run there


class RedisBackend:
    """A hub backend over ``redis.asyncio`` (``pip install wsfinally[redis]``)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "wsf",
        lease_ttl: float = 10.0,
        scan_interval: float = 1.0,
        log_size: int = 200,
        max_pending_messages: int = 10_000,
        command_timeout: float = 2.0,
        key_ttl: float = 86400.0,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis URL must start with redis://, rediss:// or unix://: {url!r}")
        try:
            from redis.asyncio.connection import parse_url
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "the Redis hub needs redis-py: pip install 'wsfinally[redis]'"
            ) from None
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(f"bad redis URL {url!r}: {exc}") from None
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace must be non-empty, without braces: {namespace!r}")
        for name, value in (
            ("lease_ttl", lease_ttl),
            ("scan_interval", scan_interval),
            ("command_timeout", command_timeout),
            ("key_ttl", key_ttl),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if scan_interval > lease_ttl:
            raise ValueError("scan_interval must not exceed lease_ttl")
        if log_size < 1 or max_pending_messages < 1:
            raise ValueError("log_size and max_pending_messages must be >= 1")
        self.url = url
        self.lease_ttl = lease_ttl
        self.scan_interval = scan_interval
        self.log_size = log_size
        self.max_pending_messages = max_pending_messages
        self.command_timeout = command_timeout
        self.stats = RedisStats()
        self.connected = False
        self._prefix = "{" + namespace + "}:"
        self._channel = self._prefix + "events"
        self._key_ttl_ms = str(int(key_ttl * 1000))
        self._hub: Hub | None = None
        self._client: Any = None
        self._pubsub: Any = None
        self._scripts: dict[str, Any] = {}
        self._presence: deque[tuple[int, _Op]] = deque()  # joins and leaves, in order
        self._messages: deque[tuple[int, _Op]] = deque()  # broadcasts for other nodes
        self._seq = 0  # orders the two queues' operations as they were made
        self._in_flight = 0  # broadcasts at the head of _messages being sent now
        self._unsent_joins: dict[str, _Op] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while both queues are empty
        self._idle.set()
        self._up = asyncio.Event()
        self._epoch: str | None = None
        self._down_since = 0.0
        self._resync_rooms: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._resyncer: asyncio.Task[None] | None = None
        self._stopping = False

    # -- keys ------------------------------------------------------------------------

    def _room_keys(self, member: Member) -> list[str]:
        base = f"{self._prefix}room:{member.room}"
        node = self._hub.node if self._hub is not None else member.node
        return [
            f"{base}:m",
            f"{base}:v",
            f"{base}:log",
            f"{self._prefix}node:{node}",
            f"{self._prefix}lease:{node}",
        ]

    @property
    def _lease(self) -> str:
        assert self._hub is not None
        return f"{self._prefix}lease:{self._hub.node}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, hub: Hub) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._hub = hub
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.command_timeout,
            socket_timeout=self.command_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {
            name: self._client.register_script(lua)
            for name, lua in (
                ("join", _JOIN),
                ("leave", _LEAVE),
                ("reap", _REAP),
                ("renew", _RENEW),
            )
        }
        try:
            await asyncio.wait_for(self._connect(), self.command_timeout * 2)
        except _ERRORS as exc:
            self._down(exc)
        self._tasks = [
            asyncio.create_task(self._work(), name="wsfinally.hub.redis.work"),
            asyncio.create_task(self._keep(), name="wsfinally.hub.redis.keep"),
        ]

    async def stop(self) -> None:
        """Publish what is queued (for up to ``command_timeout``), give up the lease and
        let the reaper take whatever could not be said (as ``node_lost``)."""
        self._stopping = True
        if not self._idle.is_set() and self.connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await _bounded(self._idle.wait(), self.command_timeout)
        if self.connected:
            with contextlib.suppress(*_ERRORS):
                await _bounded(self._client.delete(self._lease), self.command_timeout)
                await _bounded(self._reap(), self.command_timeout)
        tasks = [
            t
            for t in (*self._tasks, self._listener, self._reconnector, self._resyncer)
            if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:  # each checks _stopping too: a cancellation swallowed cannot keep it going
            _, lingering = await asyncio.wait(tasks, timeout=self.command_timeout)
            for task in lingering:
                logger.warning("hub: %s did not stop", task.get_name())
        self.connected = False
        if self._pubsub is not None:
            with contextlib.suppress(*_ERRORS):
                await self._pubsub.aclose()
        if self._client is not None:
            with contextlib.suppress(*_ERRORS):
                await self._client.aclose()

    # -- the hub's operations (never wait) ---------------------------------------------

    def joined(self, member: Member) -> None:
        op = _Op("join", member)
        self._unsent_joins[member.id + "\n" + member.room] = op
        self._push(self._presence, op)

    def left(self, member: Member, reason: str) -> None:
        join = self._unsent_joins.pop(member.id + "\n" + member.room, None)
        if join is not None and not join.attempted and not join.dropped:
            join.dropped = True  # nobody was told of it: nobody needs to hear it ended
            return
        self._push(self._presence, _Op("leave", member, reason))

    def published(self, room: str, data: str | bytes, exclude: str | None) -> None:
        assert self._hub is not None
        text = isinstance(data, str)
        header = {"r": room, "n": self._hub.node, "x": exclude, "t": text}
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        payload = b"M" + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body
        if len(self._messages) - self._in_flight >= self.max_pending_messages:
            del self._messages[self._in_flight]  # the oldest not being sent
            self.stats.dropped_messages += 1
        self._push(self._messages, _Op("msg", payload=payload))

    def resync(self, room: str) -> None:
        self._resync_rooms.add(room)
        if self.connected and (self._resyncer is None or self._resyncer.done()):
            self._resyncer = asyncio.get_running_loop().create_task(
                self._resync_pending(), name="wsfinally.hub.redis.resync"
            )

    def _push(self, queue: deque[tuple[int, _Op]], op: _Op) -> None:
        self._seq += 1
        queue.append((self._seq, op))
        self._idle.clear()
        self._wake.set()

    async def snapshot(self, room: str) -> Snapshot | None:
        if not self.connected:
            return None
        try:
            return await asyncio.wait_for(self._snapshot(room), self.command_timeout)
        except _ERRORS as exc:
            self._down(exc)
            return None

    async def _snapshot(self, room: str) -> Snapshot:
        base = f"{self._prefix}room:{room}"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(f"{base}:v")
            pipe.hvals(f"{base}:m")
            pipe.lrange(f"{base}:log", 0, -1)
            version, members, log = await pipe.execute()
        changes = []
        for raw in reversed(log):
            change = self._parse(raw)
            if change is not None:
                changes.append(change)
        return Snapshot(
            int(version.get(b"n", 0)),
            [Member.from_obj(json.loads(m)) for m in members],
            changes,
            version.get(b"g", b"").decode(),
        )

    async def _resync_pending(self) -> None:
        assert self._hub is not None
        while self._resync_rooms and self.connected and not self._stopping:
            room = self._resync_rooms.pop()
            try:
                snap = await asyncio.wait_for(self._snapshot(room), self.command_timeout)
            except _ERRORS as exc:
                self._resync_rooms.add(room)  # the reconnection resyncs it
                self._down(exc)
                return
            self._hub._resync(room, snap, self.lease_ttl)

    # -- the worker: applies queued operations in order, in batches -------------------

    def _take(self) -> list[_Op]:
        """Up to _BATCH operations from the heads of both queues, in the order made."""
        for queue in (self._presence, self._messages):
            while queue and queue[0][1].dropped:
                queue.popleft()
        batch: list[_Op] = []
        i = j = 0
        p, m = self._presence, self._messages
        while len(batch) < _BATCH and (i < len(p) or j < len(m)):
            if j >= len(m) or (i < len(p) and p[i][0] < m[j][0]):
                batch.append(p[i][1])
                i += 1
            else:
                batch.append(m[j][1])
                j += 1
        self._in_flight = j
        return batch

    def _done(self, batch: list[_Op]) -> None:
        for op in batch:
            queue = self._messages if op.kind == "msg" else self._presence
            if queue and queue[0][1] is op:
                queue.popleft()
            if op.kind == "join" and op.member is not None:
                key = op.member.id + "\n" + op.member.room
                if self._unsent_joins.get(key) is op:
                    del self._unsent_joins[key]

    async def _work(self) -> None:
        while not self._stopping:
            if not self._presence and not self._messages:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.connected:
                await self._up.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            for op in batch:
                op.attempted = True
            try:
                if await asyncio.wait_for(self._send(batch), self.command_timeout):
                    # a join found our lease gone (we froze past it, or Redis lost it): the
                    # rest of the batch ran; registering again re-adds every member we hold
                    self._lease_lost()
                    await asyncio.wait_for(self._register(), self.command_timeout * 2)
            except _ERRORS as exc:
                self._down(exc)  # the batch stays queued and goes again once reconnected
                continue
            except Exception:
                self.stats.sender_errors += 1
                logger.exception("hub: sending to Redis failed; dropping %r", batch[0].kind)
                batch = batch[:1]
            finally:
                self._in_flight = 0
            self._done(batch)

    async def _send(self, batch: list[_Op]) -> bool:
        """Send a batch in one pipeline; True if a join found our lease gone."""
        cap, ttl = str(self.log_size), self._key_ttl_ms
        sent = 0
        async with self._client.pipeline(transaction=False) as pipe:
            for op in batch:
                if op.dropped:
                    continue
                sent += 1
                if op.kind == "msg":
                    pipe.publish(self._channel, op.payload)
                    continue
                member = op.member
                assert member is not None
                entry = json.dumps([member.room, member.id])
                args = [member.id, member.to_json(), cap, self._channel, entry, ttl, _gen()]
                if op.kind == "leave":
                    args.append(json.dumps(op.reason))
                script = self._scripts[op.kind]
                await script(keys=self._room_keys(member), args=args, client=pipe)
            if not sent:
                return False
            results = await pipe.execute()
        return any(r == -1 for r in results)

    # -- the keeper: lease renewal and the reaper --------------------------------------

    async def _keep(self) -> None:
        renew_every = self.lease_ttl / 3
        renewed = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(self.scan_interval)
            if not self.connected or self._stopping:
                continue
            try:
                if time.monotonic() - renewed >= renew_every:
                    alive = await asyncio.wait_for(
                        self._scripts["renew"](
                            keys=[self._lease], args=[int(self.lease_ttl * 1000)]
                        ),
                        self.command_timeout,
                    )
                    renewed = time.monotonic()
                    if not alive:  # declared dead (we froze) or Redis lost its state
                        self._lease_lost()
                        await asyncio.wait_for(self._register(), self.command_timeout * 2)
                await asyncio.wait_for(self._reap(), self.command_timeout)
            except _ERRORS as exc:
                self._down(exc)
            except Exception:  # pragma: no cover - defensive: the keeper must go on
                logger.exception("hub: lease renewal or reaping failed")

    def _lease_lost(self) -> None:
        self.stats.resyncs += 1
        node = self._hub.node if self._hub else "?"
        fields = {"event": "hub.lease_lost", "node": node}
        logger.warning("hub: node %s found its lease gone; registering again", node,
                       extra={"wsf": fields})  # fmt: skip

    async def _reap(self) -> None:
        lost = await self._scripts["reap"](
            keys=[self._prefix + "nodes"],
            args=[self._prefix, self._channel, str(self.log_size), self._key_ttl_ms, _gen()],
        )
        for node in lost or ():
            name = node.decode() if isinstance(node, bytes) else str(node)
            if self._hub is not None and name == self._hub.node:
                continue  # our own entry, removed as we stop
            self.stats.nodes_reaped += 1
            fields = {"event": "hub.node_lost", "node": name}
            logger.warning("hub: node %s lost its lease; its members left as node_lost", name,
                           extra={"wsf": fields})  # fmt: skip

    async def _register(self) -> None:
        """Take the lease and put every member this node holds back (idempotent)."""
        assert self._hub is not None
        node = self._hub.node
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._lease, node, px=int(self.lease_ttl * 1000))
            pipe.sadd(self._prefix + "nodes", node)
            await pipe.execute()
        members = list(self._hub._local_members())
        for i in range(0, len(members), _BATCH):
            await self._send([_Op("join", m) for m in members[i : i + _BATCH]])

    # -- the subscription --------------------------------------------------------------

    async def _listen(self, pubsub: Any) -> None:
        assert self._hub is not None
        hub = self._hub
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message["data"]
                if data[:1] == b"M":
                    try:
                        header, _, body = data[1:].partition(b"\n")
                        h = json.loads(header)
                        if h["n"] != hub.node:
                            hub._deliver(h["r"], body.decode("utf-8") if h["t"] else body, h["x"])
                    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                        self.stats.bad_payloads += 1
                    continue
                change = self._parse(data)
                if change is not None:
                    hub._remote(change)
        except _ERRORS as exc:
            if pubsub is self._pubsub:
                self._down(exc)
        except Exception as exc:  # pragma: no cover - defensive: resubscribe
            logger.exception("hub: the Redis subscription failed")
            if pubsub is self._pubsub:
                self._down(exc)

    def _parse(self, raw: bytes) -> Change | None:
        try:
            ev = json.loads(raw)
            kind = ev["t"]
            if kind not in ("join", "leave"):
                raise ValueError(kind)
            return Change(int(ev["v"]), kind, Member.from_obj(ev["m"]), ev.get("r"), ev["g"])
        except (ValueError, KeyError, TypeError):
            self.stats.bad_payloads += 1
            return None

    # -- outages -----------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        was_up = self.connected
        self.connected = False
        self._up.clear()
        if was_up:
            self.stats.outages += 1
            self._down_since = time.monotonic()
            fields = {"event": "hub.redis_down", "url": self.url, "error": repr(exc)}
            logger.error(
                "hub: Redis at %s unreachable (%r); local delivery goes on, retrying",
                self.url, exc, extra={"wsf": fields},
            )  # fmt: skip
        if not self._stopping and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.get_running_loop().create_task(
                self._reconnect(), name="wsfinally.hub.redis.reconnect"
            )

    async def _reconnect(self) -> None:
        delay = 0.05
        said = time.monotonic()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._connect(), self.command_timeout * 4)
                return
            except _ERRORS as exc:
                if time.monotonic() - said > 30:
                    said = time.monotonic()
                    logger.error("hub: Redis at %s still unreachable (%r)", self.url, exc)
                await asyncio.sleep(delay)  # back off between attempts
                delay = min(delay * 2, 1.0)

    async def _connect(self) -> None:
        """Subscribe, register, resync every view that needs it; then say we are up."""
        assert self._hub is not None
        hub = self._hub
        info = await self._client.info("server")
        epoch = str(info.get("run_id", ""))
        reset = self._epoch is not None and epoch != self._epoch
        first = self._epoch is None
        if self._pubsub is not None:
            old, self._pubsub = self._pubsub, None
            with contextlib.suppress(*_ERRORS):
                await old.aclose()
        if self._listener is not None:
            self._listener.cancel()
        hub._begin_resync()
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._channel)
        self._pubsub = pubsub
        self._listener = listener = asyncio.get_running_loop().create_task(
            self._listen(pubsub), name="wsfinally.hub.redis.listen"
        )
        self._epoch = epoch
        await self._register()
        self._resync_rooms.update(hub._needs_resync())
        while self._resync_rooms:
            room = self._resync_rooms.pop()
            try:
                snap = await self._snapshot(room)
            except BaseException:
                self._resync_rooms.add(room)
                raise
            hub._resync(room, snap, self.lease_ttl)
        if listener.done():  # the subscription broke while we were resyncing
            raise ConnectionError("redis subscription lost during resync")
        self.connected = True
        self._up.set()
        self._wake.set()
        if not first:
            self.stats.reconnects += 1
            took = time.monotonic() - self._down_since
            fields = {"event": "hub.redis_up", "url": self.url, "down_s": round(took, 3),
                      "reset": reset}  # fmt: skip
            logger.warning(
                "hub: Redis at %s back after %.3f s%s; state resynced",
                self.url, took, " (it had lost its state)" if reset else "",
                extra={"wsf": fields},
            )  # fmt: skip


async def _bounded(awaitable: Awaitable[T], timeout: float) -> T:
    """``asyncio.wait_for`` that never swallows a cancellation of its caller (Python 3.10
    and 3.11's does when the awaited call completes as the cancellation lands, gh-86296)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError
    return task.result()


def _gen() -> str:
    """A candidate generation id (used only when a room starts a history)."""
    return uuid.uuid4().hex[:16]
