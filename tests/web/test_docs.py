"""`/docs` in a real browser with no network beyond the gateway: Swagger UI comes from the
server, lists the operations and runs one, and nothing is asked of any other host."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from shared.security import DOCS_CONTENT_SECURITY_POLICY
from tests.support.stack import Stack
from tests.web.browser import ON_FILE_BACKEND, expect

if TYPE_CHECKING:
    from playwright.async_api import Page, Route


def test_the_docs_policy_names_no_other_host() -> None:
    for directive in DOCS_CONTENT_SECURITY_POLICY.split(";"):
        _, *sources = directive.split()
        assert set(sources) <= {"'self'", "'none'", "data:"}, directive


async def offline_but_for(page: Page, base_url: str) -> list[str]:
    """Abort every request that is not to `base_url`'s host, as a machine with no internet
    would; the list returned fills with the URLs that were tried anyway."""
    local = urlsplit(base_url).netloc
    elsewhere: list[str] = []

    async def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc == local:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    await page.route("**/*", only_local)
    return elsewhere


@ON_FILE_BACKEND
async def test_docs_list_and_run_the_operations_offline(stack: Stack, page: Page) -> None:
    elsewhere = await offline_but_for(page, stack.gateway_url)
    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        spec = (await client.get("/openapi.json")).json()
    operations = [
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    ]
    assert len(operations) > 10

    response = await page.goto(stack.gateway_url + "/docs")
    assert response is not None
    assert response.headers["content-security-policy"] == DOCS_CONTENT_SECURITY_POLICY
    for method, path in operations:
        summary = page.locator(f".opblock-{method} .opblock-summary-path[data-path='{path}']")
        await expect(summary.first).to_be_visible()

    # "Try it out" on the index: the page may ask its own server.
    index = page.locator(".opblock-get", has=page.locator("[data-path='/v1']"))
    await index.locator(".opblock-summary").click()
    await index.get_by_role("button", name="Try it out").click()
    await index.get_by_role("button", name="Execute").click()
    answer = index.locator(".live-responses-table")
    await expect(answer.locator("tbody .response-col_status")).to_have_text("200")
    await expect(answer).to_contain_text('"docs": "/docs"')
    assert elsewhere == []
