"""Bad settings fail at construction with a message naming the setting."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

import wsfinally
from wsfinally import Settings


def test_defaults_are_those_of_the_design() -> None:
    s = Settings()
    assert (s.ping_interval, s.ping_timeout, s.close_timeout, s.shutdown_timeout) == (20, 20, 5, 5)
    assert s.max_message_size == 1024 * 1024
    assert s.idle_timeout is None


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ping_interval": 0}, "ping_interval"),
        ({"ping_interval": -1}, "ping_interval"),
        ({"ping_timeout": 0}, "ping_timeout"),
        ({"ping_timeout": -5.0}, "ping_timeout"),
        ({"close_timeout": 0}, "close_timeout"),
        ({"close_timeout": float("nan")}, "close_timeout"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"callback_timeout": 0}, "callback_timeout"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"max_message_size": 1.5}, "max_message_size"),
        ({"close_timeout": "5"}, "close_timeout"),
        ({"ping_interval": None, "ping_timeout": 3}, "ping_timeout"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"protocols": "chat"}, "protocols"),
    ],
)
def test_bad_setting_is_refused_naming_it(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises((ValueError, TypeError), match=named):
        Settings.build(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"close_timeout": -1}, {"ping_interval": None, "ping_timeout": 1}]
)
def test_bad_settings_fail_at_every_way_in(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        wsfinally.endpoint(**kwargs)
    with pytest.raises(ValueError):
        wsfinally.setup(web.Application(), **kwargs)


def test_heartbeat_can_be_turned_off() -> None:
    s = Settings.build(ping_interval=None)
    assert s.ping_interval is None and s.ping_timeout is None


def test_overriding_the_interval_keeps_the_base_timeout() -> None:
    base = Settings.build(ping_interval=1, ping_timeout=2)
    assert Settings.build(base, ping_interval=3).ping_timeout == 2
    assert Settings.build(base, ping_interval=None).ping_timeout is None
    off = Settings.build(ping_interval=None)
    assert Settings.build(off, ping_interval=4).ping_timeout == 20


def test_setup_twice_is_refused() -> None:
    app = web.Application()
    wsfinally.setup(app)
    with pytest.raises(RuntimeError, match="already"):
        wsfinally.setup(app)
