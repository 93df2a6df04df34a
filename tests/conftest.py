"""Fixtures that start (or find) the real dependencies once per session.

RabbitMQ and MariaDB must already run (`.ci/run` starts them); the MongoDB-wire server
(nx-27017) is started here unless MONGO_URL points at a real MongoDB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from services.cli.embedded import nx_27017_command
from shared.media import MediaPool
from shared.settings import Settings
from tests.support.amqp import delete_topology
from tests.support.media import MediaFactory
from tests.support.net import free_port, wait_for_port
from tests.support.stack import Stack, running_stack

REPO = Path(__file__).resolve().parent.parent
# The real media beside the repository (../shared/media); CI may clone elsewhere, hence the
# override and the workplace's own location.
SHARED_MEDIA = next(
    (
        p
        for p in (
            Path(os.environ.get("VIDEO2MP3_SHARED_MEDIA", REPO.parent / "shared" / "media")),
            REPO.parent / "shared" / "media",
            Path("/work/shared/media"),
        )
        if p.is_dir()
    ),
    REPO.parent / "shared" / "media",
)
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306")


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("MONGO_URL"):
        yield os.environ["MONGO_URL"]
        return
    data = tmp_path_factory.mktemp("mongo")
    port = free_port()
    proc = subprocess.Popen(
        nx_27017_command(data, port),
        stdout=subprocess.DEVNULL,
        stderr=(data / "stderr.log").open("wb"),
    )
    try:
        wait_for_port(port)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
def settings_factory(mongo_url: str, amqp_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated per test: own MongoDB database, own AMQP names, own VAR_DIR."""
    tag = uuid.uuid4().hex[:10]

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "amqp_url": amqp_url,
            "amqp_prefix": f"test-{tag}",
            "mongo_url": mongo_url,
            "mongo_db": f"t{tag}",
            "var_dir": tmp_path / "var",
            "link_secret": "test-link-secret",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFactory:
    """Generated clips (FFmpeg lavfi sources), made once per session and cached."""
    return MediaFactory(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.fail(f"real test media missing: {SHARED_MEDIA}")
    return SHARED_MEDIA


def pytest_report_header() -> list[str]:
    return [f"ffmpeg: {shutil.which('ffmpeg') or 'imageio-ffmpeg'}; amqp: {AMQP_URL}"]


StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def private_stack(mongo_url: str, amqp_url: str, tmp_path: Path) -> StackFactory:
    @asynccontextmanager
    async def make(smtp_url: str, **overrides: str) -> AsyncIterator[Stack]:
        tag = uuid.uuid4().hex[:10]
        prefix = f"test-fault-{tag}"
        env = {
            "AMQP_URL": amqp_url,
            "AMQP_PREFIX": prefix,
            "MONGO_URL": mongo_url,
            "MONGO_DB": f"fault{tag}",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
            "SMTP_URL": smtp_url,
            "BLOB_STORE": "file",
            "VAR_DIR": str(tmp_path / "var"),
            "NETWORK_TIMEOUT": "3",
            **overrides,
        }
        try:
            with running_stack(env, tmp_path / "logs") as stack:
                yield stack
        finally:
            await delete_topology(amqp_url, prefix)

    return make


@pytest.fixture
def libav() -> Iterator[MediaPool]:
    """A pool of libav processes, as an app's lifespan opens one."""
    pool = MediaPool()
    yield pool
    pool.close()
