#!/usr/bin/env python3
"""How PLAIN aiohttp (no wsfinally) behaves when a websocket connection ends badly.

A baseline for wsfinally. Every situation starts a fresh aiohttp server in this process
(``web.AppRunner`` + ``web.TCPSite`` on 127.0.0.1, port 0) with a classic handler::

    ws = web.WebSocketResponse(heartbeat=...)
    await ws.prepare(request)
    async for msg in ws: ...echo...
    # "after the loop": ws.close_code, ws.exception()

and a real client in its own OS process (``python -m wsfinally.testing.rawclient``),
so that the client can really freeze (SIGSTOP), half-close, or send bad frames.
Every wait is bounded; a bound that is hit is reported as ``never (> N s)``.
Every client process is started in its own session and killed with ``os.killpg``.

    .venv/bin/python benchmarks/aiohttp_baseline.py [--loop asyncio|uvloop|both]

Prints a Markdown table per event loop: situation | what plain aiohttp did | figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parents[1] / "src"
CHUNK = b"x" * 65536  # situation 3 sends 64 KiB binary messages
CLIENTS: list[asyncio.subprocess.Process] = []  # every client process started (own session)
PGIDS: set[int] = set()  # their process groups, for the last-resort kill at exit


def now() -> float:
    return time.monotonic()


def secs(t: float) -> str:
    return f"{t:.2f} s"


# --------------------------------------------------------------------------- server side


@dataclass
class Probe:
    """What the handler of one situation saw."""

    heartbeat: float | None = None
    flood: bool = False  # situation 3: send 64 KiB messages in a loop instead of echoing
    prepared: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    marks: dict[str, float] = field(default_factory=dict)  # prepared/after_loop/cancelled/raised
    ws: web.WebSocketResponse | None = None
    close_code: int | None = None
    exception: BaseException | None = None
    raised: BaseException | None = None
    seen: list[str] = field(default_factory=list)  # message types the loop body saw
    sends: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per send
    send_started: float | None = None

    def how_it_ended(self) -> str:
        if "after_loop" in self.marks:
            return "code after the loop ran"
        if "cancelled" in self.marks:
            return "code after the loop SKIPPED (CancelledError)"
        if "raised" in self.marks:
            return f"handler raised {self.raised!r}"
        return "handler still running"


def make_handler(probe: Probe) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=probe.heartbeat)
        await ws.prepare(request)
        probe.ws = ws
        probe.marks["prepared"] = now()
        probe.prepared.set()
        try:
            if probe.flood:
                while not ws.closed:
                    probe.send_started = now()
                    await ws.send_bytes(CHUNK)
                    probe.sends.append((probe.send_started, now()))
            else:
                async for msg in ws:
                    probe.seen.append(msg.type.name)
                    if msg.type is WSMsgType.TEXT:
                        await ws.send_str(msg.data)
                    elif msg.type is WSMsgType.BINARY:
                        await ws.send_bytes(msg.data)
            probe.marks["after_loop"] = now()
            probe.close_code = ws.close_code
            probe.exception = ws.exception()
        except asyncio.CancelledError:
            probe.marks["cancelled"] = now()
            probe.close_code = ws.close_code
            raise
        except Exception as exc:  # a send that fails: recorded, not logged
            probe.marks["raised"] = now()
            probe.raised = exc
            probe.close_code = ws.close_code
        finally:
            probe.ended.set()
        return ws

    return handler


@dataclass
class Server:
    runner: web.AppRunner
    url: str
    cleaned: bool = False

    async def cleanup(self) -> None:
        self.cleaned = True
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def serve(
    probe: Probe, *, handler_cancellation: bool = False, shutdown_timeout: float = 2.0
) -> AsyncIterator[Server]:
    app = web.Application()
    app.router.add_get("/ws", make_handler(probe))
    runner = web.AppRunner(
        app,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=shutdown_timeout,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    server = Server(runner, f"ws://{HOST}:{port}/ws")
    try:
        yield server
    finally:
        await kill_clients()
        if not server.cleaned:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.cleanup(), 10)


# --------------------------------------------------------------------------- client side


class Client:
    """One rawclient process; its stdout lines are collected with a timestamp."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self.eof = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, scenario: str, *extra: str) -> Client:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            "-m",
            "wsfinally.testing.rawclient",
            url,
            scenario,
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: os.killpg(proc.pid, ...)
            env=env,
        )
        CLIENTS.append(proc)
        PGIDS.add(proc.pid)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append((now(), raw.decode(errors="replace").rstrip()))
            self._changed.set()
        self.eof = True
        self._changed.set()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def first(self, prefix: str) -> tuple[float, str] | None:
        return next(((t, ln) for t, ln in self.lines if ln.startswith(prefix)), None)

    async def wait_line(self, prefix: str, timeout: float) -> tuple[float, str] | None:
        deadline = now() + timeout
        while True:
            hit = self.first(prefix)
            if hit is not None or self.eof or now() >= deadline:
                return hit
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - now())

    def frozen_check(self) -> str:
        """'' while the process is still stopped; else a warning (the measure is void)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                state = f.read().rpartition(") ")[2][:1]
        except OSError:
            state = "?" if sys.platform != "linux" and self.proc.returncode is None else "gone"
        if state in ("T", "t", "?"):
            return ""
        return f" — INVALID: client process not frozen (state {state}, rc={self.proc.returncode})"

    def close_frame(self) -> str:
        hit = self.first("closed ")
        return f"close frame {hit[1].split()[1]}" if hit else "no close frame"


async def kill_clients() -> None:
    for proc in CLIENTS:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    for proc in CLIENTS:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
    CLIENTS.clear()


def kill_leftovers() -> None:
    """Last resort, outside any event loop: kill every process group we created."""
    for pgid in PGIDS:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def connect(server: Server, probe: Probe, scenario: str, *extra: str) -> Client:
    client = await Client.start(server.url, scenario, *extra)
    if await client.wait_line("ready", 5) is None or not await wait_event(probe.prepared, 5):
        raise RuntimeError(f"client did not connect: {client.lines[:3]}")
    return client


# --------------------------------------------------------------------------- situations

Result = tuple[str, str]  # (what plain aiohttp did, measured figure)


async def frozen_no_heartbeat() -> Result:
    bound = 10.0
    probe = Probe(heartbeat=None)
    async with serve(probe) as server:
        client = await connect(server, probe, "hold")
        client.signal(signal.SIGSTOP)
        t_stop = now()
        if await wait_event(probe.ended, bound):
            return (
                f"loop ended, close_code={probe.close_code}; {probe.how_it_ended()}",
                secs(probe.marks.get("after_loop", now()) - t_stop) + client.frozen_check(),
            )
        closed = probe.ws is not None and probe.ws.closed
        check = client.frozen_check()
        client.signal(signal.SIGKILL)
        t_kill = now()
        late = await wait_event(probe.ended, 5)
        after_kill = f"; after SIGKILL the loop ended in {secs(now() - t_kill)}" if late else ""
        return (
            f"`async for` kept waiting, ws.closed={closed}: the frozen peer went unnoticed"
            f"{after_kill}",
            f"never (> {bound:.0f} s){check}",
        )


async def frozen_heartbeat() -> Result:
    bound = 10.0
    probe = Probe(heartbeat=2.0)
    async with serve(probe) as server:
        client = await connect(server, probe, "hold")
        client.signal(signal.SIGSTOP)
        t_stop = now()
        if not await wait_event(probe.ended, bound):
            return "loop did not end despite heartbeat=2", f"never (> {bound:.0f} s)"
        end = probe.marks.get("after_loop") or probe.marks.get("cancelled") or now()
        exc = type(probe.exception).__name__ if probe.exception else None
        return (
            f"loop ended after the PONG timeout; close_code={probe.close_code}, "
            f"exception()={exc}, loop body saw {probe.seen or 'nothing'}; {probe.how_it_ended()}",
            f"{secs(end - t_stop)} SIGSTOP → loop end "
            f"({secs(end - probe.marks['prepared'])} after prepare){client.frozen_check()}",
        )


async def frozen_reader_while_sending() -> Result:
    bound = 15.0
    probe = Probe(heartbeat=2.0, flood=True)
    async with serve(probe) as server:
        client = await connect(server, probe, "hold")
        await asyncio.sleep(0.5)  # let messages flow first
        client.signal(signal.SIGSTOP)
        t_stop = now()
        ended = await wait_event(probe.ended, bound)
        after = [s for s in probe.sends if s[1] > t_stop]
        accepted = f"{len(after)} × 64 KiB accepted after SIGSTOP"
        check = client.frozen_check()
        if ended:
            blocked = probe.marks["raised"] - (probe.send_started or t_stop)
            return (
                f"send_bytes() raised {probe.raised!r} (close_code={probe.close_code}); {accepted}",
                f"blocked {secs(blocked)} in send; ended {secs(now() - t_stop)} after SIGSTOP"
                + check,
            )
        blocked_since = probe.send_started or t_stop
        ws = probe.ws
        state = f"ws.closed={ws.closed}, ws.close_code={ws.close_code}" if ws else "no ws"
        client.signal(signal.SIGKILL)
        t_kill = now()
        late = await wait_event(probe.ended, 5)
        after_kill = (
            f"; after SIGKILL: {probe.how_it_ended()} in {secs(now() - t_kill)}" if late else ""
        )
        gave_up = ws is not None and ws.close_code is not None
        woken = " (heartbeat gave up, but the blocked send was not woken)" if gave_up else ""
        began = (
            "the send in flight at SIGSTOP never returned"
            if blocked_since <= t_stop
            else f"blocked from {secs(blocked_since - t_stop)} after SIGSTOP"
        )
        return (
            f"send_bytes() stayed blocked in drain; meanwhile {state}{woken}; "
            f"{accepted}{after_kill}",
            f"never (> {bound:.0f} s): {began}" + check,
        )


async def runner_cleanup() -> Result:
    probe = Probe(heartbeat=None)
    async with serve(probe, shutdown_timeout=2.0) as server:
        client = await connect(server, probe, "hold")
        t0 = now()
        try:
            await asyncio.wait_for(server.cleanup(), 15)
            took = secs(now() - t0)
        except asyncio.TimeoutError:
            took = "never (> 15 s)"
        await client.wait_line("eof", 3)
        await wait_event(probe.ended, 1)
        end = probe.marks.get("after_loop") or probe.marks.get("cancelled")
        at = f"handler ended {secs(end - t0)} into cleanup()" if end else "handler never ended"
        return (
            f"{probe.how_it_ended()}, close_code={probe.close_code}; client got "
            f"{client.close_frame()}{', then EOF' if client.first('eof') else ''}",
            f"cleanup() took {took} (shutdown_timeout=2); {at}",
        )


async def fin_with_handler_cancellation() -> Result:
    probe = Probe(heartbeat=None)
    async with serve(probe, handler_cancellation=True) as server:
        client = await connect(server, probe, "fin")
        if not await wait_event(probe.ended, 5):
            return "handler did not end after the client's FIN", "never (> 5 s)"
        await client.wait_line("eof", 2)
        end = max(v for k, v in probe.marks.items() if k != "prepared")
        return (
            f"{probe.how_it_ended()}, close_code={probe.close_code}; client got "
            f"{client.close_frame()}",
            f"handler ended {secs(end - probe.marks['prepared'])} after prepare",
        )


async def garbage_frame() -> Result:
    probe = Probe(heartbeat=None)
    async with serve(probe) as server:
        client = await connect(server, probe, "garbage")
        ended = await wait_event(probe.ended, 5)
        await client.wait_line("closed ", 3)
        exc = repr(probe.exception) if probe.exception else None
        return (
            f"{probe.how_it_ended() if ended else 'handler still running (> 5 s)'}; "
            f"loop body saw {probe.seen or 'nothing'}; exception()={exc}",
            f"client got {client.close_frame()}; server ws.close_code={probe.close_code}",
        )


async def close_4001() -> Result:
    probe = Probe(heartbeat=None)
    async with serve(probe) as server:
        client = await connect(server, probe, "close:4001")
        ended = await wait_event(probe.ended, 5)
        await client.wait_line("closed ", 3)
        return (
            f"{probe.how_it_ended() if ended else 'handler still running (> 5 s)'} "
            f"(autoclose answered); loop body saw {probe.seen or 'nothing'}",
            f"client got {client.close_frame()} back; server ws.close_code={probe.close_code}",
        )


SITUATIONS: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
    ("1. Frozen client (SIGSTOP), heartbeat=None", frozen_no_heartbeat),
    ("2. Frozen client (SIGSTOP), heartbeat=2", frozen_heartbeat),
    ("3. Client frozen while handler sends 64 KiB msgs, heartbeat=2", frozen_reader_while_sending),
    ("4. runner.cleanup() with a connected client", runner_cleanup),
    ("5. Client FIN, handler_cancellation=True", fin_with_handler_cancellation),
    ("6. Client sends a reserved-opcode frame", garbage_frame),
    ("7. Client closes with 4001", close_4001),
]


async def run_all() -> list[tuple[str, str, str]]:
    rows = []
    for title, situation in SITUATIONS:
        try:
            did, figure = await asyncio.wait_for(situation(), 40)
        except Exception as exc:
            did, figure = f"benchmark error: {exc!r}", "-"
        finally:
            await kill_clients()
        rows.append((title, did, figure))
    return rows


def run_on(loop_name: str) -> list[tuple[str, str, str]]:
    if loop_name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    loop = factory()
    print(f"\n### event loop: {loop_name} ({type(loop).__module__}.{type(loop).__name__})\n")
    try:
        return loop.run_until_complete(run_all())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="asyncio")
    parser.add_argument("-v", "--verbose", action="store_true", help="show aiohttp's logs")
    args = parser.parse_args()
    if not args.verbose:
        logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    print(f"aiohttp {aiohttp.__version__}, {platform.python_implementation()} {sys.version}")
    print(f"{platform.system()} {platform.release()}, loopback {HOST}")
    t0 = now()
    try:
        for loop_name in loops:
            rows = run_on(loop_name)
            print("| situation | what plain aiohttp did | measured figure |")
            print("|---|---|---|")
            for row in rows:
                print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    finally:
        kill_leftovers()
    print(f"\ntotal runtime {secs(now() - t0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
