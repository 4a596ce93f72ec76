"""Shared pieces of the functional suites: a probe server, client processes, deadlines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

import wsfinally
from wsfinally import Connection, Ending

#: Multiplies every deadline in the suites (slow machines: WSFINALLY_TIME_SCALE=3).
SCALE = float(os.environ.get("WSFINALLY_TIME_SCALE", "1"))
ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def seconds(s: float) -> float:
    return s * SCALE


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free loopback port for the block; its base URL (http://...)."""
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` holds, failing with ``what`` after ``timeout`` (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(timeout)
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds(timeout):.2f} s waiting for {what}")
        await asyncio.sleep(0.005)


def open_sockets() -> set[str]:
    """Socket inodes this process holds (pipes and files are not counted)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def socket_of(conn: Connection) -> str:
    """The inode link of the server-side socket of ``conn`` (see ``open_sockets``)."""
    sock = conn.response.get_extra_info("socket")
    assert sock is not None
    return os.readlink(f"/proc/self/fd/{sock.fileno()}")


def conn_buffered(conn: Connection) -> int:
    """Bytes our side holds for the peer (the transport's write buffer)."""
    transport = conn.request.transport
    return transport.get_write_buffer_size() if transport is not None else 0


class Client:
    """A client in its own OS process, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str]) -> None:
        self.proc = proc
        self.argv = argv
        self.lines: list[str] = []

    @classmethod
    async def spawn(
        cls, *argv: str, env: dict[str, str] | None = None, stdin: bool = False
    ) -> Client:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        return cls(proc, list(argv))

    @classmethod
    async def raw(
        cls, url: str, scenario: str, *sends: str, wait: bool = False, header: str | None = None
    ) -> Client:
        """The raw-socket client; with ``wait`` it acts only after ``go()``."""
        argv = [sys.executable, "-m", "wsfinally.testing.rawclient", url, scenario]
        for text in sends:
            argv += ["--send", text]
        if header is not None:
            argv += ["--header", header]
        if wait:
            argv.append("--wait")
        return await cls.spawn(*argv, stdin=wait)

    def go(self) -> None:
        """Tell a ``wait`` client to act now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def expect(self, prefix: str, timeout: float = 5.0, *, anywhere: bool = False) -> str:
        """The next line starting with ``prefix`` (or holding it, with ``anywhere``).

        Lines read on the way are kept in ``lines``.
        """
        deadline = asyncio.get_running_loop().time() + seconds(timeout)
        while True:
            raw = await self._readline(deadline, f"client never said {prefix!r}")
            if not raw:
                raise AssertionError(f"client exited before saying {prefix!r}: {self.lines}")
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith(prefix) or (anywhere and prefix in line):
                return line

    async def _readline(self, deadline: float, failure: str) -> bytes:
        """One line of output (b"" at its end), or AssertionError(failure) at ``deadline``."""
        assert self.proc.stdout is not None
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            return await asyncio.wait_for(self.proc.stdout.readline(), remaining)
        except asyncio.TimeoutError:
            raise AssertionError(f"{failure}; it said {self.lines[-20:]}") from None

    async def expect_event(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON log line whose ``event`` is ``event``."""
        while True:
            line = await self.expect("{", timeout)
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            if fields.get("event") == event:
                return dict(fields)

    def events(self, event: str) -> list[dict[str, Any]]:
        """Every JSON log line with ``event`` read so far."""
        out = []
        for line in self.lines:
            if line.startswith("{"):
                try:
                    fields = json.loads(line)
                except ValueError:
                    continue
                if fields.get("event") == event:
                    out.append(fields)
        return out

    async def rest(self, timeout: float = 5.0) -> int:
        """Read every remaining line until the process exits; its exit code."""
        deadline = asyncio.get_running_loop().time() + seconds(timeout)
        while True:
            raw = await self._readline(deadline, "process did not exit")
            if not raw:
                break
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
        return await asyncio.wait_for(self.proc.wait(), seconds(timeout))

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, sig)

    async def stop(self) -> None:
        """Kill the client's process group and reap it.

        Its unread output is drained first: on Python 3.11 ``wait()`` returns only once every
        pipe has closed, and a stdout pipe paused because nobody read 128 KiB of output never
        sees its EOF (a test that hung here ~1 run in 10).
        """
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await asyncio.wait_for(self.proc.communicate(), seconds(10))


class EndedLog(logging.Handler):
    """Counts ``connection.ended`` log records per connection id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ended: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "wsf", None)
        if fields and fields.get("event") == "connection.ended":
            self.ended[fields["id"]] += 1
            self.records.append(fields)


class Probe:
    """An in-process aiohttp server whose handler records everything the suite checks.

    Handler commands (text): ``raise`` raises, ``close`` closes with 1000, ``sleep``
    stops reading, ``sleep:S`` stops reading for S seconds, ``fill`` sends until our
    buffer holds unread data, ``flood`` sends 64 KiB binary messages until a send fails;
    anything else is echoed with ``/answer``.
    """

    def __init__(self, style: str, settings: dict[str, Any], runner_kwargs: dict[str, Any]):
        self.style = style
        self.settings = settings
        self.runner_kwargs = runner_kwargs
        self.accepted: asyncio.Queue[Connection] = asyncio.Queue()
        self.conns: dict[str, Connection] = {}
        self.sync_calls: Counter[str] = Counter()
        self.async_calls: Counter[str] = Counter()
        self.endings: dict[str, list[Ending]] = {}
        self.after_loop: set[str] = set()
        self.cancel_propagated: set[str] = set()
        self.error_propagated: set[str] = set()
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.ended_at: dict[str, float] = {}  # time.monotonic() of the first end callback
        self.sockets: dict[str, str] = {}  # conn id -> server-side socket inode
        self.log = EndedLog()
        self.url = ""
        self.registry: wsfinally.Registry | None = None
        self.runner: web.AppRunner | None = None

    def _register(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        self.sockets[conn.id] = socket_of(conn)
        task = asyncio.current_task()
        assert task is not None
        self.tasks[conn.id] = task

        def sync_cb(ending: Ending) -> None:
            self.ended_at[conn.id] = time.monotonic()
            self.sync_calls[conn.id] += 1
            self.endings.setdefault(conn.id, []).append(ending)

        async def async_cb(ending: Ending) -> None:
            await asyncio.sleep(0)
            self.async_calls[conn.id] += 1

        conn.on_end(sync_cb)
        conn.on_end(async_cb)
        self.accepted.put_nowait(conn)

    async def _serve(self, conn: Connection) -> None:
        async for msg in conn:
            if msg == "raise":
                raise RuntimeError("probe handler raised")
            if msg == "close":
                await conn.close(1000)
            elif msg == "sleep":
                await asyncio.sleep(3600)
            elif msg.startswith("sleep:"):
                await asyncio.sleep(float(msg[6:]))
            elif msg == "fill":  # send until our own buffer holds data the peer has not read
                while conn.response.get_extra_info("socket") and not conn_buffered(conn):
                    await conn.send(b"x" * 65536)
            elif msg == "flood":
                chunk = b"x" * 65536
                while True:
                    await conn.send(chunk)
            elif isinstance(msg, str):
                await conn.send(msg + "/answer")
            else:
                await conn.send(msg)
        self.after_loop.add(conn.id)

    async def _accept_handler(self, request: web.Request) -> web.StreamResponse:
        conn: Connection | None = None
        try:
            async with wsfinally.accept(request) as conn:
                self._register(conn)
                await self._serve(conn)
            return conn.response
        except asyncio.CancelledError:
            if conn is not None:
                self.cancel_propagated.add(conn.id)
            raise
        except Exception:
            if conn is not None:
                self.error_propagated.add(conn.id)
            raise

    async def _endpoint_handler(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        try:
            return await self._endpoint(request)
        except asyncio.CancelledError:
            for cid, t in self.tasks.items():
                if t is task:
                    self.cancel_propagated.add(cid)
            raise

    async def start(self) -> Probe:
        logging.getLogger("wsfinally").addHandler(self.log)
        logging.getLogger("wsfinally").setLevel(logging.INFO)

        @wsfinally.endpoint()
        async def probe_endpoint(conn: Connection) -> None:
            self._register(conn)
            await self._serve(conn)

        self._endpoint = probe_endpoint
        app = web.Application()
        self.registry = wsfinally.setup(app, **self.settings)
        handler = self._accept_handler if self.style == "accept" else self._endpoint_handler
        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app, **{"shutdown_timeout": 2, **self.runner_kwargs})
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def next_conn(self, timeout: float = 5.0) -> Connection:
        return await asyncio.wait_for(self.accepted.get(), seconds(timeout))

    async def ended(self, conn: Connection, timeout: float) -> Ending:
        return await asyncio.wait_for(conn.wait_ended(), seconds(timeout))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        logging.getLogger("wsfinally").removeHandler(self.log)
