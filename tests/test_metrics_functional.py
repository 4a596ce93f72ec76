"""Metrics at /metrics after a scripted set of endings, each reason hit by a real client."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import wsfinally
from support import Client, eventually, seconds, serving
from wsfinally import Connection, Ending
from wsfinally.demo import make_app
from wsfinally.hub import HUB
from wsfinally.metrics import METRICS, code_label, setup_metrics, track_hub

KiB = 1024
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Server:
    """One app with a route per way of ending; its metrics also go to ``collectors`` (a
    registry of the test's own, served by a second app that outlives the first)."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[Connection] = asyncio.Queue()
        self.endings: list[Ending] = []
        self.collectors = CollectorRegistry()
        self.runner: web.AppRunner | None = None
        self.monitor: web.AppRunner | None = None
        self.base = self.monitor_url = ""

    def _track(self, conn: Connection) -> None:
        conn.on_end(self.endings.append)
        self.conns.put_nowait(conn)

    async def start(self) -> Server:
        app = web.Application()
        wsfinally.setup(app, max_message_size=1000)
        setup_metrics(app, registry=self.collectors)

        async def serve(conn: Connection) -> None:
            self._track(conn)
            async for msg in conn:
                if msg == "close":
                    await conn.close(1000)
                elif msg == "raise":
                    raise RuntimeError("the handler raised on purpose")
                elif msg == "callback-fails":
                    conn.on_end(lambda e: 1 / 0)
                elif msg == "flood":
                    while True:
                        await conn.send(b"x" * (16 * KiB))
                elif isinstance(msg, str):
                    await conn.send(msg + "/answer")

        async def cancelled(request: web.Request) -> web.StreamResponse:
            accepted: list[Connection] = []

            async def inner() -> None:
                async with wsfinally.accept(request) as conn:
                    accepted.append(conn)
                    self._track(conn)
                    async for _ in conn:
                        pass

            try:
                await asyncio.wait_for(inner(), seconds(0.5))  # an outer timeout
            except asyncio.TimeoutError:
                pass
            return accepted[0].response

        app.router.add_get("/ws", wsfinally.endpoint()(serve))
        app.router.add_get(
            "/ws/heartbeat", wsfinally.endpoint(ping_interval=0.1, ping_timeout=0.5)(serve)
        )
        app.router.add_get("/ws/idle", wsfinally.endpoint(idle_timeout=0.3)(serve))
        slow = wsfinally.endpoint(send_limit=64 * KiB, slow_consumer_timeout=1, ping_interval=None)
        app.router.add_get("/ws/slow", slow(serve))
        app.router.add_get("/ws/rate", wsfinally.endpoint(rate_limit=5, rate_burst=5)(serve))
        app.router.add_get("/ws/cancel", cancelled)
        self.runner = web.AppRunner(app, shutdown_timeout=2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.base = f"127.0.0.1:{self.runner.addresses[0][1]}"

        async def exposition(request: web.Request) -> web.Response:
            response = web.Response(body=generate_latest(self.collectors))
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        monitor = web.Application()
        monitor.router.add_get("/metrics", exposition)
        self.monitor = web.AppRunner(monitor)
        await self.monitor.setup()
        await web.TCPSite(self.monitor, "127.0.0.1", 0).start()
        self.monitor_url = f"http://127.0.0.1:{self.monitor.addresses[0][1]}/metrics"
        return self

    def ws(self, path: str = "/ws") -> str:
        return f"ws://{self.base}{path}"

    async def stop_app(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def stop(self) -> None:
        for runner in (self.runner, self.monitor):
            if runner is not None:
                await runner.cleanup()
        self.runner = self.monitor = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await Server().start()
    yield s
    await s.stop()


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_every_reason_is_counted_with_its_code_and_traffic_adds_up(
    server: Server, clients: list[Client]
) -> None:
    sent: list[str] = []  # every text message the server will count as received

    async def client(path: str, scenario: str, *sends: str, counted: bool = True) -> Client:
        c = await Client.raw(server.ws(path), scenario, *sends)
        clients.append(c)
        await c.expect("ready")
        if counted:
            sent.extend(sends)
        return c

    async def ended(n: int) -> None:
        await eventually(lambda: len(server.endings) >= n, 5, f"{n} endings")

    # client_closed, twice, with the peer's codes
    await client("/ws", "close:4001", "hello", "wörld")
    await client("/ws", "close:1000", "x" * 200)
    await ended(2)
    # a live connection: counted while open, then it ends server_closed
    live = await client("/ws", "hold", "abc")
    await live.expect("text abc/answer")
    samples = await scrape(f"http://{server.base}/metrics")
    assert value(samples, "wsfinally_connections_open", route="/ws") == 1
    assert value(samples, "wsfinally_messages_received_total") == 4
    assert value(samples, "wsfinally_bytes_received_total") == len("helloWörld".encode()) + 203
    c = await Client.raw(server.ws(), "hold", "close")
    clients.append(c)
    sent.append("close")
    await c.expect("closed 1000")
    await ended(3)
    # connection_lost three ways: FIN, RST, the client process killed
    await client("/ws", "fin", "a")
    await client("/ws", "rst")
    await ended(5)
    killed = await client("/ws", "hold", "b")
    await killed.expect("text b/answer")
    killed.signal(signal.SIGKILL)
    await ended(6)
    # protocol_error, message_too_big (max_message_size=1000), handler_error (+ a callback
    # that fails)
    await client("/ws", "garbage")
    await client("/ws", "oversize:1001")
    await client("/ws", "hold", "callback-fails", "raise")
    await ended(9)
    # heartbeat_timeout: pongs first (the RTT histogram), then the client freezes
    frozen = await client("/ws/heartbeat", "hold")
    conn = await _conn_for(server, "/ws/heartbeat")
    await eventually(lambda: conn.last_rtt is not None, 3, "a pong")
    frozen.signal(signal.SIGSTOP)
    await ended(10)
    frozen.signal(signal.SIGKILL)
    # idle_timeout; rate_limited (5 admitted of 10); cancelled by an outer timeout
    await client("/ws/idle", "hold")
    await ended(11)
    await client("/ws/rate", "burst:10", counted=False)
    sent.extend(f"m{i}" for i in range(5))
    await ended(12)
    await client("/ws/cancel", "hold")
    await ended(13)
    # slow_consumer: the peer stops reading while we flood it; the slowest peer is published
    await client("/ws/slow", "noread", "flood")
    slow = await _conn_for(server, "/ws/slow")
    await eventually(lambda: slow.buffered > 0, 3, "a backlog")
    samples = await scrape(f"http://{server.base}/metrics")
    top = series(samples, "wsfinally_slowest_peer_buffered_bytes")
    assert len(top) == 1, top
    ((labels, buffered),) = top.items()
    assert dict(labels)["id"] == slow.id and dict(labels)["route"] == "/ws/slow"
    assert dict(labels)["rank"] == "1" and buffered > 0
    await ended(14)
    # a refused handshake: a browser page of another origin
    refused = await Client.raw(server.ws(), "hold", header="Origin: http://evil.example")
    clients.append(refused)
    await refused.expect("refused 403")
    # server_shutdown, twice (the live client of the start, and one more): from here the
    # monitor app serves the same collectors
    last = await client("/ws", "hold", "bye")
    await last.expect("text bye/answer")  # read and counted before the shutdown
    await eventually(lambda: len(_live(server)) == 2, 3, "two live connections")
    await server.stop_app()
    assert len(server.endings) == 16

    samples = await scrape(server.monitor_url)
    ended_by = {
        (dict(k)["reason"], dict(k)["code"]): v
        for k, v in series(samples, "wsfinally_connections_ended_total").items()
    }
    assert ended_by == {
        ("client_closed", "4xxx"): 1,  # 4001: private codes are one series
        ("client_closed", "1000"): 1,
        ("server_closed", "1000"): 1,
        ("connection_lost", "1006"): 3,
        ("protocol_error", "1002"): 1,
        ("message_too_big", "1009"): 1,
        ("handler_error", "1011"): 1,
        ("heartbeat_timeout", "1006"): 1,
        ("idle_timeout", "1000"): 1,
        ("rate_limited", "1008"): 1,
        ("cancelled", "1011"): 1,
        ("slow_consumer", "1006"): 1,
        ("server_shutdown", "1001"): 2,
    }
    # the same story as the Endings themselves
    assert Counter((e.reason.value, code_label(e.code)) for e in server.endings) == Counter(
        ended_by
    )
    assert code_label(4001) == "4xxx" and code_label(3999) == "3xxx"
    assert code_label(65535) == code_label(999) == "other" and code_label(1015) == "1015"
    for route in ("/ws", "/ws/heartbeat", "/ws/idle", "/ws/slow", "/ws/rate", "/ws/cancel"):
        assert value(samples, "wsfinally_connections_open", route=route) == 0, route
    opened = series(samples, "wsfinally_connections_opened_total")
    assert sum(opened.values()) == 16
    assert value(samples, "wsfinally_connections_opened_total", route="/ws") == 11
    assert value(samples, "wsfinally_connection_duration_seconds_count") == 16
    durations = sum(e.duration for e in server.endings)
    assert value(samples, "wsfinally_connection_duration_seconds_sum") == pytest.approx(durations)
    # traffic: what the clients sent, exactly; what the server sent, as its Endings say
    assert value(samples, "wsfinally_messages_received_total") == len(sent)
    assert value(samples, "wsfinally_bytes_received_total") == sum(len(s.encode()) for s in sent)
    assert value(samples, "wsfinally_messages_sent_total") == sum(
        e.messages_out for e in server.endings
    )
    assert value(samples, "wsfinally_bytes_sent_total") == sum(e.bytes_out for e in server.endings)
    assert value(samples, "wsfinally_bytes_sent_total") > 64 * KiB  # the flood
    assert value(samples, "wsfinally_handshakes_refused_total", cause="origin") == 1
    assert value(samples, "wsfinally_heartbeat_rtt_seconds_count") >= 1
    assert 0 < value(samples, "wsfinally_heartbeat_rtt_seconds_sum") < seconds(0.5)
    # one end callback per connection (the test's), plus the one that raised
    assert value(samples, "wsfinally_end_callback_duration_seconds_count") == 17
    assert value(samples, "wsfinally_end_callback_failures_total") == 1
    assert value(samples, "wsfinally_buffered_bytes") == 0
    assert series(samples, "wsfinally_slowest_peer_buffered_bytes") == {}
    assert not series(samples, "wsfinally_hub_rooms")  # no hub tracked


async def _conn_for(server: Server, path: str) -> Connection:
    while True:
        conn = await asyncio.wait_for(server.conns.get(), seconds(5))
        if conn.request.path == path:
            return conn


def _live(server: Server) -> list[Connection]:
    assert server.runner is not None
    return server.runner.app[METRICS].live()


async def test_two_apps_in_one_process_keep_their_own_metrics(clients: list[Client]) -> None:
    runners = []
    bases = []
    for _ in range(2):
        app = web.Application()
        wsfinally.setup(app)
        setup_metrics(app)

        @wsfinally.endpoint()
        async def echo(conn: Connection) -> None:
            async for msg in conn:
                await conn.send(msg)

        app.router.add_get("/ws", echo)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        bases.append(f"127.0.0.1:{runner.addresses[0][1]}")
    try:
        c = await Client.raw(f"ws://{bases[0]}/ws", "close:1000", "one")
        clients.append(c)
        await c.expect("closed 1000")
        registry = runners[0].app[wsfinally.REGISTRY]
        await eventually(lambda: registry.stats.endings.total() == 1, 3, "the ending")
        first, second = [await scrape(f"http://{b}/metrics") for b in bases]
        assert value(first, "wsfinally_connections_ended_total", reason="client_closed",
                     code="1000") == 1  # fmt: skip
        assert series(second, "wsfinally_connections_ended_total") == {}
        assert value(second, "wsfinally_messages_received_total") == 0
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.mark.parametrize("hub_first", [False, True], ids=["metrics-first", "hub-first"])
async def test_hub_sizes_are_read_at_each_scrape_once_tracked(hub_first: bool) -> None:
    app = web.Application()
    wsfinally.setup(app)
    sizes = [(0, 0)]
    if hub_first:
        track_hub(app, lambda: sizes[-1])
    setup_metrics(app)
    if not hub_first:
        track_hub(app, lambda: sizes[-1])
    async with serving(app) as base:
        url = f"{base}/metrics"
        sizes.append((3, 7))
        samples = await scrape(url)
        assert value(samples, "wsfinally_hub_rooms") == 3
        assert value(samples, "wsfinally_hub_members") == 7
        track_hub(app, None)
        assert series(await scrape(url), "wsfinally_hub_rooms") == {}


def test_setup_metrics_needs_setup_first_and_only_once() -> None:
    app = web.Application()
    with pytest.raises(RuntimeError, match=r"wsfinally\.setup"):
        setup_metrics(app)
    wsfinally.setup(app)
    setup_metrics(app, path=None)
    with pytest.raises(RuntimeError, match="already"):
        setup_metrics(app)


async def test_the_demo_hubs_rooms_and_members_are_on_its_metrics() -> None:
    app = make_app(metrics=True)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        a = await session.ws_connect(f"{base}/chat?room=one&name=a")
        b = await session.ws_connect(f"{base}/chat?room=one&name=b")
        c = await session.ws_connect(f"{base}/chat?room=two&name=c")
        for ws in (a, b, c):
            assert json.loads((await ws.receive()).data)["type"] == "presence"
        samples = await scrape(f"{base}/metrics")
        assert value(samples, "wsfinally_hub_rooms") == 2
        assert value(samples, "wsfinally_hub_members") == 3
        await c.close()
        await eventually(lambda: app[HUB].counts() == (1, 2), 5, "c to leave room two")
        samples = await scrape(f"{base}/metrics")
        assert (
            value(samples, "wsfinally_hub_rooms"),
            value(samples, "wsfinally_hub_members"),
        ) == (1, 2)
        await a.close()
        await b.close()
