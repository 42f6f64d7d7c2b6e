"""The tag list endpoints' request and response models (apart from `schemas.py`, which is at
its length limit). Every rule the server applies to a tag name is stated here, so the OpenAPI
document says what a 422 means before anyone gets one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mltagger.models.tag_rule import MAX_TAG_CHARS, TAG_NAME, TAG_STATUSES
from mltagger.serving.schemas import ERR, STRICT, CleanText

MAX_TAG_DESCRIPTION = 500
OPEN = ConfigDict(extra="allow")


class TagIn(BaseModel):
    model_config = STRICT
    name: str = Field(
        min_length=1,
        max_length=MAX_TAG_CHARS,
        pattern=TAG_NAME.pattern,
        description="lowercase kebab-case (a-z, 0-9, single hyphens between words)",
    )
    description: CleanText(MAX_TAG_DESCRIPTION, description="what the tag covers") | None = None  # type: ignore[valid-type]


class TagOut(BaseModel):
    model_config = OPEN
    name: str
    status: str = Field(description=f"one of {', '.join(TAG_STATUSES)}")
    description: str | None = None
    created_by: str
    created_at: str
    updated_by: str
    updated_at: str


class TagListOut(BaseModel):
    tags: list[TagOut]
    serving_model: str
    serving_labels: list[str] = Field(description="what the service answers now")


class RemovedOut(BaseModel):
    name: str
    removed: bool
    status: str = Field(description="the status the tag had")


class TagEventOut(BaseModel):
    model_config = OPEN
    id: int
    tag: str
    action: str
    actor: str
    at: str
    detail: dict[str, Any] | None = None


class HistoryOut(BaseModel):
    events: list[TagEventOut]


class ProposalOut(BaseModel):
    model_config = OPEN
    id: int
    name: str
    keywords: list[str]
    size: int
    growth: float
    examples: list[dict[str, Any]]
    window: dict[str, Any]
    status: str
    created_at: str
    decided_by: str | None = None
    decided_at: str | None = None


class ProposalsOut(BaseModel):
    proposals: list[ProposalOut]


CONFLICT = {409: {**ERR, "description": "the change conflicts with the list; nothing changed"}}
UNKNOWN_TAG = {404: {**ERR, "description": "no such tag (or proposal) in the list"}}
