"""``wsfinally serve`` (also ``python -m wsfinally``): the demo server.

SIGTERM and SIGINT shut it down gracefully: every client gets 1001, every
cleanup runs, and the process exits 0 within ``--shutdown-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from . import __version__, log
from .demo import make_app
from .settings import Settings

__all__ = ["main"]

logger = logging.getLogger("wsfinally")


def _seconds(text: str) -> float | None:
    if text.lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'off', got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsfinally", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"wsfinally {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run the demo server (echo at /ws, /metrics, dashboard at /_wsfinally/)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    serve.add_argument(
        "--ping-interval",
        type=_seconds,
        default=20.0,
        metavar="S",
        help="seconds of silence before a ping; 'off' disables the heartbeat",
    )
    serve.add_argument(
        "--ping-timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="seconds to wait for the pong (default 20)",
    )
    serve.add_argument("--close-timeout", type=float, default=5.0, metavar="S")
    serve.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="S")
    serve.add_argument("--idle-timeout", type=_seconds, default=None, metavar="S")
    serve.add_argument("--callback-timeout", type=float, default=5.0, metavar="S")
    serve.add_argument("--max-message-size", type=int, default=1024 * 1024, metavar="BYTES")
    serve.add_argument("--send-limit", type=int, default=1024 * 1024, metavar="BYTES")
    serve.add_argument("--slow-consumer-timeout", type=float, default=10.0, metavar="S")
    serve.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S")
    serve.add_argument("--max-connections", type=int, default=None, metavar="N")
    serve.add_argument("--max-connections-per-ip", type=int, default=None, metavar="N")
    serve.add_argument("--allowed-origins", type=_origins, default=None,
                       metavar="ORIGIN[,ORIGIN...]", help="default: same origin only")  # fmt: skip
    serve.add_argument("--trusted-proxies", type=_origins, default=(),
                       metavar="CIDR[,CIDR...]", help="whose X-Forwarded-For counts")  # fmt: skip
    serve.add_argument("--rate-limit", type=float, default=None, metavar="MSGS_PER_S")
    serve.add_argument("--redis", default=None, metavar="URL",
                       help="share the chat's rooms and presence between nodes through Redis "
                       "(redis://host:6379/0); default: in memory")  # fmt: skip
    serve.add_argument("--hub-lease-ttl", type=float, default=10.0, metavar="S",
                       help="with --redis: a node silent this long is declared dead and its "
                       "members leave as node_lost (default 10)")  # fmt: skip
    serve.add_argument("--hub-namespace", default="wsf", metavar="NAME",
                       help="with --redis: the key prefix shared by the nodes")  # fmt: skip
    serve.add_argument("--log-format", default="text", metavar="text|json")
    serve.add_argument("--no-metrics", dest="metrics", action="store_false",
                       help="do not serve Prometheus metrics at /metrics")  # fmt: skip
    serve.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                       help="do not serve the live dashboard at /_wsfinally/")  # fmt: skip
    serve.add_argument("--dashboard-token", default=None, metavar="TOKEN",
                       help="non-local addresses may see the dashboard with it")  # fmt: skip
    serve.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (auto: uvloop where installed)",
    )
    bench = sub.add_parser("bench", help="load-test a websocket echo URL (ours or any)")
    bench.add_argument("url", help="echo endpoint, e.g. ws://127.0.0.1:8080/ws")
    bench.add_argument("--connections", type=_positive, default=100, metavar="N")
    bench.add_argument("--size", type=_positive, default=256, metavar="BYTES")
    bench.add_argument("--duration", type=_duration, default=5.0, metavar="S", help="per phase")
    bench.add_argument("--churn-workers", type=_positive, default=10, metavar="N")
    bench.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds (0 < S < 86400), got {text!r}")
    return value


def _origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "send_limit": args.send_limit,
        "slow_consumer_timeout": args.slow_consumer_timeout,
        "handshake_timeout": args.handshake_timeout,
        "max_connections": args.max_connections,
        "max_connections_per_ip": args.max_connections_per_ip,
        "allowed_origins": args.allowed_origins,
        "trusted_proxies": args.trusted_proxies,
        "rate_limit": args.rate_limit,
        "ping_interval": args.ping_interval,
        "close_timeout": args.close_timeout,
        "shutdown_timeout": args.shutdown_timeout,
        "idle_timeout": args.idle_timeout,
        "callback_timeout": args.callback_timeout,
        "max_message_size": args.max_message_size,
    }
    if args.ping_timeout is not None:
        settings["ping_timeout"] = args.ping_timeout
    Settings.build(**settings)  # fail before starting, naming the setting
    return settings


async def serve(
    host: str, port: int, settings: dict[str, Any], features: dict[str, Any] | None = None
) -> None:
    """Run the demo app; ``features``: ``make_app``'s metrics/dashboard keywords."""
    app = make_app(**(features or {}), **settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.get("shutdown_timeout", 5.0),
        # aiohttp >= 3.14.4 drops a connection that sends no complete request within it:
        # the slow-loris defence (it is also the HTTP keep-alive idle limit)
        keepalive_timeout=settings.get("handshake_timeout", 10.0),
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    urls = [f"http://{a[0]}:{a[1]}/" for a in runner.addresses]
    logger.info(
        "listening on %s (loop %s)",
        ", ".join(urls),
        type(loop).__module__,
        extra={"wsf": {"event": "server.started", "urls": urls, "loop": type(loop).__module__}},
    )
    try:
        await stop.wait()
    finally:
        logger.info("shutting down", extra={"wsf": {"event": "server.stopping"}})
        await runner.cleanup()
        logger.info("stopped", extra={"wsf": {"event": "server.stopped"}})


def _loop_factory(choice: str) -> Any:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("wsfinally: --loop uvloop: uvloop is not installed") from None
            return None
        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        from .bench import command

        return command(args, lambda coro: _run(coro, _loop_factory(args.loop)))
    try:
        settings = _settings(args)
        log.configure(args.log_format)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    hub_options: dict[str, Any] = {}
    if args.redis is not None:
        hub_options["lease_ttl"] = args.hub_lease_ttl
        hub_options["namespace"] = args.hub_namespace
        try:
            from .hub import RedisBackend

            RedisBackend(args.redis, **hub_options)  # fail before starting, naming the option
        except (TypeError, ValueError, RuntimeError) as exc:
            parser.error(str(exc))
    features = {"metrics": args.metrics, "dashboard": args.dashboard,
                "dashboard_token": args.dashboard_token, "redis": args.redis,
                "hub_options": hub_options}  # fmt: skip
    _run(serve(args.host, args.port, settings, features), _loop_factory(args.loop))
    return 0


def _run(coro: Any, factory: Any) -> Any:
    """``asyncio.run`` with a loop factory (``asyncio.Runner`` needs Python 3.11)."""
    if factory is None:
        return asyncio.run(coro)
    loop: asyncio.AbstractEventLoop = factory()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(coro)
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
