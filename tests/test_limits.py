"""Pre-upgrade decisions and the rate bucket, as tables (no event loop)."""

from __future__ import annotations

import pytest

from wsfinally.limits import TokenBucket, client_address, origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed", "ok"),
    [
        (None, "example.com", False, None, True),  # not a browser
        ("http://example.com", "example.com", False, None, True),
        ("http://example.com:80", "example.com", False, None, True),
        ("http://EXAMPLE.com", "example.com:80", False, None, True),
        ("https://example.com", "example.com", True, None, True),
        ("https://example.com", "example.com", False, None, False),  # scheme differs
        ("http://evil.test", "example.com", False, None, False),  # cross-site hijacking
        ("http://example.com:8080", "example.com", False, None, False),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", False, None, True),
        ("null", "example.com", False, None, False),
        ("http://example.com", None, False, None, False),
        ("http://app.test", "api.test", False, ["http://app.test"], True),
        ("http://app.test/", "api.test", False, ["http://APP.test"], True),
        ("http://evil.test", "api.test", False, ["http://app.test"], False),
        ("http://evil.test", "api.test", False, ["*"], True),
    ],
)
def test_origin_check_same_origin_by_default_allowlist_otherwise(
    origin: str | None, host: str | None, secure: bool, allowed: list[str] | None, ok: bool
) -> None:
    assert origin_allowed(origin, host, secure, allowed) is ok


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "counted"),
    [
        ("203.0.113.5", "", (), "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", (), "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.0.0.9", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),  # spoof on the left
        ("10.0.0.2", "", ("10.0.0.0/8",), "10.0.0.2"),
        ("127.0.0.1", "garbage", ("127.0.0.1",), "garbage"),
        (None, "", (), "?"),
        # two header lines: the client's spoofed one, then the proxy's own (HAProxy)
        ("10.0.0.2", "6.6.6.6|203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
    ],
)
def test_client_address_trusts_forwarded_for_only_from_trusted_proxies(
    peer: str | None, xff: str, trusted: tuple[str, ...], counted: str
) -> None:
    lines = xff.split("|") if xff else []
    assert client_address(peer, lines, trusted) == counted


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s
    assert bucket.take(10.0) and bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(10.0)  # never more than the burst
