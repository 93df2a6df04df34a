"""`video2mp3 serve NAME`: one service in this process, under uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    # Only for the annotation: `up` imports this module for `service_port` and needs no FastAPI.
    from fastapi import FastAPI


def create_service_app(name: str, settings: Settings) -> FastAPI:
    # Imported lazily so that each process loads only its own service.
    if name == "gateway":
        from services.gateway.app import create_app as gateway

        return gateway(settings)
    if name == "auth":
        from services.auth.app import create_app as auth

        return auth(settings)
    if name == "converter":
        from services.converter.app import create_app as converter

        return converter(settings)
    if name == "notification":
        from services.notification.app import create_app as notification

        return notification(settings)
    raise ValueError(f"unknown service {name!r}")


def service_port(name: str, settings: Settings) -> int:
    ports = {
        "gateway": settings.gateway_port,
        "auth": settings.auth_port,
        "notification": settings.notification_port,
        "converter": settings.converter_port,
    }
    return ports[name]


def serve(name: str, port: int | None = None, host: str | None = None) -> int:
    import uvicorn

    from shared.logs import setup_logging
    from shared.server_protocol import ServerProtocol
    from shared.tracing import setup_tracing, shutdown_tracing

    settings = get_settings()
    setup_logging(name, settings.log_level, settings.log_json)
    setup_tracing(name)
    app = create_service_app(name, settings)
    config = uvicorn.Config(
        app,
        host=host or settings.bind_host,
        port=port or service_port(name, settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        http=ServerProtocol,
        timeout_graceful_shutdown=35,
        limit_concurrency=settings.max_connections,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        shutdown_tracing()
    return 0 if server.started else 1
