"""The log lines of design.md: ``connection.opened`` and ``connection.ended``.

Records go to the ``wsfinally`` logger at INFO with the structured fields under
``record.wsf``; :class:`JsonFormatter` writes them as one JSON object per line,
:class:`TextFormatter` as one human line. Nothing is formatted when INFO is off.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection
    from .ending import Ending

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure", "ended", "opened"]

logger = logging.getLogger("wsfinally")
LOG_FORMATS = ("text", "json")


def opened(conn: Connection) -> None:
    if logger.isEnabledFor(logging.INFO):
        fields = {
            "event": "connection.opened",
            "id": conn.id,
            "peer": conn.peer,
            "path": conn.request.path,
        }
        logger.info("%s opened %s %s", conn.id, conn.peer, conn.request.path, extra={"wsf": fields})


def ended(conn: Connection, ending: Ending) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "event": "connection.ended",
        "id": conn.id,
        "reason": ending.reason.value,
        "code": ending.code,
        "clean": ending.clean,
        "duration_s": round(ending.duration, 6),
        "peer": conn.peer,
        "path": conn.request.path,
        "messages_in": ending.messages_in,
        "messages_out": ending.messages_out,
        "bytes_in": ending.bytes_in,
        "bytes_out": ending.bytes_out,
        "code_sent": ending.code_sent,
        "code_received": ending.code_received,
    }
    if ending.error is not None:
        fields["error"] = f"{type(ending.error).__name__}: {ending.error}"
    logger.info(
        "%s ended %s code=%d clean=%s after %.3f s (%s %s, in %d out %d)%s",
        conn.id,
        ending.reason.value,
        ending.code,
        ending.clean,
        ending.duration,
        conn.peer,
        conn.request.path,
        ending.messages_in,
        ending.messages_out,
        f" error={fields['error']}" if "error" in fields else "",
        extra={"wsf": fields},
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; wsfinally events carry their fields, others a message."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "wsf", None)
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower()}
        if fields is not None:
            out.update(fields)
        else:
            out["event"] = "log"
            out["logger"] = record.name
        if fields is None or record.levelno >= logging.WARNING:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.converter = time.gmtime


def configure(fmt: str, level: int = logging.INFO) -> None:
    """Send every log record to stdout in ``fmt`` ("text" or "json")."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    import sys

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
