"""Request and response bodies of the gateway's own endpoints (OpenAPI documents them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RegisterRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    invite: str | None = Field(
        default=None, max_length=256, description="from an admin, when REGISTRATION=invite"
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=1024)


class JobPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class ApiIndex(BaseModel):
    """`GET /v1`: where a person or a script starting from the API's URL goes next."""

    name: str = Field(examples=["video2mp3"])
    version: str = Field(description="of the server software", examples=["0.1.0"])
    docs: str = Field(description="interactive API documentation", examples=["/docs"])
    openapi: str = Field(description="the OpenAPI document", examples=["/openapi.json"])
    web: str = Field(description="the web page", examples=["/"])
