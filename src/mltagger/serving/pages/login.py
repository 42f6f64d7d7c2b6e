"""Logging in to the pages with an API key of role review (a session cookie bound to that key)
and out again. A decision carried through the login form is shown again for confirmation,
never applied by the login itself: it may have been posted by another site.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mltagger.serving.keys import REVIEW
from mltagger.serving.pages.queue import PENDING
from mltagger.serving.pages.rendering import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Pages,
    as_int,
    client,
    describe_pending,
    form_of,
    pages,
)
from mltagger.serving.sessions import (
    create_session,
    end_session,
    form_token_ok,
    session_token_ok,
)

router = APIRouter(include_in_schema=False)
PAGES = Depends(pages)


def safe_next(value: object) -> str:
    """Where to go after logging in: a page of this site, never another site."""
    text = str(value or "")
    return text if text.startswith("/ui/") and not text.startswith("//") else "/ui/review"


@router.get("/ui/login")
def login_form(request: Request, ui: Pages = PAGES) -> Response:
    return ui.login_page(request, next_url=safe_next(request.query_params.get("next")))


@router.post("/ui/login")
async def login(request: Request, ui: Pages = PAGES) -> Response:
    return await run_in_threadpool(login_answer, ui, request, await form_of(request))


def login_answer(ui: Pages, request: Request, form: dict[str, str]) -> Response:
    """Check the form's token, the client's attempts and the key; then a session."""
    pending = {k: form.get(f"pending_{k}", "") for k in PENDING if form.get(f"pending_{k}")}
    next_url = safe_next(form.get("next"))

    def again(message: str, status: int) -> HTMLResponse:
        return ui.login_page(request, status, error=message, next_url=next_url, pending=pending)

    if not form_token_ok(ui.secret, request.cookies.get(CSRF_COOKIE), form.get("csrf")):
        return again("This form expired or did not come from this site: try again.", 403)
    wait = ui.login_limiter.allow(client(request))
    if wait:
        response = again("Too many attempts from your address: wait a minute.", 429)
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    secret_key = form.get("key", "").strip()
    if not secret_key:
        return again("Paste your API key (mltagger keys create NAME --role review).", 401)
    try:
        key = ui.shared.identify(secret_key)
    except HTTPException:
        return again("That key is wrong or revoked.", 401)
    if not key.allows(REVIEW):
        return again(f"Key {key.name} has role {key.role}: the review pages need a key "
                     "with role review or admin.", 403)  # fmt: skip
    token, session = create_session(ui.store.engine, key, ui.minutes)
    item = ui.store.get_item(as_int(pending.get("item"), 1) or 0) if pending else None
    if item is not None:
        # Shown again, never applied: a decision carried through the login form may have
        # been posted by another site (the browser sends no session cookie with it).
        response: Response = ui.render(
            "confirm.html", title="Confirm a decision", session=session, csrf=session.csrf,
            item=item, pending=pending, pending_text=describe_pending(pending),
        )  # fmt: skip
    else:
        response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ui.minutes * 60),
        httponly=True,
        secure=ui.secure,
        samesite="lax",
        path="/ui",
    )
    return response


@router.post("/ui/logout")
async def logout(request: Request, ui: Pages = PAGES) -> Response:
    return await run_in_threadpool(logout_answer, ui, request, await form_of(request))


def logout_answer(ui: Pages, request: Request, form: dict[str, str]) -> Response:
    session = ui.session_of(request)
    if session is not None and not session_token_ok(session, str(form.get("csrf") or "")):
        return ui.refuse(request, "Log-out refused: the form's anti-forgery token is wrong.",
                         403, session)  # fmt: skip
    end_session(ui.store.engine, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response
