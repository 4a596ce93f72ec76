"""A websocket client over a raw socket that can leave in every way a real peer does.

Run it as its own process so that it can really die (SIGKILL), freeze (SIGSTOP)
or reset its connection::

    python -m wsfinally.testing.rawclient ws://127.0.0.1:8080/ws SCENARIO [--send TEXT ...]

It prints one line per event on stdout (flushed): ``ready`` once the handshake
completed, ``text <data>`` for each text message (binary ones are read silently),
``closed <code>`` when a close frame arrives, ``refused <status>`` when the upgrade is
answered with another HTTP status, ``eof`` when the server closed TCP,
``done`` before exiting.

Scenarios (what the client does after sending each ``--send`` text):

* ``close:<code>``  send a close frame, wait for the answer, then for EOF
* ``fin``           half-close TCP (FIN) without a close frame
* ``rst``           reset the connection (SO_LINGER 0)
* ``hold``          read and answer (pings, close frames) until the server closes
* ``noreply``       read, but never answer a close frame; keep TCP open
* ``reply-keep``    answer the close frame, but never close TCP (until the server does)
* ``garbage``       send a frame with a reserved opcode
* ``badutf8``       send a text frame that is not UTF-8
* ``oversize:<n>``  send a text message of n bytes, then hold
* ``burst:<n>``     send n short text messages at once, then hold
* ``noread``        stop reading from the socket (its receive window fills), stay connected
* ``noread-garbage``  stop reading; then (after a second stdin line with ``--wait``) send
                    a frame with a reserved opcode
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

__all__ = ["encode_frame", "main"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (RFC 6455 5.2, 5.3)."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RefusedError(ConnectionError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status


class Peer:
    def __init__(self, url: str, timeout: float, headers: list[str] | None = None) -> None:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            + "".join(f"{h.split(':', 1)[0].strip()}: {h.split(':', 1)[1].strip()}\r\n"
                      for h in headers or ())
            + "\r\n"
        )  # fmt: skip
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            line = status.decode(errors="replace")
            raise RefusedError(int(line.split()[1]), line)
        self.protocol = None
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.decode(errors="replace").partition(":")
            if name.strip().lower() == "sec-websocket-protocol":
                self.protocol = value.strip()

    def send(self, opcode: int, payload: bytes, **kw: int | bool) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **kw))  # type: ignore[arg-type]

    def _need(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next frame from the server (unmasked), or None at EOF."""
        try:
            head = self._need(2)
            if head is None:
                return None
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                ext = self._need(2)
                if ext is None:
                    return None
                n = struct.unpack("!H", ext)[0]
            elif n == 127:
                ext = self._need(8)
                if ext is None:
                    return None
                n = struct.unpack("!Q", ext)[0]
            payload = self._need(n)
            if payload is None:
                return None
            return opcode, payload
        except (ConnectionResetError, OSError):
            return None


def serve_frames(peer: Peer, *, answer_close: bool, keep_open: bool) -> None:
    """Read until EOF, answering pings and (when asked) close frames."""
    closed = False
    while True:
        frame = peer.read_frame()
        if frame is None:
            say("eof")
            return
        opcode, payload = frame
        if opcode == OP_TEXT:
            say("text " + payload.decode("utf-8", errors="replace"))
        elif opcode == OP_BINARY:
            pass  # counted by nobody: a flood of binary frames must not block on stdout
        elif opcode == OP_PING:
            if not closed:
                peer.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            say(f"closed {code}")
            if answer_close and not closed:
                peer.send(OP_CLOSE, payload[:2])
            closed = True
            if not keep_open and answer_close:
                continue  # wait for the server to close TCP (RFC 6455 7.1.1)


def run(
    url: str,
    scenario: str,
    sends: list[str],
    timeout: float,
    wait: bool = False,
    headers: list[str] | None = None,
) -> None:
    peer = Peer(url, timeout, headers)
    say("ready" + (f" protocol={peer.protocol}" if peer.protocol else ""))
    if wait:  # act only when told: lets a harness time the cause precisely
        sys.stdin.readline()
    for text in sends:
        peer.send(OP_TEXT, text.encode())
    name, _, arg = scenario.partition(":")
    if name == "close":
        peer.send(OP_CLOSE, close_payload(int(arg or 1000)))
        serve_frames(peer, answer_close=False, keep_open=False)
    elif name == "fin":
        peer.sock.shutdown(socket.SHUT_WR)
        serve_frames(peer, answer_close=False, keep_open=False)
    elif name == "rst":
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.sock.close()
    elif name == "hold":
        serve_frames(peer, answer_close=True, keep_open=False)
    elif name == "noreply":
        serve_frames(peer, answer_close=False, keep_open=True)
    elif name == "reply-keep":
        serve_frames(peer, answer_close=True, keep_open=True)
    elif name == "garbage":
        peer.send(0x3, b"reserved opcode")  # RFC 6455 5.2: 0x3-0x7 are reserved
        serve_frames(peer, answer_close=True, keep_open=False)
    elif name == "badutf8":
        peer.send(OP_TEXT, b"\xff\xfe not utf-8")
        serve_frames(peer, answer_close=True, keep_open=False)
    elif name == "oversize":
        peer.send(OP_TEXT, b"x" * int(arg))
        serve_frames(peer, answer_close=True, keep_open=False)
    elif name == "noread-garbage":
        # stop reading; send a bad frame when told (a second stdin line, or at once)
        if wait:
            sys.stdin.readline()
        peer.send(0x3, b"reserved opcode")
        while True:
            time.sleep(3600)
    elif name == "burst":  # send n text messages as fast as possible, then hold
        for i in range(int(arg or 100)):
            peer.send(OP_TEXT, f"m{i}".encode())
        serve_frames(peer, answer_close=True, keep_open=False)
    elif name == "noread":
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        while True:
            time.sleep(3600)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    say("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("scenario")
    parser.add_argument("--send", action="append", default=[], help="text to send first")
    parser.add_argument("--timeout", type=float, default=10.0, help="connect timeout")
    parser.add_argument("--wait", action="store_true", help="after 'ready', wait for a stdin line")
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE (repeatable)")
    args = parser.parse_args(argv)
    try:
        run(args.url, args.scenario, args.send, args.timeout, args.wait, args.header)
    except RefusedError as exc:
        say(f"refused {exc.status}")
        return 1
    except (ConnectionError, OSError) as exc:
        say(f"error {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
