"""The outbound guard: refusals proven on loopback forms only, ranges by the address check alone.

No test here sends a packet outside 127.0.0.0/8: the address check is unit-tested without any
connection, and the end-to-end refusals aim at loopback, so a broken guard stays on this machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from shared.errors import ErrorCode
from shared.outbound import FetchFailed, Guard, UrlForbidden, address_allowed, parse_allow_nets
from tests.support.asgi import serving
from tests.support.net import free_port

LOOPBACK = parse_allow_nets("127.0.0.0/8")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (carrier NAT)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


def test_allow_nets_open_exactly_their_range() -> None:
    allow = parse_allow_nets("127.0.0.0/8, 10.5.0.0/16")
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allow)
    assert address_allowed(ipaddress.ip_address("10.5.9.9"), allow)
    assert not address_allowed(ipaddress.ip_address("10.6.0.1"), allow)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)
    assert not address_allowed(ipaddress.ip_address("::1"), allow)


seen: list[dict[str, str]] = []


async def _echo(request: Request) -> Response:
    seen.append(dict(request.headers))
    return PlainTextResponse(f"host={request.headers.get('host')}")


async def _hop(request: Request) -> Response:
    n = int(request.path_params["n"])
    response = RedirectResponse(f"/hop/{n - 1}" if n > 0 else "/echo", status_code=302)
    response.set_cookie("session", "secret")
    return response


async def _to(request: Request) -> Response:
    return RedirectResponse(request.query_params["url"], status_code=302)


async def _slow(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        import asyncio

        for _ in range(100):
            yield b"x" * 10
            await asyncio.sleep(0.1)

    from starlette.responses import StreamingResponse

    return StreamingResponse(body())


_app = Starlette(
    routes=[
        Route("/echo", _echo),
        Route("/hop/{n}", _hop),
        Route("/to", _to),
        Route("/slow", _slow),
    ]
)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    number = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=number, log_level="warning")
    async with serving(config):
        yield number


async def _get(guard: Guard, url: str, *, redirects: int = 0, total: float = 10) -> str:
    async with guard.stream("GET", url, total_timeout=total, max_redirects=redirects) as response:
        await response.aread()
        return f"{response.status_code} {response.text}"


async def test_allowed_loopback_is_reached_with_its_host_name(port: int) -> None:
    guard = Guard(LOOPBACK, connect_timeout=5)
    seen.clear()
    result = await _get(guard, f"http://localhost:{port}/echo")
    assert result == f"200 host=localhost:{port}"
    assert "authorization" not in seen[0]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "2130706433", "[::1]", "[::ffff:127.0.0.1]", "127.1"]
)
async def test_loopback_forms_are_refused_without_allow_nets(port: int, host: str) -> None:
    seen.clear()
    with pytest.raises(UrlForbidden) as caught:
        await _get(Guard(), f"http://{host}:{port}/echo")
    assert caught.value.code is ErrorCode.URL_FORBIDDEN
    assert seen == []


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]", "[::ffff:127.0.0.2]", "2130706434"])
async def test_a_redirect_to_loopback_is_refused(port: int, host: str) -> None:
    # The first hop is allowed (127.0.0.1 only); its redirect points at other loopback forms.
    guard = Guard(parse_allow_nets("127.0.0.1/32"), connect_timeout=5)
    seen.clear()
    with pytest.raises(UrlForbidden):
        await _get(guard, f"http://127.0.0.1:{port}/to?url=http://{host}:{port}/echo", redirects=5)
    assert seen == []


async def test_redirects_follow_at_most_the_limit(port: int) -> None:
    guard = Guard(LOOPBACK, connect_timeout=5)
    seen.clear()
    assert await _get(guard, f"http://127.0.0.1:{port}/hop/4", redirects=5) == (
        f"200 host=127.0.0.1:{port}"
    )
    # Every hop set a cookie; none is sent back.
    assert "cookie" not in seen[0]
    assert (await _get(guard, f"http://127.0.0.1:{port}/hop/5", redirects=5)).startswith("302")
    # Webhooks follow none: the 3xx is the answer.
    assert (await _get(guard, f"http://127.0.0.1:{port}/hop/0")).startswith("302")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/",
        "http:///x",
        "http://xn--zz/",  # an invalid IDNA label
        f"http://{'a' * 70}.example/",  # a label too long to encode: refused before any lookup
    ],
)
async def test_other_schemes_and_credentials_are_refused(url: str) -> None:
    with pytest.raises(UrlForbidden):
        await _get(Guard(LOOPBACK), url)


async def test_the_whole_transfer_has_a_deadline(port: int) -> None:
    guard = Guard(LOOPBACK, connect_timeout=5)
    with pytest.raises(FetchFailed, match="longer than"):
        await _get(guard, f"http://127.0.0.1:{port}/slow", total=1)


async def test_a_closed_port_is_a_fetch_failure() -> None:
    with pytest.raises(FetchFailed):
        await _get(Guard(LOOPBACK, connect_timeout=5), f"http://127.0.0.1:{free_port()}/")


def _certificate_for(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (no IP address in it) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_checks_the_certificate_against_the_name_not_the_address(
    tmp_path: Path,
) -> None:
    # The request goes to 127.0.0.1, the certificate names only `localhost`: it verifies only
    # because the name travels as SNI and is what the certificate is checked against.
    cert, key = _certificate_for("localhost", tmp_path)
    number = free_port()
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=number,
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    async with serving(config):
        guard = Guard(LOOPBACK, connect_timeout=5, verify=trusted)
        assert await _get(guard, f"https://localhost:{number}/echo") == (
            f"200 host=localhost:{number}"
        )
        # By its address the same server does not verify: the check is real.
        with pytest.raises(FetchFailed):
            await _get(guard, f"https://127.0.0.1:{number}/echo")
