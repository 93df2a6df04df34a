"""A live stack (the four services as processes, `file` blob backend) for the API fuzzing test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.amqp import delete_topology
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack, running_stack

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpCatcher]:
    catcher = SmtpCatcher()
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture(scope="session")
async def stack(
    mongo_url: str, amqp_url: str, smtp: SmtpCatcher, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    var_dir: Path = tmp_path_factory.mktemp("security-stack")
    prefix = f"test-sec-{tag}"
    env = {
        "AMQP_URL": amqp_url,
        "AMQP_PREFIX": prefix,
        "MONGO_URL": mongo_url,
        "MONGO_DB": f"sec{tag}",
        # DATABASE_URL unset: auth keeps its users in SQLite under VAR_DIR.
        "SMTP_URL": smtp.url,
        "BLOB_STORE": "file",
        "VAR_DIR": str(var_dir),
        "MAX_UPLOAD_BYTES": str(10 * 1024 * 1024),
        "LOG_LEVEL": "WARNING",
    }
    with running_stack(env, var_dir / "logs") as running:
        yield running
    await delete_topology(amqp_url, prefix)


@pytest.fixture(scope="session")
def bearer(stack: Stack) -> str:
    """The Authorization header of a real, registered and logged-in user."""
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        response = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        response = client.post("/v1/auth/login", data={"username": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return f"Bearer {response.json()['access_token']}"
