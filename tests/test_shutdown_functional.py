"""Graceful shutdown of real server processes: SIGTERM/SIGINT -> 1001 to every client,
handler loops end normally, callbacks run, the process exits 0 within the deadline."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from support import ROOT, Client, seconds

N_CLIENTS = 5


async def serve(clients: list[Client], *flags: str, loop: str = "asyncio") -> tuple[Client, str]:
    server = await Client.spawn(
        sys.executable, "-m", "wsfinally", "serve", "--port", "0", "--log-format", "json",
        "--loop", loop, *flags,
    )  # fmt: skip
    clients.append(server)
    started = await server.expect_event("server.started", timeout=15)
    url = started["urls"][0].replace("http://", "ws://") + "ws"
    return server, url


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_shutdown_sends_1001_to_every_client_and_exits_0_within_deadline(
    sig: signal.Signals, loop: str, clients: list[Client]
) -> None:
    server, url = await serve(clients, "--shutdown-timeout", "2", loop=loop)
    peers = []
    for i in range(N_CLIENTS):
        peer = await Client.raw(url, "hold", f"hello {i}")
        clients.append(peer)
        peers.append(peer)
    for i, peer in enumerate(peers):
        await peer.expect(f"text hello {i}/answer")

    ev_loop = asyncio.get_running_loop()
    started = ev_loop.time()
    server.signal(sig)
    code = await server.rest(timeout=2 + 1)
    took = ev_loop.time() - started
    assert code == 0, server.lines[-10:]
    assert took < seconds(2.0) + 0.5, f"exit took {took:.2f} s"
    for peer in peers:
        await peer.expect("closed 1001")
        await peer.expect("eof")

    opened = server.events("connection.opened")
    ended = server.events("connection.ended")
    assert len(opened) == N_CLIENTS
    assert sorted(e["id"] for e in ended) == sorted(o["id"] for o in opened)
    for e in ended:
        assert (e["reason"], e["code"], e["clean"]) == ("server_shutdown", 1001, True), e
        assert e["path"] == "/ws" and e["peer"].startswith("127.0.0.1:")
        assert e["messages_in"] == 1 and e["messages_out"] == 1
    assert server.events("server.shutdown")[0]["connections"] == N_CLIENTS


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_run_app_shutdown_runs_code_after_the_loop_and_callbacks(
    loop: str, clients: list[Client]
) -> None:
    server = await Client.spawn(
        sys.executable, str(ROOT / "tests" / "apps" / "run_app_server.py"), "2", loop
    )
    clients.append(server)
    port = (await server.expect("listening", timeout=15)).split()[1]
    url = f"ws://127.0.0.1:{port}/ws"
    peers = []
    for _ in range(3):
        peer = await Client.raw(url, "hold", "x")
        clients.append(peer)
        await peer.expect("text x/answer")
        peers.append(peer)

    ev_loop = asyncio.get_running_loop()
    started = ev_loop.time()
    server.signal(signal.SIGTERM)
    code = await server.rest(timeout=4)
    took = ev_loop.time() - started
    assert code == 0
    assert took < seconds(2.0) + 0.5, f"exit took {took:.2f} s"
    assert server.lines.count("after-loop 1") == 3, server.lines
    assert server.lines.count("ended server_shutdown 1001 True") == 3, server.lines
    assert "exited" in server.lines
    for peer in peers:
        await peer.expect("closed 1001")


async def test_serve_logs_exactly_one_ended_line_per_connection(clients: list[Client]) -> None:
    server, url = await serve(clients, "--close-timeout", "0.5")
    scenarios = [("close:1000", ()), ("fin", ()), ("rst", ()), ("hold", ("close",)),
                 ("garbage", ()), ("badutf8", ())]  # fmt: skip
    for scenario, sends in scenarios:
        peer = await Client.raw(url, scenario, *sends)
        clients.append(peer)
        await peer.expect("done")
        await server.expect_event("connection.ended")
    reasons = [e["reason"] for e in server.events("connection.ended")]
    assert reasons == ["client_closed", "connection_lost", "connection_lost", "server_closed",
                       "protocol_error", "protocol_error"]  # fmt: skip
    server.signal(signal.SIGTERM)
    assert await server.rest() == 0
    assert len(server.events("connection.ended")) == len(scenarios)
    assert len(server.events("connection.opened")) == len(scenarios)


async def test_serve_text_log_says_the_same_in_one_line(clients: list[Client]) -> None:
    server = await Client.spawn(sys.executable, "-m", "wsfinally", "serve", "--port", "0")
    clients.append(server)
    line = await server.expect("listening on", timeout=15, anywhere=True)
    url = line.split("listening on ")[1].split()[0].replace("http://", "ws://").rstrip(",") + "ws"
    peer = await Client.raw(url, "close:4001")
    clients.append(peer)
    await peer.expect("closed 4001")
    ended = await server.expect(" ended client_closed code=4001 clean=True", anywhere=True)
    assert "/ws" in ended
    server.signal(signal.SIGTERM)
    assert await server.rest() == 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--close-timeout", "-1"], "close_timeout"),
        (["--ping-interval", "0"], "ping_interval"),
        (["--ping-interval", "off", "--ping-timeout", "3"], "ping_timeout"),
        (["--shutdown-timeout", "0"], "shutdown_timeout"),
        (["--max-message-size", "0"], "max_message_size"),
        (["--log-format", "xml"], "log format"),
    ],
)
async def test_serve_refuses_bad_settings_naming_them(
    flags: list[str], named: str, clients: list[Client]
) -> None:
    proc = await Client.spawn(sys.executable, "-m", "wsfinally", "serve", "--port", "0", *flags)
    clients.append(proc)
    assert await proc.rest(timeout=15) == 2
    assert any(named in line for line in proc.lines), proc.lines
