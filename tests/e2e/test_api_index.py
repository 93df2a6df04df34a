"""The API's front door: `GET /v1` (the URL `up` prints) and the errors a newcomer meets first."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import register_and_login


async def test_the_api_url_answers_with_where_to_go(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1")
    assert response.status_code == 200
    index = response.json()
    assert index["docs"] == "/docs"
    assert index["openapi"] == "/openapi.json"
    assert index["web"] == "/"
    assert index["version"] not in ("", "unknown")
    for key in ("docs", "openapi", "web"):
        assert (await client.get(index[key])).status_code == 200, key


async def test_login_with_json_says_it_takes_a_form(client: httpx.AsyncClient) -> None:
    user = await register_and_login(client)
    response = await client.post(
        "/v1/auth/login", json={"username": user["email"], "password": "whatever it is"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request"
    assert "takes a form" in body["detail"]
    assert "`username`" in body["detail"]
    assert "`password`" in body["detail"]
    # The same fields as a form still log in.
    form = {"username": user["email"], "password": "correct horse battery staple"}
    assert (await client.post("/v1/auth/login", data=form)).status_code == 200
