"""What one app's endpoints share, and who is calling: the FastAPI dependencies of every router.

`create_app` puts one `Shared` on `app.state.shared`; an endpoint asks for it (or for the caller's
key) through the dependencies below instead of closing over the app's variables, so the
endpoints are module-level functions that can be imported, read and tested one at a time.

Who may call what (the rules the OpenAPI document states):
- a key of role ingest, review or admin (`needs(role)`), checked against the store's hashed keys
  and the serve config's `api_key` (named `config`, role admin);
- the public, without a key, rate limited per client address (`public`); a key lifts the limit;
- the reads (`caller`): anyone, but only a key of role review sees every item and field.
A wrong key counts against the client's public rate limit before it is refused, so sending one
never buys more calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from mltagger.serving.keys import (
    ADMIN,
    CONFIG_KEY_NAME,
    REVIEW,
    Key,
    digest,
    find_key,
    same_secret,
)
from mltagger.serving.limits import RateLimiter
from mltagger.serving.metrics import Metrics
from mltagger.serving.service import Tagger
from mltagger.serving.why import Explainer

SCHEME = "ApiKey"
PUBLIC_WRITER = "public"  # written_by of a wrong-tag report sent without a key


@dataclass
class Shared:
    """One app's state: the loaded model and store (`tagger`), its metrics, its settings."""

    tagger: Tagger
    metrics: Metrics
    limits: Any  # the `limits` section of conf/serve.yaml
    policy: str  # dedup.on_duplicate
    config_key: str | None = None  # the serve config's api_key, an admin key
    review: Any = None  # the `review` section of conf/serve.yaml (None: its defaults)
    public_limiter: RateLimiter = field(init=False)
    why: Explainer = field(init=False)  # GET /items/{id}/why and the review page's "why"

    def __post_init__(self) -> None:
        self.public_limiter = RateLimiter(
            float(self.limits.public_per_minute), int(self.limits.public_burst)
        )
        self.why = Explainer(float(self.limits.public_per_minute), int(self.limits.public_burst))

    @property
    def config_key_hash(self) -> str | None:
        """What a web session made with the config key is bound to (None: no such key)."""
        return digest(str(self.config_key)) if self.config_key else None

    @property
    def default_order(self) -> str:
        """The queue order when none is asked for (review.order)."""
        return str((self.review or {}).get("order") or "oldest")

    def review_queue(self, limit: int, offset: int, order: str | None = None) -> tuple:
        """A page of the review queue under this app's settings (review.max_age_hours,
        review.random_share): the one call the API and the review page both make."""
        settings = self.review or {}
        hours = settings.get("max_age_hours", 72)
        return self.tagger.store.review_queue(
            limit,
            offset,
            order or self.default_order,
            max_age=None if hours is None else timedelta(hours=float(hours)),
            random_share=float(settings.get("random_share", 0.1)),
        )

    def identify(self, secret: str) -> Key:
        """The key a secret belongs to; 401 when it is wrong or revoked."""
        if self.config_key and same_secret(secret, str(self.config_key)):
            return Key(CONFIG_KEY_NAME, ADMIN, digest(str(self.config_key)))
        key = find_key(self.tagger.store.engine, secret)
        if key is None:
            raise HTTPException(401, "wrong or revoked API key (header X-API-Key)")
        return key

    def limit(self, request: Request) -> None:
        """429 when this client has used up its keyless calls."""
        client = request.client.host if request.client else "unknown"
        too_many(
            self.public_limiter.allow(client),
            f"more than {self.limits.public_per_minute} calls a minute without a key from {client}",
        )


def shared(request: Request) -> Shared:
    """The dependency that hands an endpoint its app's state."""
    return request.app.state.shared


KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name=SCHEME,
    auto_error=False,
    description="an API key (`mltagger keys create`); its role decides what it may do",
)
# FastAPI reads dependencies from parameter defaults; made once here
KEY = Security(KEY_HEADER)


def needs(role: str):
    """The dependency of an endpoint that needs a key of `role` (or admin): 401 without a key
    or with a wrong one, 403 with a key of another role."""

    def check(request: Request, secret: str | None = KEY) -> Key:
        if not secret:
            raise HTTPException(
                401, f"missing API key (header X-API-Key): this needs a key with role {role}"
            )
        key = shared(request).identify(secret)
        if not key.allows(role):
            raise HTTPException(403, f"key {key.name!r} has role {key.role}, not {role}")
        return key

    return check


def caller(request: Request, secret: str | None = KEY) -> Key | None:
    """The key's owner, or None for the public (the reads' dependency: the public sees
    published items in their public fields)."""
    if not secret:
        return None
    state = shared(request)
    try:
        return state.identify(secret)
    except HTTPException:
        state.limit(request)
        raise


def public(request: Request, secret: str | None = KEY) -> Key | None:
    """A caller without a key is rate limited per client address; a key lifts the limit."""
    key = caller(request, secret)
    if key is None:
        shared(request).limit(request)
    return key


def sees_all(key: Key | None) -> bool:
    """Whether the caller reads every item in full (a key of role review or admin)."""
    return key is not None and key.allows(REVIEW)


def too_many(wait: float, message: str) -> None:
    """429 with Retry-After (whole seconds, at least 1) when a rate limiter says to wait."""
    if wait:
        raise HTTPException(429, message, headers={"Retry-After": str(max(1, math.ceil(wait)))})
