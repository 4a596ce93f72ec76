"""The specification: every way a websocket connection can end, over real sockets.

Each case runs a real client process against an in-process aiohttp server, under
asyncio and uvloop (conftest), with both handler styles (``accept`` and
``endpoint``). For each: exactly one Ending with the right reason, code and
cleanness; each end callback ran once; code after the loop ran (or not, when the
task was cancelled) and ``CancelledError`` propagated; no task, socket or
registry entry left behind.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from support import Client, Probe, eventually, open_sockets, seconds
from wsfinally import Connection, Ending, EndReason

R = EndReason
FAST_HEARTBEAT = {"ping_interval": 0.3, "ping_timeout": 0.3}


@dataclass(frozen=True)
class ExitPath:
    id: str
    scenario: str
    reason: EndReason
    code: int
    clean: bool
    sends: tuple[str, ...] = ()
    act: str | None = None  # sigkill | sigstop | shutdown | cancel
    settings: dict[str, Any] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)
    client_sees: str | None = None  # a line the client prints
    after_loop: bool = True  # the code after ``async for`` ran
    cancelled: bool = False  # CancelledError reached the aiohttp handler
    bound: float = 1.0  # seconds from the cause to the Ending


PATHS = [
    ExitPath(
        "client_frozen_while_send_blocked",
        "hold",
        R.HEARTBEAT_TIMEOUT,
        1006,
        False,
        sends=("flood",),
        act="sigstop",
        settings=FAST_HEARTBEAT,
        after_loop=False,
        bound=0.6 + 1.0,
    ),
    ExitPath(
        "client_silent_past_idle_timeout",
        "hold",
        R.IDLE_TIMEOUT,
        1000,
        True,
        settings={"idle_timeout": 0.3},
        client_sees="closed 1000",
        bound=0.6 + 0.6,
    ),
    ExitPath(
        "client_close_1000", "close:1000", R.CLIENT_CLOSED, 1000, True, client_sees="closed 1000"
    ),
    ExitPath(
        "client_close_1001", "close:1001", R.CLIENT_CLOSED, 1001, True, client_sees="closed 1001"
    ),
    ExitPath(
        "client_close_4000", "close:4000", R.CLIENT_CLOSED, 4000, True, client_sees="closed 4000"
    ),
    ExitPath("client_fin", "fin", R.CONNECTION_LOST, 1006, False),
    ExitPath("client_rst", "rst", R.CONNECTION_LOST, 1006, False),
    ExitPath("client_sigkill", "hold", R.CONNECTION_LOST, 1006, False, act="sigkill"),
    ExitPath(
        "client_sigstop",
        "hold",
        R.HEARTBEAT_TIMEOUT,
        1006,
        False,
        act="sigstop",
        settings=FAST_HEARTBEAT,
        bound=0.6 + 1.0,
    ),
    ExitPath(
        "client_garbage_frame", "garbage", R.PROTOCOL_ERROR, 1002, False, client_sees="closed 1002"
    ),
    ExitPath(
        "client_invalid_utf8", "badutf8", R.PROTOCOL_ERROR, 1007, False, client_sees="closed 1007"
    ),
    ExitPath(
        "client_oversize_message",
        "oversize:2048",
        R.MESSAGE_TOO_BIG,
        1009,
        False,
        settings={"max_message_size": 1024},
        client_sees="closed 1009",
    ),
    ExitPath(
        "handler_raises",
        "hold",
        R.HANDLER_ERROR,
        1011,
        True,
        sends=("raise",),
        client_sees="closed 1011",
        after_loop=False,
    ),
    ExitPath(
        "app_closes",
        "hold",
        R.SERVER_CLOSED,
        1000,
        True,
        sends=("close",),
        client_sees="closed 1000",
    ),
    ExitPath(
        "app_closes_peer_never_answers",
        "noreply",
        R.SERVER_CLOSED,
        1000,
        False,
        sends=("close",),
        settings={"close_timeout": 0.3},
        client_sees="eof",
    ),
    ExitPath(
        "app_closes_peer_answers_keeps_tcp",
        "reply-keep",
        R.SERVER_CLOSED,
        1000,
        True,
        sends=("close",),
        client_sees="eof",
    ),
    ExitPath(
        "server_shutdown",
        "hold",
        R.SERVER_SHUTDOWN,
        1001,
        True,
        act="shutdown",
        client_sees="closed 1001",
    ),
    ExitPath(
        "handler_cancellation_fin",
        "fin",
        R.CONNECTION_LOST,
        1006,
        False,
        runner={"handler_cancellation": True},
        after_loop=False,
        cancelled=True,
    ),
    ExitPath(
        "handler_cancellation_sigkill",
        "hold",
        R.CONNECTION_LOST,
        1006,
        False,
        act="sigkill",
        runner={"handler_cancellation": True},
        after_loop=False,
        cancelled=True,
    ),
    ExitPath(
        "outer_cancellation",
        "hold",
        R.CANCELLED,
        1011,
        False,
        act="cancel",
        client_sees="closed 1011",
        after_loop=False,
        cancelled=True,
    ),
    ExitPath(
        "shutdown_while_handler_not_reading",
        "hold",
        R.SERVER_SHUTDOWN,
        1001,
        True,
        sends=("sleep",),
        act="shutdown",
        settings={"shutdown_timeout": 1.0},
        client_sees="closed 1001",
        after_loop=False,
        cancelled=True,
        bound=1.5,
    ),
]


async def drive(
    path: ExitPath, p: Probe, client: Client, conn: Connection
) -> tuple[Ending, float, asyncio.Task[None] | None]:
    """Make ``path`` happen to an accepted connection whose client said ``ready``.

    Returns the Ending, the seconds from the cause to the first end callback, and the
    shutdown task when the path shuts the server down. The clock starts when the
    client is told to act, or, when its messages only prepare the act, at the act.
    """
    cause_at = time.monotonic()
    client.go()
    if path.sends:  # the messages are the cause, or they prepare the act that is
        await eventually(lambda: conn.messages_in >= len(path.sends), 2, "the sent messages")
        if path.act is not None:
            cause_at = time.monotonic()
    shutdown: asyncio.Task[None] | None = None
    if path.act == "sigkill":
        client.signal(signal.SIGKILL)
    elif path.act == "sigstop":
        client.signal(signal.SIGSTOP)
    elif path.act == "shutdown":
        shutdown = asyncio.create_task(p.stop())
    elif path.act == "cancel":
        p.tasks[conn.id].cancel()
    ending = await p.ended(conn, path.bound + 1)
    return ending, p.ended_at[conn.id] - cause_at, shutdown


@pytest.mark.parametrize("style", ["endpoint", "accept"])
@pytest.mark.parametrize("path", PATHS, ids=[p.id for p in PATHS])
async def test_exit_path(path: ExitPath, style: str, probe: Any, clients: list[Client]) -> None:
    p: Probe = await probe(style, runner_kwargs=path.runner, **path.settings)
    tasks_before = asyncio.all_tasks()

    client = await Client.raw(p.url, path.scenario, *path.sends, wait=True)
    clients.append(client)
    conn = await p.next_conn()
    await client.expect("ready")
    server_socket = p.sockets[conn.id]
    ending, elapsed, shutdown = await drive(path, p, client, conn)

    assert (ending.reason, ending.code, ending.clean) == (path.reason, path.code, path.clean), (
        ending
    )
    assert elapsed <= seconds(path.bound)
    if path.client_sees:
        await client.expect(path.client_sees)
    if shutdown is not None:
        await asyncio.wait_for(shutdown, seconds(6))

    # every end callback ran exactly once, one log line, one count
    await eventually(lambda: p.async_calls[conn.id] >= 1, 2, "the async end callback")
    assert p.sync_calls[conn.id] == 1
    assert p.async_calls[conn.id] == 1
    assert p.log.ended[conn.id] == 1
    assert p.registry is not None
    assert sum(p.registry.stats.endings.values()) == 1
    assert p.endings[conn.id] == [ending]
    assert conn.ending is ending

    # the handler's own code: after the loop, and cancellation propagated
    await eventually(lambda: p.tasks[conn.id].done(), 2, "the handler task to finish")
    assert (conn.id in p.after_loop) is path.after_loop
    assert (conn.id in p.cancel_propagated) is path.cancelled
    if path.reason is R.HANDLER_ERROR and style == "accept":
        assert conn.id in p.error_propagated

    # nothing left behind
    assert len(p.registry) == 0
    await eventually(lambda: server_socket not in open_sockets(), 2, "the server socket to close")
    current = asyncio.current_task()
    await eventually(
        lambda: not [t for t in asyncio.all_tasks() - tasks_before if t is not current],
        2,
        "tasks started for the connection to finish",
    )
