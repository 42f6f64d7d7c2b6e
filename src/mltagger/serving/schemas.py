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

Over 400 lines because every rule of the API document lives here once, as said above.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mltagger.data.links import HTTP_URL, MAX_URL_CHARS, is_http_url
from mltagger.data.text import (
    UNSTORABLE_CHARACTERS,
    blank_characters,
    clean_text,
    has_unstorable,
    has_visible,
)
from mltagger.models.rule import REASONS
from mltagger.serving.tables import ACTIVE

# ids are 32-bit integer columns on PostgreSQL; SQLite's are larger, but no id reaches this
MAX_ID = 2**31 - 1
MAX_OFFSET = 10**9
MAX_COMMENT_CHARS = 2000
MAX_NAME_CHARS = 200
STRICT = ConfigDict(regex_engine="python-re", extra="ignore", strict=True)


def _char_class(codepoints: Iterable[int]) -> str:
    """A regex class body for these code points, as ranges: BMP ones escaped (\\uXXXX), others
    written as themselves (Python's `re` and ECMA-262 in unicode mode read both)."""

    def one(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)

    points, out = sorted(set(codepoints)), []
    start = prev = points[0]
    for cp in [*points[1:], None]:
        if cp is not None and cp == prev + 1:
            prev = cp
            continue
        out.append(one(start) if start == prev else f"{one(start)}-{one(prev)}")
        if cp is not None:
            start = prev = cp
    return "".join(out)


# What a store cannot hold (data/text.py). Lone surrogates (no UTF-8 for them) never get this
# far: pydantic refuses them as invalid strings.
UNSTORABLE = tuple(map(ord, UNSTORABLE_CHARACTERS))
_SURROGATES = range(0xD800, 0xE000)
# What shows nothing once cleaned (`blank_characters`: whitespace, deleted characters, combining
# marks alone, and what NFKC makes into those). Spelled out code point by code point, not `\\s`:
# JSON Schema reads patterns as ECMA-262, whose `\\s` is another set, and a client must read the
# same rule the server applies. A test checks every code point against the cleaning.
BLANK = sorted(blank_characters().difference(_SURROGATES))
_NO_UNSTORABLE = f"[^{_char_class(UNSTORABLE)}]*"
# The rules as JSON Schema patterns: no unstorable character; and, for a title, one character
# that cleaning keeps. The server checks the same rules with messages people read.
STORABLE = f"^{_NO_UNSTORABLE}$"
NONBLANK = f"^{_NO_UNSTORABLE}[^{_char_class(BLANK)}]{_NO_UNSTORABLE}$"


def _cleaned(max_chars: int, *, visible: bool) -> AfterValidator:
    """Refuse unstorable characters; then clean the text as the model and the store will see it
    and check the rules on that (a raw length says little: NFKC makes U+FDFA 18 characters)."""

    def check(value: str) -> str:
        text, problem = checked_text(value, max_chars, visible=visible)
        if problem is not None:
            raise PydanticCustomError(*problem)
        return text

    return AfterValidator(check)


def checked_text(
    value: str, max_chars: int, *, visible: bool = False
) -> tuple[str, tuple[str, str] | None]:
    """(the cleaned text, what is wrong with it as (kind, message) or None): the one rule the
    API's schemas and the pages' forms both apply."""
    if has_unstorable(value):
        return "", ("unstorable", "holds U+0000 (NUL), which cannot be stored")
    text = clean_text(value)
    if visible and not has_visible(text):
        return text, ("blank", "is blank (it needs a visible character)")
    if len(text) > max_chars:
        return text, (
            "too_long_cleaned",
            f"has {len(text)} characters once cleaned (Unicode NFKC, invisible characters "
            f"removed), more than {max_chars}",
        )
    return text, None


def CleanText(max_chars: int, *, visible: bool = False, description: str = "") -> Any:
    """A text field: at most `max_chars` characters before and after cleaning, nothing
    unstorable, and (visible) a character cleaning keeps; the pattern states the last two."""
    rule = f"at most {max_chars} characters, also once cleaned (Unicode NFKC, invisible "
    rule += "characters removed); no U+0000"
    return Annotated[
        str,
        Field(
            max_length=max_chars,
            description=f"{description}; {rule}" if description else rule,
            json_schema_extra={"pattern": NONBLANK if visible else STORABLE},
        ),
        _cleaned(max_chars, visible=visible),
    ]


def _http_url(value: str) -> str:
    if not is_http_url(value):
        raise PydanticCustomError(
            "http_url",
            "is not an http(s) link to a host name in printable ASCII (no user name before the "
            "host; percent-encode other characters)",
        )
    return value


Url = Annotated[
    str,
    Field(
        max_length=MAX_URL_CHARS,
        description="where the content lives: an http(s) link to a host name or IPv4 address, "
        "in printable ASCII",
        json_schema_extra={"pattern": HTTP_URL},
    ),
    AfterValidator(_http_url),
]


def _integral(value: Any) -> Any:
    """JSON Schema counts 383.0 as an integer; strict pydantic does not. A float with no
    fraction is taken as the integer it is; anything else goes on to the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


ItemId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_integral)]
ReviewId = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(_integral)]

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
    secondary_tags: list[str] | None = None
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
    secondary_tags: list[str] | None = None
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
# The operations that run the model wait in the micro-batcher's queue (batching.*).
BUSY = {503: {**ERR, "description": "the model is busy (queue_timeout_ms); see Retry-After"}}
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
READ = {
    401: {**ERR, "description": "a key was sent and it is wrong or revoked"},
    403: {**ERR, "description": "what was asked for is not public: it needs a key of role review"},
    429: {
        **ERR,
        "description": "too many calls with a wrong key from this client; see Retry-After",
    },
}
# What the public sees of a stored item (GET /items without a key of role review): the content
# and its tag; never who stored it, the submitter's own tag, audit flags, a candidate model's
# answers or the ingest file it came from.
PUBLIC_ITEM_FIELDS = (
    "id", "title", "description", "url", "tag", "tagged_by", "model_version", "confidence",
    "needs_review", "status", "created_at", "updated_at",
)  # fmt: skip
# ... and of a wrong-tag report: which tag a reader proposed, never their comment or key.
PUBLIC_FEEDBACK_FIELDS = ("id", "item_id", "correct_tag", "previous_tag", "created_at")


def safe_url(url: str | None) -> str | None:
    """The link when it is an http(s) one; None for anything else (e.g. a `javascript:` link
    stored before links were checked), so no page or client is handed one."""
    return url if is_http_url(url) else None


def published(item: dict | None) -> bool:
    """Whether the public may know of this item at all: it exists and is published."""
    return item is not None and item.get("status") == ACTIVE


def public_item(item: dict) -> dict:
    out = {k: item.get(k) for k in PUBLIC_ITEM_FIELDS}
    out["url"] = safe_url(out["url"])
    return out


def public_feedback(report: dict) -> dict:
    return {k: report[k] for k in PUBLIC_FEEDBACK_FIELDS}


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
        title: CleanText(max_title_chars, visible=True, description="required")  # type: ignore[valid-type]
        description: CleanText(max_description_chars, description="may be empty") | None = ""  # type: ignore[valid-type]
        url: Url | None = None
        author_tag: Tag | None = Field(
            default=None,
            description="the tag the submitter chose, if any; stored beside the model's tag and "
            "used to estimate online precision",
        )

    class PredictIn(BaseModel):
        model_config = STRICT
        items: list[ItemIn] = Field(min_length=1, max_length=max_batch)

    class TagOut(BaseModel):
        tag: str  # as PredictionOut.tag
        confidence: float
        primary: bool

    class PredictionOut(BaseModel):
        model_config = OPEN
        tag: str  # the serving model's labels: a promote may add a tag while the app runs
        confidence: float
        tags: list[TagOut] = Field(
            default_factory=list,
            description="every tag applied: `tag` first (primary), then the secondary topics "
            "the model applied beside it (only beside an applied tag, at a threshold that "
            "reached precision 0.85 on cross-validation), each with its confidence",
        )
        needs_review: bool
        reason: Literal[REASONS] = Field(  # type: ignore[valid-type]
            description="classifier: the model's tag, applied; low_confidence: `other` and "
            "needs_review, the model was not sure; out_of_scope: `other` and needs_review, the "
            "out-of-scope gate says the item may be about none of the topics"
        )
        in_scope: float | None = Field(
            default=None,
            description="the out-of-scope gate's probability that the item is about one of the "
            "topics (absent when the model has no gate)",
        )
        scores: dict[str, float]
        model_version: str
        duplicate: DuplicateOut | None = None

    class PredictOut(BaseModel):
        items: list[PredictionOut]

    class FeedbackIn(BaseModel):
        model_config = STRICT
        item_id: ItemId
        correct_tag: Tag
        comment: CleanText(MAX_COMMENT_CHARS) | None = None  # type: ignore[valid-type]
        secondary_tags: list[Tag] | None = Field(
            default=None, max_length=len(tags), description="topics that also apply (optional)"
        )

    class ReviewIn(BaseModel):
        model_config = STRICT
        tag: Tag
        secondary_tags: list[Tag] | None = Field(
            default=None,
            max_length=len(tags),
            description="topics that also apply, beside `tag` (replaces the item's; [] removes "
            "them; absent keeps them); `tag` itself and duplicates are dropped",
        )
        reviewer: CleanText(MAX_NAME_CHARS) | None = Field(  # type: ignore[valid-type]
            default=None,
            deprecated=True,
            description="ignored: a decision is recorded under the name of the key that sent it",
        )
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
