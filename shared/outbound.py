"""The one guard every request to a user-given URL goes through (webhooks, URL imports).

The host is resolved once, every address it resolves to is checked, and the connection is made to
the checked address itself: a DNS answer that changes between check and connect (rebinding)
cannot steer the request inside the network. Loopback, private, link-local (cloud metadata),
multicast, reserved and unspecified addresses are refused unless `OUTBOUND_ALLOW_NETS` names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from shared.errors import AppError, ErrorCode, Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64 maps IPv4 into this prefix; a gateway doing NAT64 would reach the embedded address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class UrlForbidden(Unprocessable):
    code = ErrorCode.URL_FORBIDDEN


class FetchFailed(AppError):
    """The remote end could not be reached or answered with an error."""

    status_code = 502
    code = ErrorCode.URL_FETCH_FAILED


def parse_allow_nets(text: str) -> tuple[IPNetwork, ...]:
    """`OUTBOUND_ALLOW_NETS`: comma-separated CIDRs (a bare address is its own /32 or /128)."""
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
    )


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is what it reaches."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_public(ip: IPAddress) -> bool:
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def address_allowed(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> bool:
    """Whether a request may be sent to `ip`: a public address, or one inside `allow`."""
    candidates: list[IPAddress] = [ip]
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        candidates = [embedded]
    return all(
        any(c.version == net.version and c in net for net in allow) or _is_public(c)
        for c in candidates
    )


@dataclass(frozen=True)
class Target:
    """A URL split into what the request needs: the checked address to connect to, and the
    name the server expects in `Host` and in TLS."""

    url: httpx.URL
    address: IPAddress

    @property
    def connect_url(self) -> httpx.URL:
        host = str(self.address)
        return self.url.copy_with(host=host)

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.url.scheme]
        host = self.url.host
        if ":" in host:
            host = f"[{host}]"
        port = self.url.port
        return host if port in (None, default) else f"{host}:{port}"


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 - decoding the name is what may fail
    except (httpx.InvalidURL, TypeError, ValueError) as exc:  # IDNA errors are ValueErrors
        raise UrlForbidden(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlForbidden("only http and https URLs are allowed")
    if not parsed.host:
        raise UrlForbidden("the URL has no host")
    if parsed.userinfo:
        raise UrlForbidden("credentials in the URL are not sent; remove them")
    return parsed


async def resolve(url: str | httpx.URL, allow: Sequence[IPNetwork], *, timeout: float) -> Target:
    """Resolve the URL's host once and check every address; the first is the one to use."""
    parsed = _parse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise UrlForbidden("the URL's host is not a valid name") from None
    except (OSError, TimeoutError) as exc:
        raise FetchFailed(f"cannot resolve {parsed.host}: {exc or 'timed out'}") from None
    except ValueError:  # e.g. a NUL in the name
        raise UrlForbidden("the URL's host is not a valid name") from None
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchFailed(f"cannot resolve {parsed.host}")
    for ip in addresses:
        if not address_allowed(ip, allow):
            raise UrlForbidden(f"{parsed.host} resolves to {ip}, which may not be reached")
    return Target(parsed, addresses[0])


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing: a cookie set by one hop is never sent to the next."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


@dataclass(frozen=True)
class Guard:
    """Outbound request policy: which nets are allowed besides public ones, and the timeouts."""

    allow: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 10.0
    # The CAs that certify https targets: the system's by default (tests pass their own).
    verify: ssl.SSLContext | bool = True

    @classmethod
    def from_settings(cls, allow_nets: str, connect_timeout: float) -> Guard:
        return cls(parse_allow_nets(allow_nets), connect_timeout)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        total_timeout: float,
        max_redirects: int = 0,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send one request and yield its response, body unread, all within `total_timeout`.

        Redirects are followed (each hop resolved and checked again) up to `max_redirects`;
        beyond that the 3xx response itself is yielded. Nothing but `headers` and `content` is
        sent: no cookies, no credentials, no proxy from the environment.
        """
        try:
            async with self._stream(
                method, url, total_timeout, max_redirects, headers or {}, content
            ) as response:
                yield response
        except TimeoutError:
            raise FetchFailed(f"the transfer took longer than {total_timeout:g} s") from None

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        method: str,
        url: str,
        total_timeout: float,
        max_redirects: int,
        headers: Mapping[str, str],
        content: bytes | None,
    ) -> AsyncIterator[httpx.Response]:
        timeout = httpx.Timeout(self.connect_timeout, connect=self.connect_timeout)
        async with (
            asyncio.timeout(total_timeout),
            httpx.AsyncClient(
                timeout=timeout,
                trust_env=False,
                follow_redirects=False,
                cookies=_no_cookies(),
                verify=self.verify,
            ) as client,
        ):
            current: str | httpx.URL = url
            for hop in range(max_redirects + 1):
                target = await resolve(current, self.allow, timeout=self.connect_timeout)
                sent = {**headers, "Host": target.host_header}
                extensions = (
                    {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
                )
                request = client.build_request(
                    method, target.connect_url, headers=sent, content=content, extensions=extensions
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.TimeoutException:
                    raise FetchFailed(f"{target.url.host} did not answer in time") from None
                except httpx.HTTPError as exc:
                    raise FetchFailed(f"{target.url.host}: {exc or type(exc).__name__}") from None
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location and hop < max_redirects:
                    await response.aclose()
                    current = target.url.join(location)
                    if response.status_code == 303:
                        method, content = "GET", None
                    continue
                try:
                    yield response
                finally:
                    await response.aclose()
                return
