"""What every page shares: the settings and the signing secret (`Pages`, on `app.state.pages`),
the templates, the login form a page falls back to, and the small parsers of form values.

The page routers (`queue.py`, `login.py`, `wrong_tag.py`, `health.py`) are module-level and reach
this state through the `pages` dependency, as the JSON endpoints reach theirs through
`mltagger.serving.access.shared`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from mltagger.serving.access import Shared
from mltagger.serving.limits import RateLimiter
from mltagger.serving.schemas import MAX_ID, safe_url
from mltagger.serving.sessions import Session, find_session, form_token, shared_secret
from mltagger.serving.store import Store

HERE = Path(__file__).parent
SESSION_COOKIE = "mltagger_session"
CSRF_COOKIE = "mltagger_csrf"
# Every page: only this site's own scripts, styles and forms; never inside another site's frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
REASONS = {
    "low_confidence": "the model was not sure enough to apply a tag",
    "out_of_scope": "the out-of-scope gate says it may be about none of the six topics",
    "audit": "audit sample: an automatically applied tag, checked at random",
    "near_duplicate": "held as a likely duplicate of another item",
    "reported": "a reader reported the tag as wrong",
}


def environment() -> jinja2.Environment:
    """The templates, with a misspelt name failing the page loudly."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x: "—" if x is None else f"{x:.1%}"
    env.filters["when"] = when
    env.filters["link"] = safe_url  # only http(s) links become links on a page
    return env


@dataclass
class Pages:
    """The pages' state: the app's shared state, the `ui` settings of conf/serve.yaml, the
    form-signing secret, the login limiter and the templates."""

    shared: Shared
    ui: Mapping[str, Any]
    env: jinja2.Environment = field(default_factory=environment)
    secret: bytes = field(init=False)
    login_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.secret = shared_secret(self.store.engine)
        self.login_limiter = RateLimiter(
            float(self.ui.get("login_per_minute", 10)), int(self.ui.get("login_burst", 5))
        )

    @property
    def store(self) -> Store:
        return self.shared.tagger.store

    @property
    def tags(self) -> list[str]:
        return list(self.shared.tagger.predictor.inference.approved_tags)

    @property
    def fallback(self) -> str:
        """The tag of "not ML / spam" (other)."""
        return self.shared.tagger.predictor.inference.fallback_tag

    @property
    def minutes(self) -> float:
        return float(self.ui.get("session_minutes", 480))

    @property
    def secure(self) -> bool:
        return bool(self.ui.get("secure_cookies", True))

    @property
    def target(self) -> float:
        return float(self.ui.get("precision_target", 0.85))

    def session_of(self, request: Request) -> Session | None:
        return find_session(
            self.store.engine, request.cookies.get(SESSION_COOKIE), self.shared.config_key_hash
        )

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        context.setdefault("csrf", "")
        context.setdefault("default_order", self.shared.default_order)
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def with_form_cookie(
        self, request: Request, build: Callable[[str], HTMLResponse]
    ) -> HTMLResponse:
        """A page with a pre-login form: the CSRF cookie (made when missing) and its token."""
        value = request.cookies.get(CSRF_COOKIE)
        fresh = not value
        if fresh:
            value = secrets.token_urlsafe(32)
        response = build(form_token(self.secret, value))
        if fresh:
            response.set_cookie(
                CSRF_COOKIE, value, httponly=True, secure=self.secure, samesite="lax", path="/ui"
            )
        return response

    def login_page(
        self,
        request: Request,
        status: int = 200,
        *,
        error: str = "",
        next_url: str = "/ui/review",
        pending: Mapping[str, str] | None = None,
        fragment: bool = False,
    ) -> HTMLResponse:
        """The login form (a fragment for htmx), carrying a decision made after the session
        ended (`pending`) so that it can be confirmed after logging in."""
        return self.with_form_cookie(
            request,
            lambda token: self.render(
                "_login.html" if fragment else "login.html",
                status,
                title="Log in",
                csrf=token,
                error=error,
                next_url=next_url,
                pending=dict(pending or {}),
                pending_text=describe_pending(pending),
                insecure=self.secure and is_plain_http_elsewhere(request),
            ),
        )

    def refuse(
        self, request: Request, message: str, status: int, session: Session | None = None
    ) -> HTMLResponse:
        if is_htmx(request):
            return self.render("_message.html", status, message=message, kind="error")
        return self.render(
            "message.html", status, title="Refused", message=message, session=session,
            csrf=session.csrf if session else "",
        )  # fmt: skip


def pages(request: Request) -> Pages:
    """The dependency that hands a page its app's page state."""
    return request.app.state.pages


async def form_of(request: Request) -> dict[str, str]:
    """The posted form. Read on the event loop; the rest of each write runs in the thread pool,
    as FastAPI runs the JSON endpoints, so a store write never stalls the loop (SQLite may wait
    up to its busy timeout for the write lock). A field sent more than once (the review card's
    "also about" boxes) comes as its values joined by commas."""
    form = await request.form()
    return {k: ",".join(str(v) for v in form.getlist(k)) for k in form}


def describe_pending(pending: Mapping[str, str] | None) -> str:
    if not pending or not pending.get("item"):
        return ""
    decision = str(pending.get("decision", ""))
    what = {
        "reject": "not ML / spam",
        "duplicate": "a duplicate"
        + (f" of item {pending['duplicate_of']}" if pending.get("duplicate_of") else ""),
    }.get(decision, decision.removeprefix("tag:"))
    return f"item {pending['item']}: {what}"


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def when(stamp: str | None) -> str:
    if not stamp:
        return "—"
    t = datetime.fromisoformat(stamp)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def as_int(value: Any, low: int = 0, high: int = MAX_ID) -> int | None:
    """A form or query value as an integer in [low, high]; None when it is not one."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def is_plain_http_elsewhere(request: Request) -> bool:
    """Secure cookies over plain HTTP reach only localhost: elsewhere a login cannot stick."""
    if request.url.scheme == "https":
        return False
    host = request.url.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
