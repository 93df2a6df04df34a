"""ApiKeyVerifier against the real MongoDB-wire server: one read and one write per key and
period, however many requests, and a revocation seen once the period is over."""

from __future__ import annotations

import asyncio
import uuid

from shared.apikeys import API_KEYS_COLLECTION, ApiKeyCreate, ApiKeyStore, ApiKeyVerifier, Scope
from shared.mongo import mongo_client

TTL = 1.0


async def test_a_period_costs_one_write_and_a_revocation_shows_after_it(mongo_url: str) -> None:
    client = mongo_client(mongo_url)
    db = client[f"keys{uuid.uuid4().hex[:10]}"]
    try:
        store = ApiKeyStore(db)
        await store.ensure_indexes()
        created = await store.create(
            "u1", "u1@example.com", ApiKeyCreate(name="ci", scopes=[Scope.JOBS_READ])
        )
        verifier = ApiKeyVerifier(store, ttl=TTL)
        owner = await verifier.verify(created.key)
        assert owner is not None
        assert owner.user_id == "u1"
        assert owner.scopes == frozenset({Scope.JOBS_READ})
        first_use = (await db[API_KEYS_COLLECTION].find_one({"_id": created.id}) or {})[
            "last_used_at"
        ]
        assert first_use is not None
        for _ in range(50):
            assert await verifier.verify(created.key) == owner
        doc = await db[API_KEYS_COLLECTION].find_one({"_id": created.id})
        assert doc is not None
        assert doc["last_used_at"] == first_use  # coalesced: no write per request

        await store.revoke("u1", created.id)
        assert await verifier.verify(created.key) == owner  # remembered for the period
        await asyncio.sleep(TTL + 0.1)
        assert await verifier.verify(created.key) is None
        assert await verifier.verify("v2m_" + "x" * 200) is None
    finally:
        await client.drop_database(db.name)
        await client.close()
