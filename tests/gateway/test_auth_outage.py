"""With auth out, a gateway goes by the last account answer it had: an API key of an account it
saw disabled stays refused, and a key of an account it saw enabled keeps working."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from shared.accounts import ACCOUNT_CACHE_SECONDS
from tests.conftest import StackFactory
from tests.e2e.test_accounts import sign_up
from tests.e2e.test_api_keys import bearer, new_key
from tests.e2e.test_pipeline import auth
from tests.support.smtp import SmtpCatcher


async def test_a_disabled_accounts_key_stays_refused_while_auth_is_out(
    private_stack: StackFactory,
) -> None:
    boss = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    async with (
        SmtpCatcher() as smtp,
        private_stack(smtp.url, ADMIN_EMAILS=boss, NETWORK_TIMEOUT="5") as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        admin = await sign_up(client, boss)
        banned = await sign_up(client, f"banned-{uuid.uuid4().hex[:8]}@example.com")
        kept = await sign_up(client, f"kept-{uuid.uuid4().hex[:8]}@example.com")
        banned_key = await new_key(client, banned, ["jobs:read"])
        kept_key = await new_key(client, kept, ["jobs:read"])
        banned_id = (await client.get("/v1/auth/me", headers=auth(banned))).json()["id"]
        disabled = await client.patch(
            f"/v1/admin/users/{banned_id}", json={"disabled": True}, headers=auth(admin)
        )
        assert disabled.status_code == 200, disabled.text
        assert (await client.get("/v1/jobs", headers=bearer(banned_key))).status_code == 401
        assert (await client.get("/v1/jobs", headers=bearer(kept_key))).status_code == 200

        await asyncio.to_thread(stack.stop, "auth")
        await asyncio.sleep(ACCOUNT_CACHE_SECONDS + 0.5)  # past what the gateway remembers
        assert (await client.get("/v1/jobs", headers=bearer(banned_key))).status_code == 401
        assert (await client.get("/v1/jobs", headers=bearer(kept_key))).status_code == 200
