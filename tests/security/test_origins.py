"""Origin checks for WebSocket handshakes, origin parsing, and which client address to believe."""

from __future__ import annotations

import pytest

from shared.security import (
    client_address,
    normalise_origin,
    origin_allowed,
    parse_networks,
    parse_origins,
)

ALLOWED = ["https://app.example.com", "http://localhost:5173"]


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        # No Origin: not a browser (the CLI, scripts); the token decides.
        (None, "api.example.com", [], True),
        (None, None, [], True),
        # Our own page.
        ("https://api.example.com", "api.example.com", [], True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
        ("HTTP://LOCALHOST:8000", "localhost:8000", [], True),
        ("https://api.example.com:443", "api.example.com", [], True),
        ("http://[::1]:8000", "[::1]:8000", [], True),
        # The same host on another port is another origin.
        ("http://127.0.0.1:9999", "127.0.0.1:8000", [], False),
        ("http://api.example.com:8080", "api.example.com", [], False),
        # Another site, unless allowed.
        ("https://evil.example.net", "api.example.com", [], False),
        ("https://evil.example.net", "api.example.com", ALLOWED, False),
        ("https://app.example.com", "api.example.com", ALLOWED, True),
        ("https://app.example.com:443", "api.example.com", ALLOWED, True),
        ("http://localhost:5173", "127.0.0.1:8000", ALLOWED, True),
        ("http://app.example.com", "api.example.com", ALLOWED, False),  # scheme matters
        ("https://app.example.com.evil.net", "api.example.com", ALLOWED, False),
        ("https://evil.example.net", "api.example.com", ["*"], True),
        # Opaque or broken origins are never ours.
        ("null", "api.example.com", [], False),
        ("null", "api.example.com", ALLOWED, False),
        ("file://", "api.example.com", [], False),
        ("https://api.example.com", None, [], False),
        ("https://api.example.com", "", [], False),
        ("not a url", "api.example.com", [], False),
        ("https://api.example.com:99999", "api.example.com", [], False),
        ("https://api.example.com", "api.example.com:bad", [], False),
    ],
)
def test_origin_allowed(
    origin: str | None, host: str | None, allowed: list[str], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443/", "https://app.example.com"),
        ("http://app.example.com:8080", "http://app.example.com:8080"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://app.example.com/path", None),
        ("ftp://app.example.com", None),
        ("null", None),
        ("*", "*"),
    ],
)
def test_normalise_origin(origin: str, expected: str | None) -> None:
    assert normalise_origin(origin) == expected


def test_parse_origins() -> None:
    assert parse_origins("") == []
    assert parse_origins(" https://a.example , ,http://b.example:8080") == [
        "https://a.example",
        "http://b.example:8080",
    ]


PROXIES = parse_networks("127.0.0.1, ::1, 10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        # Untrusted peers cannot name someone else.
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),
        # A trusted proxy's word is taken, read from the right.
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", "198.51.100.1"),
        ("::1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),
        # Garbage stops the walk at the last address we could trust.
        ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),
        ("127.0.0.1", "10.9.9.9, nonsense", "127.0.0.1"),
        # Every hop a proxy: the leftmost is as close to the client as we get.
        ("127.0.0.1", "10.0.0.2, 10.0.0.1", "10.0.0.2"),
        ("testclient", None, None),
        (None, "198.51.100.1", None),
    ],
)
def test_client_address(peer: str | None, forwarded_for: str | None, expected: str | None) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks("127.0.0.1, 10.1.2.3/8,::1")] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(ValueError, match="does not appear to be"):
        parse_networks("not-an-ip")
