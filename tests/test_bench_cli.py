"""``wsfinally bench URL``: real sockets against the in-process demo server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from support import seconds
from wsfinally import bench
from wsfinally.bench import run_bench
from wsfinally.demo import make_app


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    await runner.cleanup()


async def bench_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``python -m wsfinally bench ...``; (exit code, stdout, stderr), bounded."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsfinally",
        "bench",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds(timeout))
    except asyncio.TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"bench {args} did not exit within {seconds(timeout)} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_bench_measures_echo_and_churn(echo_url: str) -> None:
    results = await run_bench(
        echo_url, connections=4, size=64, duration=0.5, churn_workers=2, progress=False
    )
    echo, churn = results["echo"], results["churn"]
    assert echo["connections"] == 4
    assert echo["messages"] > 0 and echo["msg_per_s"] > 0
    assert echo["errors"] == 0, echo["error_reasons"]
    rtt = echo["rtt_ms"]
    assert 0 < rtt["min"] <= rtt["p50"] <= rtt["p99"] <= rtt["max"]
    assert rtt["samples"] == echo["messages"]  # far below the reservoir cap
    assert churn["handshakes"] > 0 and churn["handshakes_per_s"] > 0
    assert churn["failures"] == 0, churn["failure_reasons"]
    json.dumps(results)  # JSON-able as is


async def test_cli_prints_a_table_and_writes_json(echo_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    code, out, err = await bench_cli(
        echo_url, "--duration", "0.5", "--connections", "2", "--json", str(path)
    )
    assert code == 0, err
    assert "Traceback" not in err
    assert "msg/s" in out and "handshakes/s" in out
    results = json.loads(path.read_text())
    assert results["url"] == echo_url
    assert results["settings"] == {
        "connections": 2,
        "size": 256,
        "duration": 0.5,
        "churn_workers": 10,
    }
    assert results["echo"]["messages"] > 0 and results["echo"]["errors"] == 0
    assert results["echo"]["rtt_ms"]["p50"] <= results["echo"]["rtt_ms"]["p99"]
    assert results["churn"]["handshakes"] > 0 and results["churn"]["failures"] == 0


async def test_cli_unreachable_url_is_a_one_line_error() -> None:
    code, out, err = await bench_cli("ws://127.0.0.1:1/ws", "--duration", "0.5")
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wsfinally bench: error: ws://127.0.0.1:1/ws: cannot connect")
    assert out == ""


async def test_cli_route_that_refuses_the_upgrade_is_a_one_line_error(echo_url: str) -> None:
    index = echo_url.removesuffix("/ws") + "/"
    code, _, err = await bench_cli(index, "--duration", "0.5")
    assert code == 1
    assert (
        err.strip() == f"wsfinally bench: error: {index}: refused the websocket upgrade (HTTP 200)"
    )


async def test_cli_server_that_does_not_echo_is_a_one_line_error(echo_url: str) -> None:
    # The demo caps messages at 1 MiB: a bigger one gets close 1009 instead of an echo.
    code, _, err = await bench_cli(echo_url, "--size", str(2 * 1024 * 1024), "--duration", "0.5")
    assert code == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    # usually "the server closed the connection (code 1009)"; when the server's close
    # races the client's still-running send, the client may see a reset instead
    assert "does not echo" in err or "reset" in err.lower(), err


async def test_server_that_upgrades_but_stays_silent_is_a_bounded_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", silent)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setattr(bench, "MESSAGE_TIMEOUT", 0.2)
    try:
        with pytest.raises(bench.BenchError, match="does not echo"):
            await asyncio.wait_for(
                run_bench(
                    f"ws://127.0.0.1:{runner.addresses[0][1]}/ws",
                    connections=1,
                    size=16,
                    duration=0.5,
                    churn_workers=1,
                    progress=False,
                ),
                seconds(10),
            )
    finally:
        await runner.cleanup()
