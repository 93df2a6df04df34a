"""HTTP hardening every FastAPI service shares: security headers, CORS, WebSocket Origin checks,
and which client address to believe behind a proxy.

`install_security(app, cors_origins=...)` is the one call an app factory makes. It wraps the app's
whole middleware stack, Starlette's error middleware included, so that even a 500 produced by the
catch-all handler carries the headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A same-origin single-page app with no inline scripts or styles; WebSockets go to our own host.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
    "media-src 'self' blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)
# Swagger UI on /docs (shared.apidocs): its files come from this server, and "try it out" asks
# this server only; its icons are data: URLs.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PATHS = ("/docs",)
NO_STORE_PREFIXES = ("/v1/auth/",)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
)

# What a browser on an allowed origin may send and read; everything the public API uses.
CORS_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
# The tus headers of resumable uploads (/v1/uploads), both ways.
TUS_REQUEST_HEADERS = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "X-HTTP-Method-Override",
)
TUS_RESPONSE_HEADERS = (
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Job-Id",
)
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Range",
    "X-Request-ID",
    *TUS_REQUEST_HEADERS,
)
CORS_EXPOSED_HEADERS = (
    "Location",
    "Content-Disposition",
    "Content-Range",
    "Accept-Ranges",
    "Retry-After",
    *TUS_RESPONSE_HEADERS,
)
CORS_MAX_AGE = 600

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _content_security_policy(path: str) -> str:
    if any(path == p or path.startswith(p + "/") for p in DOCS_PATHS):
        return DOCS_CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY


class SecurityHeadersMiddleware:
    """Adds the security headers to the start of every HTTP response.

    Pure ASGI: only the `http.response.start` message is touched, body messages pass through as
    they come, so uploads and downloads keep streaming. A header the app set itself is kept,
    except `Cache-Control` under `/v1/auth/`, which is always `no-store` (tokens must not linger
    in any cache).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        added = [*SECURITY_HEADERS, ("content-security-policy", _content_security_policy(path))]
        no_store = path.startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_headers(message.get("headers", ()), added, no_store)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_headers(
    raw: Iterable[tuple[bytes, bytes]], added: Sequence[tuple[str, str]], no_store: bool
) -> list[tuple[bytes, bytes]]:
    headers = [
        (name, value) for name, value in raw if not (no_store and name.lower() == b"cache-control")
    ]
    present = {name.lower() for name, _ in headers}
    for name, value in added:
        if name.encode() not in present:
            headers.append((name.encode(), value.encode()))
    if no_store:
        headers.append((b"cache-control", b"no-store"))
    return headers


def install_security(app: Starlette, *, cors_origins: Sequence[str] = ()) -> None:
    """Security headers on every response and CORS for `cors_origins` (empty: same origin only).

    Both wrap the stack Starlette builds, outside its ServerErrorMiddleware: middleware added with
    `add_middleware` sits inside it and never sees the 500 that the catch-all handler sends.
    """
    build_stack = app.build_middleware_stack
    origins = list(cors_origins)

    def build_secured_stack() -> ASGIApp:
        stack = build_stack()
        if origins:
            stack = cors_middleware(stack, origins)
        return SecurityHeadersMiddleware(stack)

    app.build_middleware_stack = build_secured_stack  # type: ignore[method-assign]


def cors_middleware(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """Starlette's CORS middleware for an allow-list. Bearer tokens, not cookies: no credentials."""
    return CORSMiddleware(
        app,
        allow_origins=[normalise_origin(o) or o for o in origins],
        allow_methods=CORS_METHODS,
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=CORS_MAX_AGE,
    )


def parse_origins(value: str) -> list[str]:
    """A comma-separated CORS_ORIGINS setting as a list (blank entries dropped)."""
    return [o.strip() for o in value.split(",") if o.strip()]


def normalise_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with default ports dropped; None if not an origin."""
    if origin == "*":
        return origin
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host_and_port(host_header: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit("//" + host_header.strip())
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a WebSocket handshake's `Origin` may open a socket (cross-site WebSocket hijacking).

    No Origin header: not a browser (CLI, scripts), which a token already authenticates, allowed.
    An Origin naming the host the request came to (the `Host` header): our own page, allowed.
    Anything else, `null` included, only when it is in the CORS allow-list (or that list is `*`).
    """
    if origin is None:
        return True
    normalised = normalise_origin(origin)
    if normalised is None:
        return False
    if "*" in allowed or normalised in {normalise_origin(a) for a in allowed}:
        return True
    if not host:
        return False
    requested = _host_and_port(host)
    if requested is None or not requested[0]:
        return False
    parts = urlsplit(normalised)
    origin_port = parts.port or _DEFAULT_PORTS[parts.scheme]
    host_name, host_port = requested
    # Without a port in Host the request came to the default port of its (unknown) scheme.
    port_matches = origin_port == host_port or (
        host_port is None and origin_port == _DEFAULT_PORTS[parts.scheme]
    )
    return (parts.hostname or "").lower() == host_name and port_matches


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> list[IPNetwork]:
    """A comma-separated list of addresses or CIDR blocks (e.g. TRUSTED_PROXIES)."""
    return [
        ipaddress.ip_network(item.strip(), strict=False)
        for item in value.split(",")
        if item.strip()
    ]


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IPNetwork]
) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def is_trusted_proxy(peer: str | None, trusted_proxies: Sequence[IPNetwork]) -> bool:
    address = _ip(peer) if peer else None
    return address is not None and _trusted(address, trusted_proxies)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str | None:
    """The address of the client a request comes from, as an IP string.

    `X-Forwarded-For` is believed only when the direct peer is a trusted proxy; then its entries
    are read from the right (the ones our proxies appended) and the first address that is not a
    trusted proxy is the client. Anything left of that was written by the client and is ignored.
    """
    direct = _ip(peer) if peer else None
    if direct is None:
        return None
    if not forwarded_for or not _trusted(direct, trusted_proxies):
        return str(direct)
    client = direct
    for entry in reversed(forwarded_for.split(",")):
        hop = _ip(entry)
        if hop is None:
            break  # garbage in the chain: stop at the last address we could trust
        client = hop
        if not _trusted(hop, trusted_proxies):
            break
    return str(client)
