"""``wsfinally bench URL``: a quick load test against any websocket echo endpoint.

Point it at an echo URL (the demo's ``/ws``, or your own server) to size a deployment::

    wsfinally bench ws://127.0.0.1:8080/ws
    wsfinally bench wss://example.com/echo --connections 500 --size 1024 --duration 10
    wsfinally bench ws://127.0.0.1:8080/ws --json results.json

Two phases, each ``--duration`` seconds (default 5):

1. **echo**: ``--connections`` websockets (default 100), each in lockstep — send one binary
   message of ``--size`` bytes (default 256), wait for it to come back, repeat. Reports the
   total messages per second and the p50/p99 round trip (a reservoir of at most 200,000
   samples).
2. **churn**: ``--churn-workers`` tasks (default 10), each looping connect + handshake +
   clean close (1000). Reports handshakes per second and failures.

Before either phase one connection checks that the URL upgrades and echoes a binary message
unchanged; if it does not, :class:`BenchError` says why in one line (the CLI prints it and
exits 1). Every wait is bounded: 5 s to connect and handshake, 5 s per echo, 5 s per close,
and a watchdog on each phase. The client is aiohttp's (``compress=0``, autoping); the CLI
runs it on uvloop where installed (``--loop``). Results: a rich table on stdout, and with
``--json PATH`` the dict :func:`run_bench` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from yarl import URL

__all__ = ["BenchError", "command", "render", "run_bench"]

CONNECT_TIMEOUT = 5.0  #: seconds to connect + handshake
MESSAGE_TIMEOUT = 5.0  #: seconds for one echo to come back
CLOSE_TIMEOUT = 5.0  #: seconds for the server's close frame
RESERVOIR_CAP = 200_000  #: round-trip samples kept for the percentiles
OPEN_CONCURRENCY = 64  #: handshakes in flight while opening the echo connections
#: Upper bound on iterations per worker per second of duration (a guard, never reached).
MAX_ROUNDS_PER_SECOND = 1_000_000
TICK = 0.1  #: progress refresh, seconds

if TYPE_CHECKING:
    from typing import TypeAlias

    _Ws: TypeAlias = aiohttp.ClientWebSocketResponse[bool]


class BenchError(Exception):
    """The URL cannot be benchmarked; ``str()`` is one line saying why."""


class _Reservoir:
    """Uniform sample of at most ``cap`` values (algorithm R)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0
        self.samples: list[int] = []
        self._rng = random.Random(0x5EED)

    def add(self, value: int) -> None:
        self.count += 1
        if len(self.samples) < self.cap:
            self.samples.append(value)
        else:
            j = self._rng.randrange(self.count)
            if j < self.cap:
                self.samples[j] = value


def _percentile(ordered: Sequence[int], p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1] / 1e6


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _why(exc: BaseException) -> str:
    """A short, one-line reason for a connect/handshake/echo failure."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status != 101:
            return f"refused the websocket upgrade (HTTP {exc.status})"
        return f"bad websocket handshake ({_one_line(exc.message)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port} ({_one_line(detail)})"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL ({_one_line(str(exc))})"
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(msg: Any, size: int) -> str:
    """What came back instead of the echo (``msg``: an aiohttp ``WSMessage``)."""
    if msg.type is WSMsgType.BINARY:
        return f"got back a different binary message ({len(msg.data)} bytes)"
    if msg.type is WSMsgType.TEXT:
        return f"got back a text message ({len(msg.data)} characters)"
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        extra = f" {msg.extra}" if msg.extra else ""
        code = msg.data if isinstance(msg.data, int) else "none"
        return f"the server closed the connection (code {code}{extra})"
    if msg.type is WSMsgType.ERROR:
        return f"connection error ({_why(msg.data)})"
    return f"unexpected {msg.type.name} message"


class _UnexpectedError(Exception):
    pass


class _Bench:
    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.ws_timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT)
        self.max_msg_size = max(2 * size, 16 * 1024 * 1024)

    async def connect(self, session: aiohttp.ClientSession) -> _Ws:
        """Connect + handshake within ``CONNECT_TIMEOUT``."""
        return await asyncio.wait_for(
            session.ws_connect(
                self.url,
                autoping=True,
                autoclose=True,
                compress=0,
                max_msg_size=self.max_msg_size,
                timeout=self.ws_timeout,
            ),
            CONNECT_TIMEOUT,
        )

    async def round_trip(self, ws: _Ws, payload: bytes) -> int:
        """Send ``payload``, await the echo; nanoseconds taken."""
        t0 = time.perf_counter_ns()
        await ws.send_bytes(payload)
        msg = await ws.receive(MESSAGE_TIMEOUT)
        elapsed = time.perf_counter_ns() - t0
        if msg.type is not WSMsgType.BINARY or msg.data != payload:
            raise _UnexpectedError(_describe(msg, len(payload)))
        return elapsed


async def _close(ws: _Ws) -> None:
    """Close, bounded (aiohttp waits at most ``CLOSE_TIMEOUT`` per frame read)."""
    try:
        await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT + 1)
    except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
        pass


async def _ticker(
    bar: Progress, task: TaskID, start: float, total: float, info: Callable[[], str]
) -> None:
    """Refresh one progress line until cancelled (or ``total`` plus slack has passed)."""
    loop = asyncio.get_running_loop()
    for _ in range(int((total + 60) / TICK) + 1):
        bar.update(task, completed=min(loop.time() - start, total), info=info())
        await asyncio.sleep(TICK)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; a cancellation of the caller still propagates."""
    task.cancel()
    await asyncio.wait((task,))


async def _preflight(bench: _Bench, session: aiohttp.ClientSession) -> None:
    """One connection: it must upgrade and echo one binary message unchanged."""
    try:
        ws = await bench.connect(session)
    except asyncio.TimeoutError:
        raise BenchError(f"no websocket handshake within {CONNECT_TIMEOUT:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise BenchError(_why(exc)) from None
    try:
        await asyncio.wait_for(bench.round_trip(ws, os.urandom(bench.size)), MESSAGE_TIMEOUT)
    except asyncio.TimeoutError:
        raise BenchError(
            f"does not echo: no reply to a {bench.size}-byte binary message "
            f"within {MESSAGE_TIMEOUT:g} s"
        ) from None
    except _UnexpectedError as exc:
        raise BenchError(f"does not echo a {bench.size}-byte binary message: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise BenchError(f"does not echo: {_why(exc)}") from None
    finally:
        await _close(ws)


async def _open_all(
    bench: _Bench, session: aiohttp.ClientSession, count: int, bar: Progress
) -> list[_Ws]:
    """Open ``count`` echo connections, or raise ``BenchError`` (closing those opened)."""
    task = bar.add_task("connect", total=count, info="")
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> _Ws:
        async with gate:
            ws = await bench.connect(session)
        bar.advance(task)
        return ws

    outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [o for o in outcomes if isinstance(o, aiohttp.ClientWebSocketResponse)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        await asyncio.gather(*(_close(ws) for ws in opened))
        for exc in failed:
            if not isinstance(exc, Exception):
                raise exc  # CancelledError, KeyboardInterrupt
        raise BenchError(
            f"opened only {len(opened)} of {count} echo connections: {_why(failed[0])}"
        )
    return opened


async def _echo_phase(
    bench: _Bench, session: aiohttp.ClientSession, connections: int, duration: float, bar: Progress
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    opened_at = loop.time()
    sockets = await _open_all(bench, session, connections, bar)
    open_seconds = loop.time() - opened_at
    rtts = _Reservoir(RESERVOIR_CAP)
    errors: Counter[str] = Counter()
    cap = int(duration * MAX_ROUNDS_PER_SECOND) + 1

    last_ns = 0  # when the last echo came back (closing the sockets is not measured)

    async def worker(ws: _Ws, end_ns: int) -> None:
        nonlocal last_ns
        payload = os.urandom(bench.size)
        try:
            for _ in range(cap):
                if time.perf_counter_ns() >= end_ns:
                    break
                rtts.add(await bench.round_trip(ws, payload))
                last_ns = max(last_ns, time.perf_counter_ns())
        except asyncio.TimeoutError:
            errors[f"no echo within {MESSAGE_TIMEOUT:g} s"] += 1
        except _UnexpectedError as exc:
            errors[str(exc)] += 1
        except (aiohttp.ClientError, OSError) as exc:
            errors[_why(exc)] += 1
        finally:
            await _close(ws)

    task = bar.add_task("echo", total=duration, info="")
    start = loop.time()
    ticker = loop.create_task(
        _ticker(bar, task, start, duration, lambda: f"{rtts.count:,} messages")
    )
    start_ns = time.perf_counter_ns()
    end_ns = start_ns + int(duration * 1e9)
    watchdog = duration + MESSAGE_TIMEOUT + CLOSE_TIMEOUT + 5
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(ws, end_ns) for ws in sockets)), watchdog)
    except asyncio.TimeoutError:
        raise BenchError(f"echo phase did not finish within {watchdog:g} s") from None
    finally:
        await _stop(ticker)
    elapsed = (last_ns - start_ns) / 1e9
    bar.update(task, completed=duration, info=f"{rtts.count:,} messages")
    if rtts.count == 0:
        reason = errors.most_common(1)[0][0] if errors else "no message completed"
        raise BenchError(f"echo phase failed: {reason}")
    ordered = sorted(rtts.samples)
    return {
        "connections": connections,
        "size": bench.size,
        "open_seconds": round(open_seconds, 4),
        "seconds": round(elapsed, 4),
        "messages": rtts.count,
        "msg_per_s": rtts.count / elapsed,
        "bytes_per_s": rtts.count * bench.size / elapsed,
        "rtt_ms": {
            "min": ordered[0] / 1e6,
            "p50": _percentile(ordered, 50),
            "p90": _percentile(ordered, 90),
            "p99": _percentile(ordered, 99),
            "max": ordered[-1] / 1e6,
            "samples": len(ordered),
        },
        "errors": sum(errors.values()),
        "error_reasons": dict(errors),
    }


async def _churn_phase(
    bench: _Bench, session: aiohttp.ClientSession, workers: int, duration: float, bar: Progress
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    done = 0
    failures: Counter[str] = Counter()
    cap = int(duration * MAX_ROUNDS_PER_SECOND) + 1

    async def cycle() -> None:
        ws = await bench.connect(session)
        try:
            await ws.close()
        except BaseException:
            await _close(ws)
            raise
        if ws.close_code != 1000:
            raise _UnexpectedError(f"unclean close (code {ws.close_code})")

    async def worker(end_ns: int) -> None:
        nonlocal done
        for _ in range(cap):
            if time.perf_counter_ns() >= end_ns:
                break
            try:
                await cycle()
            except asyncio.TimeoutError:
                failures["timed out"] += 1
            except _UnexpectedError as exc:
                failures[str(exc)] += 1
            except (aiohttp.ClientError, OSError) as exc:
                failures[_why(exc)] += 1
            else:
                done += 1

    task = bar.add_task("churn", total=duration, info="")
    start = loop.time()
    ticker = loop.create_task(_ticker(bar, task, start, duration, lambda: f"{done:,} handshakes"))
    end_ns = time.perf_counter_ns() + int(duration * 1e9)
    watchdog = duration + CONNECT_TIMEOUT + CLOSE_TIMEOUT + 5
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(end_ns) for _ in range(workers))), watchdog)
    except asyncio.TimeoutError:
        raise BenchError(f"churn phase did not finish within {watchdog:g} s") from None
    finally:
        elapsed = loop.time() - start
        await _stop(ticker)
    bar.update(task, completed=duration, info=f"{done:,} handshakes")
    return {
        "workers": workers,
        "seconds": round(elapsed, 4),
        "handshakes": done,
        "handshakes_per_s": done / elapsed,
        "failures": sum(failures.values()),
        "failure_reasons": dict(failures),
    }


def _check_url(url: str) -> None:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise BenchError(f"invalid URL {url!r} ({_one_line(str(exc))})") from None
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.host:
        raise BenchError(f"expected a ws:// or wss:// URL, got {url!r}")


async def run_bench(
    url: str,
    *,
    connections: int,
    size: int,
    duration: float,
    churn_workers: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark the websocket echo endpoint at ``url``; the results as a JSON-able dict.

    Raises :class:`BenchError` when the URL cannot be reached, refuses the upgrade or does
    not echo, and :class:`ValueError` for a non-positive parameter.
    """
    if connections < 1 or churn_workers < 1 or size < 1:
        raise ValueError("connections, churn_workers and size must be at least 1")
    if not duration > 0 or math.isinf(duration):
        raise ValueError("duration must be a positive number of seconds")
    _check_url(url)
    bench = _Bench(url, size)
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _preflight(bench, session)
        columns = (
            TextColumn("{task.description:>8}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
            echo = await _echo_phase(bench, session, connections, duration, bar)
            churn = await _churn_phase(bench, session, churn_workers, duration, bar)
    return {
        "url": url,
        "loop": type(loop).__module__.split(".")[0],
        "aiohttp": aiohttp.__version__,
        "python": sys.version.split()[0],
        "settings": {
            "connections": connections,
            "size": size,
            "duration": duration,
            "churn_workers": churn_workers,
        },
        "echo": echo,
        "churn": churn,
    }


def render(results: dict[str, Any], console: Console) -> None:
    """Print ``results`` (from :func:`run_bench`) as a table."""
    echo, churn = results["echo"], results["churn"]
    rtt = echo["rtt_ms"]
    table = Table(
        title=f"wsfinally bench {results['url']}",
        caption=f"client: aiohttp {results['aiohttp']} on {results['loop']}",
    )
    table.add_column("phase")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("echo", "connections", f"{echo['connections']:,} x {echo['size']:,} B"),
        ("", "messages", f"{echo['messages']:,} in {echo['seconds']:.2f} s"),
        ("", "throughput", f"{echo['msg_per_s']:,.0f} msg/s"),
        ("", "round trip p50", f"{rtt['p50']:.3f} ms"),
        ("", "round trip p99", f"{rtt['p99']:.3f} ms"),
        ("", "round trip max", f"{rtt['max']:.3f} ms"),
        ("", "errors", f"{echo['errors']:,}"),
        ("churn", "workers", f"{churn['workers']:,}"),
        ("", "handshakes", f"{churn['handshakes']:,} in {churn['seconds']:.2f} s"),
        ("", "rate", f"{churn['handshakes_per_s']:,.0f} handshakes/s"),
        ("", "failures", f"{churn['failures']:,}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for phase, reasons in (("echo", echo["error_reasons"]), ("churn", churn["failure_reasons"])):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            console.print(f"{phase}: {n:,} x {reason}", markup=False, highlight=False)


def _fail(message: str) -> int:
    sys.stderr.write(f"wsfinally bench: error: {_one_line(message)}\n")
    sys.stderr.flush()
    return 1


def command(
    args: argparse.Namespace,
    run: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]],
) -> int:
    """The ``bench`` subcommand: ``run`` drives the coroutine on the chosen loop."""
    coro = run_bench(
        args.url,
        connections=args.connections,
        size=args.size,
        duration=args.duration,
        churn_workers=args.churn_workers,
        progress=not args.no_progress,
    )
    try:
        results = run(coro)
    except BenchError as exc:
        return _fail(f"{args.url}: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    render(results, Console())
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(results, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            return _fail(f"--json {args.json}: {exc.strerror or exc}")
    return 0
