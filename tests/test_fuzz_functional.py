"""Fuzzing the server from a raw socket with hypothesis-generated frame sequences.

Fragmentation, control frames mid-message, reserved bits and opcodes, unmasked frames,
wrong lengths, bad close codes, invalid UTF-8, oversize messages. The server (a real
``wsfinally serve`` process) must never crash or hang: every connection is closed by it,
and its log shows exactly one ``connection.ended`` with a documented reason per
connection. ``make test`` runs WSFINALLY_FUZZ_EXAMPLES (default 100) examples; a long
run: ``WSFINALLY_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz_functional.py``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import seconds
from wsfinally import EndReason

EXAMPLES = int(os.environ.get("WSFINALLY_FUZZ_EXAMPLES", "100"))
DOCUMENTED = {r.value for r in EndReason}


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0x7, 0xB, 0xF]))
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 0x40, 0x20, 0x10]))
    masked = draw(st.sampled_from([True, True, True, False]))
    if opcode == 0x8 and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1005, 1006, 999, 2999, 3000, 4999, 5000]))
        payload = struct.pack("!H", code) + draw(st.binary(max_size=20))
    elif opcode == 0x1 and draw(st.booleans()):
        payload = draw(st.text(max_size=200)).encode()
    else:
        payload = draw(st.binary(max_size=300)) if draw(st.integers(0, 9)) else b"x" * 5000
    declared = len(payload) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, 100]))
    declared = max(declared, 0)
    form = draw(st.sampled_from(["auto", "auto", "16", "64"]))
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if form == "auto" and declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif form in ("auto", "16") and declared < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not masked:
        return header + payload
    mask = draw(st.binary(min_size=4, max_size=4))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


sequences = st.tuples(st.lists(frames(), min_size=1, max_size=6), st.binary(max_size=12))


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsfinally", "serve", "--port", str(port), "--log-format",
             "json", "--ping-interval", "off", "--close-timeout", "0.5",
             "--max-message-size", "4096"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + seconds(15)
    while b"server.started" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)  # polling a file for a line: bounded by the deadline above
    yield port, log, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds(5))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return sock


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequence=sequences)
def test_server_closes_every_fuzzed_connection(
    fuzz_server: tuple[int, Path, subprocess.Popen[bytes]], sequence: tuple[list[bytes], bytes]
) -> None:
    port, _, _ = fuzz_server
    chunks, tail = sequence
    sock = handshake(port)
    try:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.sendall(tail)
            sock.shutdown(socket.SHUT_WR)  # nothing more: the server must end it
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the server already closed on us
            return
        sock.settimeout(seconds(5))
        while True:
            try:
                if not sock.recv(65536):
                    return  # EOF: the server closed the connection
            except ConnectionResetError:
                return
    finally:
        sock.close()


def test_fuzzed_connections_each_ended_once_with_a_documented_reason(
    fuzz_server: tuple[int, Path, subprocess.Popen[bytes]],
) -> None:
    port, log, proc = fuzz_server
    deadline = time.monotonic() + seconds(5)
    while True:
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        opened = [e["id"] for e in events if e.get("event") == "connection.opened"]
        ended = [e for e in events if e.get("event") == "connection.ended"]
        if len(ended) >= len(opened) or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling the log file for the last lines: bounded by the deadline
    assert opened, "no fuzzed connection reached the server"
    assert sorted(e["id"] for e in ended) == sorted(opened)
    assert {e["reason"] for e in ended} <= DOCUMENTED
    assert not [e for e in events if e.get("level") in ("error", "critical")], [
        e for e in events if e.get("level") in ("error", "critical")
    ][:3]
    # still alive, and it shuts down cleanly
    assert proc.poll() is None
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=seconds(10)) == 0
