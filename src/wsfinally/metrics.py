"""Prometheus metrics of one application's websocket connections (docs/metrics.md).

``setup_metrics(app)`` serves them at ``/metrics``. Nothing is counted per message: the
traffic totals are the counters each :class:`~wsfinally.Connection` keeps anyway, added up
when a connection ends (from its :class:`~wsfinally.Ending`) and, for the live ones, at
scrape time; so a scrape is exact and the message path is untouched. Per connection there
is one observer call when it opens, one when it ends, one per heartbeat pong and one per
end callback (``server.Observer``).

Each application gets its own ``CollectorRegistry`` (not prometheus_client's global one),
so several applications, or tests, in one process never collide; pass ``registry=`` to
publish into one of your own.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .server import REGISTRY, Observer, Registry

if TYPE_CHECKING:
    from .connection import Connection
    from .ending import Ending

__all__ = [
    "METRICS",
    "UNMATCHED",
    "Metrics",
    "code_label",
    "route_of",
    "setup_metrics",
    "track_hub",
]

#: Connection lifetimes, seconds: from a refused-at-once client to a day-long session.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: Heartbeat round trips, seconds: loopback to a congested mobile link.
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: End callbacks, seconds (their default timeout is 5 s).
CALLBACK_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10)
#: How many of the peers holding the most unread output are published, by id.
SLOWEST = 5

HubCounts = Callable[[], tuple[int, int]]


#: The route label of a connection accepted where no route matched (a catch-all middleware).
UNMATCHED = "<unmatched>"


def route_of(conn: Connection) -> str:
    """The route label: the aiohttp resource's canonical path (``/rooms/{name}``: bounded
    cardinality), else ``<unmatched>`` (never the raw path: one series per URL)."""
    request = conn.request
    try:
        return str(request.match_info.route.resource.canonical)  # type: ignore[union-attr]
    except AttributeError:
        return UNMATCHED


def code_label(code: int) -> str:
    """The close code as a label: the codes RFC 6455 and IANA define (1000-1015) as
    themselves, the rest by range (``3xxx`` registered, ``4xxx`` private, ``other``): a
    peer can send any code from 3000 to 65535, and each would be a series of its own."""
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


class Metrics(Observer):
    """The collectors of one wsfinally :class:`~wsfinally.Registry`.

    It is an ``Observer`` of that registry (for what happens once per connection) and a
    prometheus_client ``Collector`` (for what is read off the live connections at scrape
    time). ``collectors`` is the ``CollectorRegistry`` it publishes into.
    """

    def __init__(self, registry: Registry, collectors: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.collectors = collectors if collectors is not None else CollectorRegistry()
        self._hub: HubCounts | None = None
        # totals of the connections that have ended (the live ones are added at scrape time)
        self._ended_traffic = [0, 0, 0, 0]  # messages in, out, bytes in, out
        r = self.collectors
        self.open = Gauge(
            "wsfinally_connections_open", "Connections open now (accepted, not yet ended).",
            ["route"], registry=r,
        )  # fmt: skip
        self.opened_total = Counter(
            "wsfinally_connections_opened", "Connections accepted.", ["route"], registry=r
        )
        self.ended_total = Counter(
            "wsfinally_connections_ended",
            "Connections ended, by end reason and the close code the Ending reports.",
            ["reason", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "wsfinally_connection_duration_seconds",
            "Lifetime of ended connections, from the handshake to the Ending.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rtt = Histogram(
            "wsfinally_heartbeat_rtt_seconds",
            "Round trip of heartbeat pings (ping written to pong read).",
            buckets=RTT_BUCKETS,
            registry=r,
        )
        self.callback_duration = Histogram(
            "wsfinally_end_callback_duration_seconds",
            "Time each end callback took (failed and timed-out ones included).",
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        # labelled children, looked up once per label set (``labels()`` takes a lock each call)
        self._by_route: dict[str, tuple[Any, Any]] = {}
        self._by_end: dict[tuple[str, str], Any] = {}
        r.register(_Live(self))
        registry.observers.append(self)

    # -- Observer: once per connection event --------------------------------------------

    def _route(self, conn: Connection) -> tuple[Any, Any]:
        route = route_of(conn)
        children = self._by_route.get(route)
        if children is None:
            children = (self.open.labels(route), self.opened_total.labels(route))
            self._by_route[route] = children
        return children

    def opened(self, conn: Connection) -> None:
        is_open, opened = self._route(conn)
        is_open.inc()
        opened.inc()

    def ended(self, conn: Connection, ending: Ending) -> None:
        self._route(conn)[0].dec()
        key = (ending.reason.value, code_label(ending.code))
        child = self._by_end.get(key)
        if child is None:
            child = self._by_end[key] = self.ended_total.labels(*key)
        child.inc()
        self.duration.observe(ending.duration)
        t = self._ended_traffic
        t[0] += ending.messages_in
        t[1] += ending.messages_out
        t[2] += ending.bytes_in
        t[3] += ending.bytes_out

    def pong(self, conn: Connection, rtt: float) -> None:
        self.rtt.observe(rtt)

    def callback_ran(self, conn: Connection, seconds: float) -> None:
        self.callback_duration.observe(seconds)

    # -- extension point -----------------------------------------------------------------

    def track_hub(self, counts: HubCounts | None) -> None:
        """Publish the hub's ``(rooms, members)`` (read at each scrape) as
        ``wsfinally_hub_rooms`` and ``wsfinally_hub_members``; ``None`` stops it."""
        self._hub = counts

    def live(self) -> list[Connection]:
        """Connections accepted and not yet ended."""
        return [c for c in self.registry.connections.values() if c.ending is None]

    def expose(self) -> bytes:
        """The exposition text of every collector (what ``/metrics`` answers)."""
        return generate_latest(self.collectors)


class _Live(Collector):
    """What is read at scrape time: traffic (ended totals + live counters), the slowest
    peers' buffers, the registry's refusal and failure counters, the hub's sizes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        stats = m.registry.stats
        live = m.live()
        totals = list(m._ended_traffic)
        for c in live:
            totals[0] += c.messages_in
            totals[1] += c.messages_out
            totals[2] += c.bytes_in
            totals[3] += c.bytes_out
        names = (
            ("wsfinally_messages_received", "Messages received from peers."),
            ("wsfinally_messages_sent", "Messages sent to peers."),
            ("wsfinally_bytes_received", "Payload bytes received from peers (UTF-8 for text)."),
            ("wsfinally_bytes_sent", "Payload bytes sent to peers (UTF-8 for text)."),
        )
        for (name, doc), value in zip(names, totals, strict=True):
            yield CounterMetricFamily(name, doc, value=value)
        refused = CounterMetricFamily(
            "wsfinally_handshakes_refused",
            "Websocket handshakes refused before the upgrade, by cause.",
            labels=["cause"],
        )
        for cause, n in sorted(stats.refused.items()):
            refused.add_metric([cause], n)
        yield refused
        yield CounterMetricFamily(
            "wsfinally_end_callback_failures",
            "End callbacks that raised, timed out or were cancelled.",
            value=stats.callback_failures,
        )
        yield CounterMetricFamily(
            "wsfinally_shutdown_forced",
            "Connections aborted at the shutdown deadline (their handler lingered).",
            value=stats.forced_at_shutdown,
        )
        buffered = [(c.buffered, c) for c in live]
        yield GaugeMetricFamily(
            "wsfinally_buffered_bytes",
            "Bytes written for peers and not yet taken by their TCP stacks, all connections.",
            value=sum(b for b, _ in buffered),
        )
        slowest = GaugeMetricFamily(
            "wsfinally_slowest_peer_buffered_bytes",
            f"Unread output of the {SLOWEST} peers holding the most (only those holding some).",
            labels=["rank", "id", "peer", "route"],
        )
        top = heapq.nlargest(SLOWEST, ((b, c.id, c) for b, c in buffered if b > 0))
        for rank, (b, cid, c) in enumerate(top, 1):
            slowest.add_metric([str(rank), cid, c.peer, route_of(c)], b)
        yield slowest
        if m._hub is not None:
            rooms, members = m._hub()
            yield GaugeMetricFamily("wsfinally_hub_rooms", "Hub rooms with members.", rooms)
            yield GaugeMetricFamily(
                "wsfinally_hub_members", "Hub room memberships on this node.", members
            )


METRICS: web.AppKey[Metrics] = web.AppKey("wsfinally.metrics", Metrics)
_HUB_COUNTS: web.AppKey[HubCounts | None] = web.AppKey("wsfinally.metrics.hub", object)  # type: ignore[arg-type]


def setup_metrics(
    app: web.Application,
    path: str | None = "/metrics",
    registry: CollectorRegistry | None = None,
) -> Metrics:
    """Collect metrics of ``app``'s connections and serve them at ``path`` (``None``: do not
    add a route; serve ``app[METRICS].expose()`` yourself).

    Call it after :func:`wsfinally.setup` and before the application starts. ``registry``:
    a ``CollectorRegistry`` of yours to publish into (default: a new one per application).
    The route has no access rule: bind to a private address or put it behind your proxy's
    (docs/metrics.md).
    """
    if REGISTRY not in app:
        raise RuntimeError("call wsfinally.setup(app) before setup_metrics(app)")
    if METRICS in app:
        raise RuntimeError("setup_metrics() was already called for this application")
    metrics = Metrics(app[REGISTRY], registry)
    metrics.track_hub(app.get(_HUB_COUNTS))
    app[METRICS] = metrics
    if path is not None:

        async def serve_metrics(request: web.Request) -> web.Response:
            response = web.Response(body=metrics.expose())
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

        app.router.add_get(path, serve_metrics)
    return metrics


def track_hub(app: web.Application, counts: HubCounts | None) -> None:
    """Publish a hub's ``(rooms, members)``, read at each scrape, on ``app``'s metrics as
    ``wsfinally_hub_rooms`` and ``wsfinally_hub_members``; ``None`` stops it.

    Before or after ``setup_metrics(app)`` alike (before the app starts); without metrics
    it costs nothing.
    """
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.track_hub(counts)
    elif not app.frozen:
        app[_HUB_COUNTS] = counts
