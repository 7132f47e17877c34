"""HTTP request and response bodies of the v1 template endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from schemas.http import Body


class TemplateContentIn(Body):
    """One immutable version of a template; ``variables`` declares what it uses."""

    subject: str = Field(min_length=1, max_length=998)
    message_body: str | None = Field(default=None, min_length=1, max_length=200_000)
    html_body: str | None = Field(default=None, max_length=500_000)
    text_body: str | None = Field(default=None, max_length=200_000)
    variables: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=100, description="declared variables; detected when absent"
    )


class TemplateIn(TemplateContentIn):
    name: str = Field(min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=60)


class TemplatePatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=60)


class TemplateVersionOut(BaseModel):
    version: int
    subject: str
    message_body: str | None
    html_body: str | None
    text_body: str | None
    variables: list[str]
    created_at: datetime


class TemplateOut(BaseModel):
    id: uuid.UUID
    sponsor_id: str
    name: str
    category: str | None
    latest_version: int
    created_at: datetime
    updated_at: datetime
    latest: TemplateVersionOut | None = None
