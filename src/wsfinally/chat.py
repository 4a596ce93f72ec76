"""The demo's chat: rooms with live presence, every leave shown with its reason.

``GET /chat`` serves the page; ``/chat?room=ROOM&name=NAME`` upgraded to a websocket is
the chat protocol of design.md: JSON text messages; the client sends
``{"type": "message", "text": ...}``; the server sends ``presence`` first (the room on
every node, the joiner included), then ``join``, ``leave`` (with ``reason``) and
``message`` as they happen.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from aiohttp import web

from .endpoint import accept
from .hub import HUB, HubEvent, Member

__all__ = ["chat"]

MAX_TEXT = 4000
MAX_NAME = 40
MAX_ROOM = 64


def _who(member: Member | None) -> dict[str, Any]:
    if member is None:
        return {}
    return {"name": member.presence.get("name", "?"), "id": member.id, "node": member.node}


def wire(event: HubEvent) -> str:
    """A hub event as the chat protocol's JSON text."""
    out: dict[str, Any]
    if event.type == "presence":
        out = {
            "type": "presence",
            "room": event.room,
            "members": [m.presence.get("name", "?") for m in event.members],
            "detail": [_who(m) for m in event.members],
        }
    else:
        out = {"type": event.type, "room": event.room, **_who(event.member)}
        if event.type == "leave":
            out["reason"] = event.reason
    return json.dumps(out, separators=(",", ":"))


async def chat(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        page = files("wsfinally").joinpath("static/chat.html").read_text("utf-8")
        return web.Response(text=page, content_type="text/html")
    room = request.query.get("room", "lobby").strip()[:MAX_ROOM] or "lobby"
    name = request.query.get("name", "").strip()[:MAX_NAME] or "anonymous"
    hub = request.app[HUB]
    async with accept(request) as conn:

        def on_event(event: HubEvent) -> None:
            conn.send_nowait(wire(event))

        try:
            await hub.join(conn, room, {"name": name}, on_event=on_event)
        except ConnectionResetError:  # it left while the room was being read
            return conn.response
        async for msg in conn:
            if not isinstance(msg, str):
                continue
            try:
                obj = json.loads(msg)
            except ValueError:
                obj = None
            if not isinstance(obj, dict) or obj.get("type") != "message":
                conn.send_nowait(json.dumps({"type": "error", "error": "expected a message"}))
                continue
            text = str(obj.get("text", ""))[:MAX_TEXT]
            out = {"type": "message", "room": room, "name": name, "text": text}
            hub.broadcast(room, json.dumps(out, separators=(",", ":")))
    return conn.response
