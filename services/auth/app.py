"""The auth service's FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.auth.keys import load_signing_key
from services.auth.passwords import common_passwords
from services.auth.routes import admin, internal, router, well_known
from services.auth.state import AuthState, ensure_sqlite_directory
from shared.apidocs import install_docs
from shared.http import install_error_handlers, install_operations
from shared.security import install_security
from shared.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    # File work happens here, before the event loop serves anything.
    ensure_sqlite_directory(settings.resolved_database_url)
    common_passwords()
    state = AuthState(settings, load_signing_key(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AuthState]]:
        await state.open()
        try:
            yield {"auth": state}
        finally:
            await state.close()

    app = FastAPI(
        title="video2mp3 auth", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    install_error_handlers(app)
    install_docs(app)

    install_operations(app, {"database": state.ping_database}, service="auth")
    # No CORS: browsers reach auth only through the gateway.
    install_security(app)
    app.include_router(router)
    app.include_router(well_known)
    app.include_router(admin)
    app.include_router(internal)
    return app
