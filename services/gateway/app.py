"""The gateway: public REST + WebSocket API in front of auth, MongoDB, the blob store and
RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway import (
    routes,
    routes_admin,
    routes_auth,
    routes_index,
    routes_keys,
    routes_live,
    routes_webhooks,
    tus_routes,
)
from services.gateway.balancer import Balancer
from services.gateway.live import LIVE_EVENT_TYPES, LIVE_EVENTS, LiveHub
from services.gateway.state import GatewayState
from services.gateway.tickets import TicketStore
from shared.accounts import AccountDirectory
from shared.aio import keep
from shared.apidocs import install_docs
from shared.apikeys import ApiKeyStore, ApiKeyVerifier
from shared.blobstore import open_blob_store
from shared.errors import ErrorCode
from shared.http import install_error_handlers, install_operations
from shared.jobstore import JobStore, QuotaStore
from shared.media import MediaPool
from shared.messaging import (
    EventPublisher,
    bind_private_queue,
    connect,
    consume,
    open_consumer_channel,
)
from shared.mongo import mongo_client
from shared.security import install_security
from shared.settings import Settings
from shared.tokens import JwksCache
from shared.topology import Topology

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = settings.network_timeout
        mongo = mongo_client(settings.require_mongo_url(), timeout)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        amqp = await connect(settings.amqp_url, "gateway", timeout)
        libav = MediaPool()
        # Every upload is probed: a process started beside the connections spares the first
        # uploads Python's and PyAV's start (0.6 s).
        warming = asyncio.ensure_future(asyncio.to_thread(libav.warm, 1))
        keep(warming, "starting a libav process")
        try:
            db = mongo[settings.mongo_db]
            jobs = JobStore(db)
            await jobs.ensure_indexes()
            quotas = QuotaStore(db)
            await quotas.ensure_indexes()
            key_store = ApiKeyStore(db)
            await key_store.ensure_indexes()
            topology = Topology(settings.amqp_prefix)
            publisher = await EventPublisher.open(amqp, topology, timeout)
            live = LiveHub()
            channel = await open_consumer_channel(amqp, topology, prefetch=500)
            live_queue = await bind_private_queue(channel, topology, LIVE_EVENT_TYPES)
            await consume(channel, live_queue.name, live.deliver, LIVE_EVENTS)
            app.state.gateway = GatewayState(
                settings=settings,
                mongo=mongo,
                jobs=jobs,
                quotas=quotas,
                tickets=TicketStore(db),
                blobs=open_blob_store(settings, db),
                amqp=amqp,
                publisher=publisher,
                http=http,
                auth=Balancer(http, settings.auth_url_list, "auth", ErrorCode.AUTH_UNAVAILABLE),
                notifications=Balancer(
                    http,
                    settings.notification_url_list,
                    "notification",
                    ErrorCode.SERVICE_UNAVAILABLE,
                ),
                tokens=JwksCache(
                    http,
                    settings.auth_url_list,
                    issuer=settings.jwt_issuer,
                    audience=settings.jwt_audience,
                ),
                live=live,
                accounts=AccountDirectory(http, settings.auth_url_list),
                key_store=key_store,
                api_keys=ApiKeyVerifier(key_store),
                libav=libav,
            )
            yield
        finally:
            await amqp.close()
            await http.aclose()
            await mongo.close()
            await asyncio.wait({warming})  # else its process could start after the close
            await asyncio.to_thread(libav.close)

    app = FastAPI(
        title="video2mp3",
        version="1.0",
        summary="Upload a video, get an MP3.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_docs(app)

    async def mongo_ready() -> None:
        await app.state.gateway.jobs.ping()

    async def broker_ready() -> None:
        if app.state.gateway.amqp.is_closed:
            raise ConnectionError("AMQP connection closed")

    async def blobs_ready() -> None:
        await app.state.gateway.blobs.check()

    install_operations(
        app,
        {"mongodb": mongo_ready, "rabbitmq": broker_ready, "blobs": blobs_ready},
        service="gateway",
    )
    install_security(app, cors_origins=settings.cors_origin_list)
    app.include_router(routes_index.router)
    app.include_router(routes_auth.router)
    app.include_router(routes_admin.router)
    app.include_router(routes.router)
    app.include_router(routes_live.router)
    app.include_router(tus_routes.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_webhooks.router)
    # The single-page frontend; mounted last so that the API routes take precedence.
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
