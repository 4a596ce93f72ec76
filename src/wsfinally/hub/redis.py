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

Local delivery never waits for Redis: the hub hands operations to a queue that one task
applies in order, in pipelined batches. When Redis goes away the outage is logged and
counted, local delivery goes on, and the queue keeps presence changes (all of them: one
join and one leave per member at most) and up to ``max_pending_messages`` broadcasts for
other nodes (the oldest are dropped and counted beyond that). On reconnection the node
subscribes again, re-registers its lease and every member it holds (joins are idempotent),
drains the queue (leaves are published at least once, and applied at most once), and
brings each room it watches back in line from a snapshot plus the event log. A node
that finds its lease gone (it froze past it, or Redis restarted empty) re-registers the
same way. Keys are built inside scripts: one Redis, not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core import Snapshot
from .events import Member

if TYPE_CHECKING:
    from .core import Hub

__all__ = ["RedisBackend", "RedisStats"]

logger = logging.getLogger("wsfinally.hub")

_LOG_TAIL = """
redis.call('LPUSH', KEYS[3], ev)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[4], ev)
return v
"""

# KEYS: room members, room version, room log, node members, node lease
# ARGV: member id, member json, log size, channel, node entry, key ttl ms
_JOIN = (
    """
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[5])
local v = redis.call('INCR', KEYS[2])
local ev = '{"t":"join","v":' .. v .. ',"m":' .. ARGV[2] .. '}'
"""
    + _LOG_TAIL
)

# KEYS: as _JOIN; ARGV: as _JOIN, then the reason as a JSON string
_LEAVE = (
    """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[5])
local v = redis.call('INCR', KEYS[2])
local ev = '{"t":"leave","v":' .. v .. ',"r":' .. ARGV[7] .. ',"m":' .. ARGV[2] .. '}'
"""
    + _LOG_TAIL
)

# KEYS: nodes; ARGV: key prefix, channel, log size, key ttl ms
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
        local v = redis.call('INCR', base .. ':v')
        local ev = '{"t":"leave","v":' .. v .. ',"r":"node_lost","m":' .. mj .. '}'
        redis.call('LPUSH', base .. ':log', ev)
        redis.call('LTRIM', base .. ':log', 0, tonumber(ARGV[3]) - 1)
        redis.call('PEXPIRE', base .. ':v', ARGV[4])
        redis.call('PEXPIRE', base .. ':log', ARGV[4])
        redis.call('PUBLISH', ARGV[2], ev)
      end
    end
    redis.call('DEL', set)
    table.insert(lost, node)
  end
end
return lost
"""

# KEYS: lease; ARGV: ttl ms. A lease that is gone is not recreated: the caller resyncs.
_RENEW = "return redis.call('PEXPIRE', KEYS[1], ARGV[1])"

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis-py is an optional dependency
    _RedisError = OSError  # type: ignore[misc, assignment]

_ERRORS: tuple[type[BaseException], ...] = (_RedisError, OSError, asyncio.TimeoutError)


@dataclass
class RedisStats:
    """Counters of the Redis backend (metrics read them)."""

    outages: int = 0
    reconnects: int = 0
    dropped_messages: int = 0  # broadcasts for other nodes dropped while Redis was away
    bad_payloads: int = 0
    nodes_reaped: int = 0  # dead nodes this node removed (each by exactly one survivor)
    resyncs: int = 0  # times this node found its lease gone and registered again


class _Op:
    __slots__ = ("dropped", "kind", "member", "payload", "reason", "sending")

    def __init__(
        self, kind: str, member: Member | None = None, reason: str = "", payload: bytes = b""
    ) -> None:
        self.kind = kind
        self.member = member
        self.reason = reason
        self.payload = payload
        self.dropped = False
        self.sending = False  # in the batch the worker is sending now


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
        max_pending_messages: int = 1000,
        command_timeout: float = 2.0,
        key_ttl: float = 86400.0,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis URL must start with redis://, rediss:// or unix://: {url!r}")
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
        if log_size < 1 or max_pending_messages < 0:
            raise ValueError("log_size must be >= 1 and max_pending_messages >= 0")
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "the Redis hub needs redis-py: pip install 'wsfinally[redis]'"
            ) from None
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
        self._ops: deque[_Op] = deque()
        self._unsent_joins: dict[str, _Op] = {}
        self._messages = 0  # broadcasts in _ops
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while the queue is empty
        self._idle.set()
        self._up = asyncio.Event()
        self._epoch: str | None = None
        self._down_since = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
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
        if self._ops and self.connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.command_timeout)
        if self.connected:
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(self._client.delete(self._lease), self.command_timeout)
                await asyncio.wait_for(self._reap(), self.command_timeout)
        tasks = [*self._tasks, self._listener, self._reconnector]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, *_ERRORS):
                    await task
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
        self._push(op)

    def left(self, member: Member, reason: str) -> None:
        join = self._unsent_joins.pop(member.id + "\n" + member.room, None)
        if join is not None and not join.dropped and not join.sending:
            join.dropped = True  # nobody was told of it: nobody needs to hear it ended
            return
        self._push(_Op("leave", member, reason))

    def published(self, room: str, data: str | bytes, exclude: str | None) -> None:
        assert self._hub is not None
        text = isinstance(data, str)
        header = {"r": room, "n": self._hub.node, "x": exclude, "t": text}
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        payload = b"M" + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body
        if self._messages >= self.max_pending_messages:
            for op in self._ops:  # drop the oldest broadcast still waiting
                if op.kind == "msg" and not op.dropped and not op.sending:
                    op.dropped = True
                    self._messages -= 1
                    self.stats.dropped_messages += 1
                    break
            if self.max_pending_messages == 0:
                self.stats.dropped_messages += 1
                return
        self._messages += 1
        self._push(_Op("msg", payload=payload))

    def _push(self, op: _Op) -> None:
        self._ops.append(op)
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
            pipe.get(f"{base}:v")
            pipe.hvals(f"{base}:m")
            pipe.lrange(f"{base}:log", 0, -1)
            version, members, log = await pipe.execute()
        events = []
        for raw in reversed(log):
            parsed = self._parse_event(raw)
            if parsed is not None:
                events.append(parsed)
        return Snapshot(
            int(version or 0),
            [Member.from_obj(json.loads(m)) for m in members],
            events,
            self._epoch or "",
        )

    # -- the worker: applies queued operations in order, in batches -------------------

    async def _work(self) -> None:
        while True:
            if not self._ops:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.connected:
                await self._up.wait()
                continue
            batch: list[_Op] = []
            for op in self._ops:
                if len(batch) == 256:
                    break
                batch.append(op)
            for op in batch:
                op.sending = True
            try:
                lost_lease = await asyncio.wait_for(self._send(batch), self.command_timeout)
            except _ERRORS as exc:
                self._down(exc)
                continue
            finally:
                for op in batch:
                    op.sending = False
            if lost_lease:
                await self._register()
                continue  # send the batch again: joins are idempotent
            for op in batch:
                if self._ops and self._ops[0] is op:
                    self._ops.popleft()
                if op.kind == "msg" and not op.dropped:
                    self._messages -= 1
                if op.kind == "join" and op.member is not None:
                    key = op.member.id + "\n" + op.member.room
                    if self._unsent_joins.get(key) is op:
                        del self._unsent_joins[key]

    async def _send(self, batch: list[_Op]) -> bool:
        """Send a batch in one pipeline; True if a join found our lease gone."""
        cap, ttl = str(self.log_size), self._key_ttl_ms
        async with self._client.pipeline(transaction=False) as pipe:
            sent = 0
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
                args = [member.id, member.to_json(), cap, self._channel, entry, ttl]
                if op.kind == "join":
                    await self._scripts["join"](
                        keys=self._room_keys(member), args=args, client=pipe
                    )
                else:
                    args.append(json.dumps(op.reason))
                    await self._scripts["leave"](
                        keys=self._room_keys(member), args=args, client=pipe
                    )
            if not sent:
                return False
            results = await pipe.execute()
        return any(r == -1 for r in results)

    # -- the keeper: lease renewal and the reaper --------------------------------------

    async def _keep(self) -> None:
        renew_every = self.lease_ttl / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.scan_interval)
            if not self.connected:
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
                        self.stats.resyncs += 1
                        logger.warning("hub: node %s found its lease gone; registering again",
                                       self._hub.node if self._hub else "?")  # fmt: skip
                        await asyncio.wait_for(self._register(), self.command_timeout * 2)
                await asyncio.wait_for(self._reap(), self.command_timeout)
            except _ERRORS as exc:
                self._down(exc)

    async def _reap(self) -> None:
        lost = await self._scripts["reap"](
            keys=[self._prefix + "nodes"],
            args=[self._prefix, self._channel, str(self.log_size), self._key_ttl_ms],
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
        for i in range(0, len(members), 256):
            await self._send([_Op("join", m) for m in members[i : i + 256]])

    # -- the subscription --------------------------------------------------------------

    async def _listen(self, pubsub: Any) -> None:
        assert self._hub is not None
        hub = self._hub
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message["data"]
                try:
                    if data[:1] == b"M":
                        header, _, body = data[1:].partition(b"\n")
                        h = json.loads(header)
                        if h["n"] != hub.node:
                            hub._deliver(h["r"], body.decode("utf-8") if h["t"] else body, h["x"])
                        continue
                    parsed = self._parse_event(data)
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    parsed = None
                if parsed is None:
                    self.stats.bad_payloads += 1
                    continue
                hub._remote(*parsed)
        except _ERRORS as exc:
            if pubsub is self._pubsub:
                self._down(exc)

    def _parse_event(self, raw: bytes) -> tuple[int, str, Member, str | None] | None:
        try:
            ev = json.loads(raw)
            kind = ev["t"]
            if kind not in ("join", "leave"):
                return None
            return int(ev["v"]), kind, Member.from_obj(ev["m"]), ev.get("r")
        except (ValueError, KeyError, TypeError):
            self.stats.bad_payloads += 1
            return None

    # -- outages -----------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        if not self.connected and self._reconnector is not None:
            return
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
        while True:
            try:
                await asyncio.wait_for(self._connect(), self.command_timeout * 4)
                break
            except _ERRORS as exc:
                if time.monotonic() - said > 30:
                    said = time.monotonic()
                    logger.error("hub: Redis at %s still unreachable (%r)", self.url, exc)
                await asyncio.sleep(delay)  # back off between attempts
                delay = min(delay * 2, 1.0)
        self._reconnector = None

    async def _connect(self) -> None:
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
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(pubsub), name="wsfinally.hub.redis.listen"
        )
        self._epoch = epoch
        await self._register()
        for room in hub._tracked_rooms():
            hub._resync(room, await self._snapshot(room), reset, self.lease_ttl)
        if self._listener.done():  # the subscription broke while we were resyncing
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
