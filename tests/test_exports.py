"""The public names are those design.md promises; the reasons' strings are stable."""

from __future__ import annotations

import wsfinally
from wsfinally import EndReason


def test_public_names() -> None:
    for name in ("setup", "accept", "endpoint", "Connection", "Ending", "EndReason",
                 "Observer", "setup_metrics"):  # fmt: skip
        assert name in wsfinally.__all__
        assert hasattr(wsfinally, name)
    assert sorted(wsfinally.__all__) == sorted(set(wsfinally.__all__))


def test_end_reason_values_are_the_contract() -> None:
    assert {r.value for r in EndReason} == {
        "client_closed", "server_closed", "connection_lost", "heartbeat_timeout",
        "idle_timeout", "protocol_error", "message_too_big", "slow_consumer", "rate_limited",
        "handler_error", "server_shutdown", "cancelled", "node_lost",
    }  # fmt: skip
    assert EndReason("heartbeat_timeout") is EndReason.HEARTBEAT_TIMEOUT
    assert str(EndReason.CLIENT_CLOSED) == "client_closed"


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("wsfinally").joinpath("py.typed").is_file()


def test_metrics_and_dashboard_names() -> None:
    import wsfinally.metrics

    assert wsfinally.setup_metrics is wsfinally.metrics.setup_metrics
    assert set(wsfinally.metrics.__all__) == {
        "METRICS", "Metrics", "route_of", "UNMATCHED", "code_label", "setup_metrics", "track_hub",
    }  # fmt: skip
    import wsfinally.dashboard

    assert set(wsfinally.dashboard.__all__) == {
        "DASHBOARD", "LOCAL_NETWORKS", "Dashboard", "dashboard_app", "setup_dashboard",
    }  # fmt: skip
