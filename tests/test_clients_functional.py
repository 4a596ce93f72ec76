"""Third-party clients in their own processes: python-websockets and Node's ``ws``."""

from __future__ import annotations

import shutil
import signal
import sys
import textwrap
from typing import Any

import pytest

from support import IN_CI, NODE_DIR, Client, Probe
from wsfinally import EndReason

WEBSOCKETS_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main(url, mode):
        async with connect(url, ping_interval=None) as ws:
            print("ready", flush=True)
            await ws.send("from websockets")
            print("text " + await ws.recv(), flush=True)
            if mode.startswith("close:"):
                await ws.close(int(mode.split(":")[1]))
                print(f"closed {ws.close_code}", flush=True)
                return
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                print(f"closed {exc.rcvd.code if exc.rcvd else 1006}", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").is_dir()


@pytest.fixture
def node() -> str:
    if not node_available():
        message = "Node.js and tests/node/node_modules/ws are needed (make node)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    path = shutil.which("node")
    assert path is not None
    return path


@pytest.mark.parametrize(
    ("mode", "act", "reason", "code", "clean"),
    [
        ("close:1000", None, EndReason.CLIENT_CLOSED, 1000, True),
        ("close:4010", None, EndReason.CLIENT_CLOSED, 4010, True),
        ("hold", "sigkill", EndReason.CONNECTION_LOST, 1006, False),
        ("hold", "shutdown", EndReason.SERVER_SHUTDOWN, 1001, True),
    ],
)
@pytest.mark.parametrize("client", ["websockets", "node-ws"])
async def test_third_party_client_endings(
    client: str, mode: str, act: str | None, reason: EndReason, code: int, clean: bool,
    probe: object, clients: list[Client], request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    p: Probe = await probe()  # type: ignore[operator]
    if client == "websockets":
        peer = await Client.spawn(sys.executable, "-c", WEBSOCKETS_CLIENT, p.url, mode)
    else:
        node = request.getfixturevalue("node")
        peer = await Client.spawn(node, str(NODE_DIR / "client.js"), p.url, mode)
    clients.append(peer)
    conn = await p.next_conn(timeout=10)
    await peer.expect("ready", timeout=10)
    await peer.expect("text from ")
    if act == "sigkill":
        peer.signal(signal.SIGKILL)
    elif act == "shutdown":
        await p.stop()
    ending = await p.ended(conn, 2)
    assert (ending.reason, ending.code, ending.clean) == (reason, code, clean), ending
    if act != "sigkill":
        await peer.expect(f"closed {code}")
    assert p.sync_calls[conn.id] == 1
    assert (ending.messages_in, ending.messages_out) == (1, 1)


COMPRESSED_SIZES_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main(url, limit):
        async with connect(url, ping_interval=None, compression="deflate") as ws:
            print("ready " + str(ws.protocol.extensions), flush=True)
            await ws.send("a" * limit)
            print("echoed " + str(len(await ws.recv())), flush=True)
            await ws.send("b" * (limit + 1))
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                print(f"closed {exc.rcvd.code if exc.rcvd else 1006}", flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_a_compressed_message_one_byte_over_the_limit_ends_message_too_big(
    probe: Any, clients: list[Client]
) -> None:
    # aiohttp admits max_msg_size + 1 bytes when the message was compressed; we do not
    p: Probe = await probe(max_message_size=1000)
    client = await Client.spawn(sys.executable, "-c", COMPRESSED_SIZES_CLIENT, p.url, "1000")
    clients.append(client)
    ready = await client.expect("ready")
    assert "PerMessageDeflate" in ready, ready  # the test is about compressed messages
    conn = await p.next_conn()
    assert await client.expect("echoed") == "echoed 1007"  # exactly the limit + "/answer"
    assert await client.expect("closed") == "closed 1009"
    ending = await p.ended(conn, 5)
    assert (ending.reason, ending.code) == (EndReason.MESSAGE_TOO_BIG, 1009)
    assert ending.messages_in == 1
