"""Request and response bodies of the gateway's own endpoints (OpenAPI documents them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RegisterRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=1024)


class JobPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
