"""The notification service: consumes finished jobs, mails their owners, lists notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from services.notification.mailer import SmtpMailer
from services.notification.routes import router
from services.notification.service import LinkConfig, NotificationService
from services.notification.state import NotificationState
from services.notification.store import NotificationStore
from services.notification.webhooks import Dispatcher, consume_webhook_events
from services.notification.worker import REQUEUE_DELAY, consume_notifications
from shared.apidocs import install_docs
from shared.apikeys import ApiKeyStore, ApiKeyVerifier
from shared.errors import ErrorCode, Unavailable
from shared.http import install_error_handlers, install_operations
from shared.jobstore import JobStore
from shared.messaging import connect
from shared.mongo import mongo_client
from shared.outbound import Guard
from shared.security import install_security
from shared.settings import Settings, get_settings
from shared.tokens import JwksCache
from shared.topology import Topology
from shared.webhooks import WebhookStore


def require_smtp_url(settings: Settings) -> str:
    if not settings.smtp_url:
        raise RuntimeError("SMTP_URL is not set (video2mp3 up starts an embedded mail sink)")
    return settings.smtp_url


def create_app(
    settings: Settings | None = None, *, requeue_delay: float = REQUEUE_DELAY
) -> FastAPI:
    settings = settings or get_settings()
    smtp_url = require_smtp_url(settings)
    mongo_url = settings.require_mongo_url()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The exit stack closes everything in reverse order of opening, also when start-up
        # fails half-way.
        async with AsyncExitStack() as stack:
            mongo = mongo_client(mongo_url, settings.network_timeout)
            stack.push_async_callback(mongo.close)
            store = NotificationStore(mongo[settings.mongo_db])
            await store.ensure_indexes()
            service = NotificationService(
                store,
                SmtpMailer(smtp_url, settings.network_timeout),
                LinkConfig.from_settings(settings),
                settings.mail_from,
            )
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=settings.network_timeout)
            )
            # The gateway checked the key's scope; this service only learns whose key it is.
            api_keys = ApiKeyVerifier(ApiKeyStore(mongo[settings.mongo_db]))
            tokens = JwksCache(
                http,
                settings.auth_url_list,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )
            amqp = await connect(settings.amqp_url, "notification", settings.network_timeout)
            stack.push_async_callback(amqp.close)
            consumer = await consume_notifications(
                amqp,
                Topology(settings.amqp_prefix),
                service,
                delay=requeue_delay,
                retry_window=settings.smtp_retry_window,
            )
            stack.push_async_callback(consumer.stop)
            hooks = WebhookStore(mongo[settings.mongo_db])
            await hooks.ensure_indexes()
            dispatcher = Dispatcher(
                hooks,
                service,
                Guard.from_settings(settings.outbound_allow_nets, settings.network_timeout),
                window=settings.webhook_retry_window,
            )
            dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
            webhook_consumer = await consume_webhook_events(
                amqp,
                Topology(settings.amqp_prefix),
                hooks,
                JobStore(mongo[settings.mongo_db]),
                dispatcher,
            )
            stack.push_async_callback(webhook_consumer.stop)
            app.state.notification = NotificationState(
                settings=settings,
                mongo=mongo,
                store=store,
                service=service,
                http=http,
                tokens=tokens,
                api_keys=api_keys,
                amqp=amqp,
                consumer=consumer,
            )
            yield

    app = FastAPI(
        title="video2mp3 notification",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)

    def state() -> NotificationState:
        current: NotificationState = app.state.notification
        return current

    async def mongo_ready() -> None:
        await state().store.ping()

    async def amqp_ready() -> None:
        amqp = state().amqp
        # A robust connection that lost the broker is not closed, it is reconnecting; it has no
        # live transport meanwhile.
        transport = amqp.transport
        if amqp.is_closed or transport is None or transport.connection.is_closed:
            raise Unavailable("no broker connection", code=ErrorCode.BROKER_UNAVAILABLE)

    install_operations(app, {"mongo": mongo_ready, "amqp": amqp_ready}, service="notification")
    install_security(app)
    app.include_router(router)
    return app
