"""Security headers, CORS and error bodies, on the real auth app and on tiny apps (no stack)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Message

from services.auth.app import create_app as create_auth_app
from shared.errors import NotFound
from shared.http import install_error_handlers
from shared.security import (
    CONTENT_SECURITY_POLICY,
    DOCS_CONTENT_SECURITY_POLICY,
    SecurityHeadersMiddleware,
    install_security,
)
from shared.settings import Settings

ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
SECRET = "s3cret-database-password"

EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "content-security-policy": CONTENT_SECURITY_POLICY,
}


def assert_security_headers(response: httpx.Response, csp: str = CONTENT_SECURITY_POLICY) -> None:
    for name, value in {**EXPECTED_HEADERS, "content-security-policy": csp}.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert len(response.headers.get_list("x-content-type-options")) == 1


@asynccontextmanager
async def serve(app: FastAPI, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app, **kwargs),  # type: ignore[arg-type]
            base_url="http://service.test",
        ) as client,
    ):
        yield client


def auth_app(tmp_path: Path) -> FastAPI:
    """The real auth app, which installs the security middleware itself."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        var_dir=tmp_path / "var",
        jwt_private_key=None,
        jwt_private_key_file=None,
    )
    return create_auth_app(settings)


@pytest.fixture(scope="module")
async def auth(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(auth_app(tmp_path_factory.mktemp("auth"))) as client:
        yield client


@pytest.fixture
async def tiny() -> AsyncIterator[httpx.AsyncClient]:
    async with serve(tiny_app(), raise_app_exceptions=False) as client:
        yield client


async def test_headers_on_a_normal_response(auth: httpx.AsyncClient) -> None:
    response = await auth.get("/healthz")
    assert response.status_code == 200
    assert_security_headers(response)
    assert "cache-control" not in response.headers


async def test_a_header_the_app_sets_is_kept(auth: httpx.AsyncClient) -> None:
    response = await auth.get("/.well-known/jwks.json")
    assert_security_headers(response)
    assert response.headers["cache-control"] == "public, max-age=300"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/thing", None, 404),
        ("POST", "/v1/auth/register", {"email": "nope", "password": "x"}, 422),
        ("GET", "/v1/auth/me", None, 401),
        ("PUT", "/v1/auth/me", None, 405),
    ],
)
async def test_headers_on_error_responses(
    auth: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await auth.request(method, path, json=body)
    assert response.status_code == status
    assert set(response.json()) >= {"detail", "code"}
    assert_security_headers(response)


async def test_auth_answers_are_never_cached(auth: httpx.AsyncClient) -> None:
    email = "cache@example.com"
    password = "correct horse battery"
    await auth.post("/v1/auth/register", json={"email": email, "password": password})
    response = await auth.post("/v1/auth/login", data={"username": email, "password": password})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert (await auth.get("/v1/auth/me")).headers["cache-control"] == "no-store"
    assert_security_headers(response)


async def test_throttled_login_has_headers_and_retry_after(auth: httpx.AsyncClient) -> None:
    email = "throttled@example.com"
    for _ in range(6):
        response = await auth.post("/v1/auth/login", data={"username": email, "password": "no"})
    assert response.status_code == 429
    assert response.headers["retry-after"].isdigit()
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response)


async def test_docs_page_gets_a_policy_that_lets_it_render(auth: httpx.AsyncClient) -> None:
    response = await auth.get("/docs")
    assert response.status_code == 200
    assert_security_headers(response, DOCS_CONTENT_SECURITY_POLICY)


async def test_cors_allowed_origin_is_answered(tiny: httpx.AsyncClient) -> None:
    response = await tiny.get("/gone", headers={"Origin": ALLOWED_ORIGIN})
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-credentials" not in response.headers
    assert_security_headers(response)

    preflight = await tiny.options(
        "/gone",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "retry-after" in response.headers["access-control-expose-headers"].lower()
    assert_security_headers(preflight)


async def test_cors_lets_an_allowed_origin_speak_tus(tiny: httpx.AsyncClient) -> None:
    preflight = await tiny.options(
        "/gone",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable,upload-offset,content-type",
        },
    )
    assert preflight.status_code == 200
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    response = await tiny.get("/gone", headers={"Origin": ALLOWED_ORIGIN})
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"upload-offset", "location", "job-id", "tus-resumable"} <= {
        h.strip() for h in exposed.split(",")
    }


async def test_cors_other_origin_gets_nothing(tiny: httpx.AsyncClient) -> None:
    response = await tiny.get("/gone", headers={"Origin": OTHER_ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    preflight = await tiny.options(
        "/gone", headers={"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 400


async def test_no_cors_without_an_allow_list(auth: httpx.AsyncClient) -> None:
    response = await auth.get("/healthz", headers={"Origin": ALLOWED_ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    assert_security_headers(response)


def tiny_app() -> FastAPI:
    """A service as the app factories build one, with routes that fail or stream."""
    app = FastAPI()
    install_error_handlers(app)
    install_security(app, cors_origins=[ALLOWED_ORIGIN])

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"connection to mysql://root:{SECRET}@db failed")

    @app.get("/gone")
    async def gone() -> None:
        raise NotFound("no such job")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="audio/mpeg")

    return app


async def test_500_is_a_bare_error_body_with_headers(tiny: httpx.AsyncClient) -> None:
    response = await tiny.get("/boom", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "code": "internal_error"}
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert_security_headers(response)
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def test_app_errors_keep_their_code(tiny: httpx.AsyncClient) -> None:
    response = await tiny.get("/gone")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such job", "code": "not_found"}
    assert_security_headers(response)


async def test_streaming_response_has_headers_and_body(tiny: httpx.AsyncClient) -> None:
    response = await tiny.get("/stream")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert_security_headers(response)


async def test_middleware_passes_each_body_message_on_at_once() -> None:
    """The start goes out before the app has produced the rest of the body: nothing buffers."""
    more = asyncio.Event()

    async def app(scope: object, receive: object, send: object) -> None:
        assert callable(send)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await more.wait()
        await send({"type": "http.response.body", "body": b"last", "more_body": False})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body") == b"first":
            more.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "path": "/x", "method": "GET", "headers": []}
    await asyncio.wait_for(SecurityHeadersMiddleware(app)(scope, receive, send), timeout=5)
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    headers = dict(sent[0]["headers"])
    assert headers[b"x-a"] == b"1"
    assert headers[b"x-content-type-options"] == b"nosniff"


async def test_websockets_pass_through_untouched() -> None:
    accept: Message = {"type": "websocket.accept", "headers": []}
    events: list[Message] = [accept, {"type": "websocket.send", "text": "hello"}]

    async def app(scope: object, receive: object, send: object) -> None:
        assert callable(send)
        for event in events:
            await send(event)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    await SecurityHeadersMiddleware(app)({"type": "websocket", "path": "/ws"}, receive, send)
    assert sent == [{"type": "websocket.accept", "headers": []}, events[1]]
