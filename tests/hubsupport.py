"""Shared pieces of the hub suites: a real Redis, chat clients, demo server nodes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from support import IN_CI, Client, seconds
from wsfinally.demo import make_app

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs {what}")
    pytest.skip(what)


class RedisServer:
    """A throwaway ``redis-server`` of our own on a free port, that a test may kill and
    start again on the same port (empty: it keeps nothing on disk)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="wsfinally-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            missing("redis-server (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + seconds(10)
        while not redis_answers("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)  # a process start-up, polled with a deadline

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def shared_redis_url() -> str:
    """The Redis of the suite: ``$WSFINALLY_REDIS_URL``, else the machine's at 6379.

    ``conftest`` starts a throwaway one when neither answers.
    """
    return os.environ.get("WSFINALLY_REDIS_URL", "redis://127.0.0.1:6379/0")


class ChatClient:
    """A chat member over a real websocket (aiohttp's client), recording what it hears."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.heard: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, base: str, room: str, name: str
    ) -> ChatClient:
        ws = await session.ws_connect(f"{base}/chat?room={room}&name={name}", heartbeat=None)
        client = cls(ws, name)
        await client.wait(lambda m: m["type"] == "presence", f"{name}'s presence")
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.heard.append(json.loads(msg.data))
                    self._changed.set()
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed.set()
            self._changed.set()

    def said(self, check: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [m for m in self.heard if check(m)]

    async def wait(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first message that passes ``check`` (already heard or to come)."""
        deadline = asyncio.get_running_loop().time() + seconds(timeout)
        seen = 0
        while True:
            for m in self.heard[seen:]:
                if check(m):
                    return m
            seen = len(self.heard)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or (self.closed.is_set() and seen == len(self.heard)):
                state = "closed" if self.closed.is_set() else "open"
                raise AssertionError(f"{self.name} ({state}) never heard {what}: {self.heard}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def say(self, text: str) -> None:
        await self.ws.send_str(json.dumps({"type": "message", "text": text}))

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


class Node:
    """The demo app (chat included) in this process, on a port of its own."""

    def __init__(self, runner: web.AppRunner, base: str) -> None:
        self.runner = runner
        self.base = base
        self.app = runner.app

    @classmethod
    async def start(cls, redis: str | None = None, **hub_options: Any) -> Node:
        app = make_app(redis=redis, hub_options=hub_options or None, ping_interval=None)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return cls(runner, f"http://127.0.0.1:{runner.addresses[0][1]}")

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve_node(
    redis: str, namespace: str, lease_ttl: float, port: int | None = None
) -> tuple[Client, str]:
    """``wsfinally serve --redis`` in its own process; (its Client, its base URL)."""
    port = port or free_port()
    client = await Client.spawn(
        sys.executable, "-m", "wsfinally", "serve", "--port", str(port), "--redis", redis,
        "--hub-lease-ttl", str(lease_ttl), "--hub-namespace", namespace,
        "--log-format", "json", "--loop", "asyncio",
    )  # fmt: skip
    await client.expect_event("server.started", timeout=20)
    return client, f"http://127.0.0.1:{port}"


def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


def kill_group(client: Client) -> None:
    client.signal(signal.SIGKILL)


class RedisProxy:
    """A TCP relay in front of a Redis that a test can cut (every connection reset, new
    ones refused) and restore (listening again on the same port): a network outage
    between one node and Redis, while Redis itself keeps its state."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()
