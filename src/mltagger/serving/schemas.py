"""The API's request and response models, built for one service's tags and limits.

Why built per app: the OpenAPI document must state every rule the server enforces (the approved
tags as an enum, the title and description lengths, the batch size, id and paging ranges), and
those come from the model folder and `conf/serve.yaml`. Every rule lives here, once, as a field
constraint: the server enforces exactly what the document says, so a client (or Schemathesis)
generating requests from the document never meets a rule it could not see.

Request bodies are strict: JSON `0` is not `false` and `"3"` is not `3`, as the document says
(an integral float such as `383.0` is an integer in JSON Schema, and is taken as one).

No `from __future__ import annotations` here: the models are defined inside a function, and
pydantic must see their annotations as objects, not strings.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

# A title must hold a character that text cleaning keeps: not whitespace (Python's `str.isspace`,
# which `clean_text` collapses), not the invisible characters it removes. Spelled out, not `\s`:
# JSON Schema reads patterns as ECMA-262, whose `\s` is another set (no U+001C-U+001F or U+0085),
# and a client must read the same rule the server applies. A test checks every code point.
NONBLANK = (
    r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f"
    r"\u3000\ufeff\u00ad]"
)
# ids are 32-bit integer columns on PostgreSQL; SQLite's are larger, but no id reaches this
MAX_ID = 2**31 - 1
MAX_OFFSET = 10**9
MAX_URL_CHARS = 2048
MAX_COMMENT_CHARS = 2000
MAX_NAME_CHARS = 200
STRICT = ConfigDict(regex_engine="python-re", extra="ignore", strict=True)
_VISIBLE = re.compile(NONBLANK)


def _nonblank(value: str) -> str:
    if not _VISIBLE.search(value):
        raise PydanticCustomError("blank", "is blank (it needs a visible character)")
    return value


def _integral(value: Any) -> Any:
    """JSON Schema counts 383.0 as an integer; strict pydantic does not. A float with no
    fraction is taken as the integer it is; anything else goes on to the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


ItemId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_integral)]
ReviewId = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_integral)]

# The rule stated as a JSON Schema pattern, checked with the message people read.
Visible = Annotated[str, AfterValidator(_nonblank), Field(json_schema_extra={"pattern": NONBLANK})]
OPEN = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    """Every error answer: one line in `detail`; for 422 the first problems in `errors`; for a
    409 on POST /items the item it repeats; for a 409 on POST /review/{id} the decision made
    meanwhile (`decided`)."""

    model_config = OPEN
    detail: str = Field(description="what is wrong, in one line")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="422 only: each problem's location (loc), message and type"
    )
    duplicate_of: int | None = Field(default=None, description="409 on POST /items only")
    kind: str | None = None
    how: str | None = None
    similarity: float | None = None


class DuplicateOut(BaseModel):
    model_config = OPEN
    kind: Literal["exact", "near"]
    similarity: float
    item_id: int | None = None
    batch_index: int | None = None
    how: str | None = None


class ItemOut(BaseModel):
    """A stored item. Tags read from the store are plain strings: a store may hold tags of an
    older tag set, and an answer must never fail on history."""

    model_config = OPEN
    id: int
    title: str
    description: str
    url: str | None = None
    tag: str
    tagged_by: str
    model_version: str | None = None
    confidence: float | None = None
    reason: str | None = None
    scores: dict[str, float] | None = None
    needs_review: bool
    status: str
    duplicate_of: int | None = None
    author_tag: str | None = None
    model_tag: str | None = None
    audit: bool | None = None
    written_by: str | None = None
    created_at: str
    updated_at: str


class FeedbackOut(BaseModel):
    model_config = OPEN
    id: int
    item_id: int
    correct_tag: str
    previous_tag: str
    comment: str | None = None
    written_by: str | None = None
    created_at: str


class ItemWithFeedback(ItemOut):
    feedback: list[FeedbackOut]


class Page(BaseModel):
    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class AddOut(BaseModel):
    item: ItemOut
    duplicate: DuplicateOut | None = None


# What each operation may answer besides its success, all in the ErrorOut shape.
ERR = {"model": ErrorOut}
BODY_ERRORS = {
    400: {**ERR, "description": "the body could not be read (e.g. not UTF-8)"},
    413: {**ERR, "description": "the body is larger than limits.max_body_bytes"},
}
INVALID = {422: {**ERR, "description": "a field breaks a rule stated in this document"}}
NOT_FOUND = {404: {**ERR, "description": "no item with that id"}}
KEYED = {
    401: {**ERR, "description": "no key, or a wrong or revoked one (header X-API-Key)"},
    403: {**ERR, "description": "the key's role does not allow this"},
}
PUBLIC = {
    401: {**ERR, "description": "a key was sent and it is wrong or revoked"},
    429: {**ERR, "description": "too many calls without a key from this client; see Retry-After"},
}


def links() -> dict:
    """OpenAPI links from a stored item to what can be done with it: clients (and the stateful
    phase of Schemathesis) follow them; FastAPI emits none by itself."""
    item = "$response.body#/item/id"
    return {
        "GetItem": {"operationId": "get_item", "parameters": {"item_id": item}},
        "ReportWrongTag": {"operationId": "add_feedback", "requestBody": {"item_id": item}},
        "ReviewItem": {"operationId": "review_item", "parameters": {"item_id": item}},
    }


@dataclass(frozen=True)
class Schemas:
    """The request models (and the tag-typed answer of /predict) of one app."""

    item_in: type[BaseModel]
    predict_in: type[BaseModel]
    predict_out: type[BaseModel]
    feedback_in: type[BaseModel]
    review_in: type[BaseModel]
    tag: Any  # the Literal of approved tags
    status: Any  # the Literal of item statuses


def build_schemas(
    tags: list[str],
    statuses: tuple[str, ...],
    max_batch: int,
    max_title_chars: int,
    max_description_chars: int,
) -> Schemas:
    """Request models whose constraints are this service's rules (see the module docstring)."""
    Tag = Literal[tuple(tags)]
    Status = Literal[tuple(statuses)]

    class ItemIn(BaseModel):
        """One piece of content. Unknown fields (e.g. an upstream id) are ignored."""

        model_config = STRICT
        title: Visible = Field(
            min_length=1,
            max_length=max_title_chars,
            description="required; must hold a visible character",
        )
        description: str | None = Field(
            default="", max_length=max_description_chars, description="may be empty"
        )
        url: str | None = Field(
            default=None, max_length=MAX_URL_CHARS, description="where the content lives"
        )
        author_tag: Tag | None = Field(
            default=None,
            description="the tag the submitter chose, if any; stored beside the model's tag and "
            "used to estimate online precision",
        )

    class PredictIn(BaseModel):
        model_config = STRICT
        items: list[ItemIn] = Field(min_length=1, max_length=max_batch)

    class PredictionOut(BaseModel):
        model_config = OPEN
        tag: Tag
        confidence: float
        needs_review: bool
        reason: str
        scores: dict[str, float]
        model_version: str
        duplicate: DuplicateOut | None = None

    class PredictOut(BaseModel):
        items: list[PredictionOut]

    class FeedbackIn(BaseModel):
        model_config = STRICT
        item_id: ItemId
        correct_tag: Tag
        comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)

    class ReviewIn(BaseModel):
        model_config = STRICT
        tag: Tag
        reviewer: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
        duplicate: bool | None = Field(
            default=None,
            description="for an item held as a likely duplicate (status `duplicate`): true keeps "
            "it out of what is published, false publishes it (status `active`); without it such "
            "an item answers 409",
        )
        seen_review: ReviewId | None = Field(
            default=None,
            description="the id of the item's latest review when you looked (`last_review` in "
            "GET /review; 0: none): if someone decided the item since, nothing is stored and "
            "the answer is 409 with their decision",
        )

    return Schemas(ItemIn, PredictIn, PredictOut, FeedbackIn, ReviewIn, Tag, Status)


def validation_message(err: RequestValidationError) -> str:
    """The first problems of a request FastAPI refused, in one line (the 422 `detail`)."""
    parts = []
    for e in err.errors()[:5]:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            parts.append(f"malformed JSON at character {e['loc'][-1]}: {reason}".rstrip(": "))
            continue
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def validation_errors(err: RequestValidationError) -> list[dict]:
    """The first problems, as plain JSON (pydantic's own entries may carry exception objects)."""
    return [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in err.errors()[:20]
    ]
