"""The pages for the people in the loop, served by the service itself (docs/ui.md):

  /ui/review        the review queue, one item at a time (log in with a key of role review)
  /ui/item/{id}     report a wrong tag: public, no key, rate limited like POST /feedback
  /ui/health        the model's health: versions, rollout, online precision, backlog, drift

Server-rendered HTML (Jinja2) with a little JavaScript: htmx, shipped in `static/` with its
licence, loads the next item without a full page reload, and `static/ui.js` adds the keyboard
shortcuts. Every form also works without JavaScript (a plain POST, then a redirect), nothing is
fetched from another site, and the pages say which field is wrong next to the field.

Writes go through the same store calls as the JSON API, so decisions land in `reviews` with the
key's name (`written_by`) and flow into `mltagger dataset build`; a reader's report lands in
`feedback` as a keyless POST /feedback would. A decision names the item's latest review its
reviewer saw, so a colleague's decision made in the meantime is shown, never overwritten.

Over 400 lines because the pages are one closure over the app's shared state (the store, the
tags, the signing secret, the limiters, the renderer), as the JSON endpoints are in `api.py`;
split by page, each part would take all of it as arguments.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from mltagger.models.rule import REASON_LOW_CONFIDENCE
from mltagger.serving import charts
from mltagger.serving.keys import REVIEW, Key
from mltagger.serving.limits import RateLimiter
from mltagger.serving.rollout import deployment_history
from mltagger.serving.schemas import (
    MAX_COMMENT_CHARS,
    MAX_ID,
    checked_text,
    published,
    safe_url,
)
from mltagger.serving.service import Tagger
from mltagger.serving.sessions import (
    Session,
    create_session,
    end_session,
    find_session,
    form_token,
    form_token_ok,
    session_token_ok,
    shared_secret,
)
from mltagger.serving.store import (
    HELD_DUPLICATE,
    QUEUE_ORDERS,
    REJECTED,
    ReviewConflict,
    StoreError,
)

HERE = Path(__file__).parent
SESSION_COOKIE = "mltagger_session"
CSRF_COOKIE = "mltagger_csrf"
PUBLIC_WRITER = "public"
# Every page: only this site's own scripts, styles and forms; never inside another site's frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# What the pending decision of an expired session carries through the login form.
PENDING = ("item", "decision", "seen_review", "duplicate_of", "order", "offset")
REASONS = {
    "low_confidence": "the model was not sure enough to apply a tag",
    "audit": "audit sample: an automatically applied tag, checked at random",
    "near_duplicate": "held as a likely duplicate of another item",
    "reported": "a reader reported the tag as wrong",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the page, loudly
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x: "—" if x is None else f"{x:.1%}"
    env.filters["when"] = _when
    env.filters["link"] = safe_url  # only http(s) links become links on a page
    return env


def _when(stamp: str | None) -> str:
    if not stamp:
        return "—"
    t = datetime.fromisoformat(stamp)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _int(value: Any, low: int = 0, high: int = MAX_ID) -> int | None:
    """A form or query value as an integer in [low, high]; None when it is not one."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _is_plain_http_elsewhere(request: Request) -> bool:
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


def mount_ui(
    app: FastAPI,
    tagger: Tagger,
    cfg: Any,
    *,
    identify: Callable[[str], Key],
    public_limiter: RateLimiter,
    config_key_hash: str | None,
) -> None:
    """Add the pages, their static files and their security headers to the service's app."""
    ui = cfg.get("ui") or {}
    minutes = float(ui.get("session_minutes", 480))
    secure = bool(ui.get("secure_cookies", True))
    target = float(ui.get("precision_target", 0.85))
    login_limiter = RateLimiter(
        float(ui.get("login_per_minute", 10)), int(ui.get("login_burst", 5))
    )
    store = tagger.store
    engine = store.engine
    tags = list(tagger.predictor.inference.approved_tags)
    fallback = tagger.predictor.inference.fallback_tag  # "not ML / spam" is tagged this (other)
    keys = {t: str(k + 1) for k, t in enumerate(tags)}  # shortcuts 1..7 in the model's order
    env = _environment()
    secret = shared_secret(engine)

    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/ui"):
            for name, value in SECURITY_HEADERS.items():
                if name == "Cache-Control" and request.url.path.startswith("/ui/static/"):
                    continue
                response.headers.setdefault(name, value)
        return response

    # -- helpers ---------------------------------------------------------------------------

    async def form_of(request: Request) -> dict[str, str]:
        """The posted form. Read here, on the event loop; the rest of each write runs in the
        thread pool, as FastAPI runs the JSON endpoints, so a store write never stalls the loop
        (SQLite may wait up to its busy timeout for the write lock)."""
        return {k: str(v) for k, v in (await request.form()).items()}

    def session_of(request: Request) -> Session | None:
        return find_session(engine, request.cookies.get(SESSION_COOKIE), config_key_hash)

    def is_htmx(request: Request) -> bool:
        return request.headers.get("HX-Request") == "true"

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("session", None)
        context.setdefault("csrf", "")
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def with_form_cookie(request: Request, build: Callable[[str], HTMLResponse]) -> HTMLResponse:
        """A page with a pre-login form: the CSRF cookie (made when missing) and its token."""
        value = request.cookies.get(CSRF_COOKIE)
        fresh = not value
        if fresh:
            value = secrets.token_urlsafe(32)
        response = build(form_token(secret, value))
        if fresh:
            response.set_cookie(
                CSRF_COOKIE, value, httponly=True, secure=secure, samesite="lax", path="/ui"
            )
        return response

    def login_page(
        request: Request,
        status: int = 200,
        *,
        error: str = "",
        next_url: str = "/ui/review",
        pending: Mapping[str, str] | None = None,
        fragment: bool = False,
    ) -> HTMLResponse:
        return with_form_cookie(
            request,
            lambda token: render(
                "_login.html" if fragment else "login.html",
                status,
                title="Log in",
                csrf=token,
                error=error,
                next_url=next_url,
                pending=dict(pending or {}),
                pending_text=describe_pending(pending),
                insecure=secure and _is_plain_http_elsewhere(request),
            ),
        )

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

    def safe_next(value: Any) -> str:
        text = str(value or "")
        return text if text.startswith("/ui/") and not text.startswith("//") else "/ui/review"

    def refuse(request: Request, message: str, status: int, session: Session | None = None):
        if is_htmx(request):
            return render("_message.html", status, message=message, kind="error")
        return render(
            "message.html", status, title="Refused", message=message, session=session,
            csrf=session.csrf if session else "",
        )  # fmt: skip

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    # -- the review queue ------------------------------------------------------------------

    def queue_args(params: Mapping[str, Any]) -> tuple[str, int]:
        order = str(params.get("order") or "oldest")
        order = order if order in QUEUE_ORDERS else "oldest"
        offset = _int(params.get("offset"), 0, 1_000_000) or 0
        return order, offset

    def card_context(
        session: Session, order: str, offset: int, notice: str = "", **extra: Any
    ) -> dict:
        rows, total = store.review_queue(limit=1, offset=offset, order=order)
        item = rows[0] if rows else None
        context: dict[str, Any] = {
            "session": session,
            "csrf": session.csrf,
            "order": order,
            "orders": QUEUE_ORDERS,
            "offset": offset,
            "total": total,
            "notice": notice,
            "item": item,
            "tags": tags,
            "keys": keys,
            "conflict": None,
            "mine": "",
            "field_error": "",
            **extra,
        }
        if item is not None:
            context.update(item_details(item))
        return context

    def item_details(item: dict) -> dict:
        scores = sorted((item.get("scores") or {}).items(), key=lambda kv: -kv[1])[:3]
        reasons = []
        if item.get("reason") == REASON_LOW_CONFIDENCE:
            reasons.append(REASONS["low_confidence"])
        if item.get("audit"):
            reasons.append(REASONS["audit"])
        if item.get("status") == HELD_DUPLICATE:
            reasons.append(REASONS["near_duplicate"])
        reports = store.feedback_for(item["id"])
        if reports:
            reasons.append(REASONS["reported"])
        original = store.get_item(item["duplicate_of"]) if item.get("duplicate_of") else None
        return {
            "scores": scores,
            "reasons": reasons or ["sent back for review"],
            "reports": reports,
            "original": original,
            "past": store.reviews_for(item["id"]),
        }

    def decide(session: Session, form: Mapping[str, Any]) -> tuple[int, dict]:
        """Apply one decision from a form; (status, card context) of what to show next."""
        order, offset = queue_args(form)
        item_id = _int(form.get("item"), 1)
        seen = _int(form.get("seen_review"), 0)
        decision = str(form.get("decision") or "")
        name = session.key.name

        def card(status: int, notice: str = "", **extra: Any) -> tuple[int, dict]:
            return status, card_context(session, order, offset, notice, **extra)

        if item_id is None or seen is None:
            return card(422, "That form was incomplete (item or seen_review); nothing stored.")
        item = store.get_item(item_id)
        if item is None:
            return card(404, f"There is no item {item_id}; nothing stored.")
        kwargs: dict[str, Any] = {"reviewer": name, "written_by": name, "seen_review": seen}
        typed = str(form.get("duplicate_of") or "").strip().lstrip("#")
        if decision.startswith("tag:") and decision[4:] in tags:
            tag, kwargs["duplicate"], said = decision[4:], False, decision[4:]
        elif decision == "reject":
            tag, kwargs["reject"], said = fallback, True, "not ML / spam"
        elif decision == "duplicate":
            if typed:
                other = _int(typed, 1)
                original = store.get_item(other) if other is not None else None
                if original is None or other == item_id:
                    return stay(session, order, offset, 422,
                                f"“{typed}” is not the id of another stored item.")  # fmt: skip
                kwargs["duplicate_of"] = other
            elif item.get("duplicate_of"):
                original = store.get_item(item["duplicate_of"])
                kwargs["duplicate"] = True
            else:
                return stay(session, order, offset, 422,
                            "Give the id of the item this one repeats.")  # fmt: skip
            tag = original["tag"] if original else fallback
            said = f"duplicate of item {kwargs.get('duplicate_of') or item['duplicate_of']}"
        else:
            return card(422, f"Unknown decision {decision!r}; nothing stored.")
        try:
            store.review(item_id, tag, **kwargs)
        except ReviewConflict as err:
            return conflict(session, item_id, order, offset, err.other, said)
        except StoreError as err:
            return card(409, f"Not stored: {err}.")
        return card(200, saved(item_id))

    def saved(item_id: int) -> str:
        """What the last decision on an item was, from the store (a redirect carries only the
        id, so no link can put words of its own on the page)."""
        item, past = store.get_item(item_id), store.reviews_for(item_id)
        if item is None or not past:
            return ""
        if item["status"] == REJECTED:
            said = "not ML / spam"
        elif item["status"] == HELD_DUPLICATE:
            said = f"duplicate of item {item['duplicate_of']}"
        else:
            said = past[-1]["tag"]
        who = past[-1]["written_by"] or past[-1]["reviewer"]  # the key's name, when recorded
        return f"Saved: item {item_id} → {said} (by {who})."

    def stay(session, order, offset, status, error) -> tuple[int, dict]:
        """The card again (the item is still the one at this offset), with the error next to
        the duplicate field."""
        return status, card_context(session, order, offset, field_error=error)

    def conflict(session, item_id, order, offset, other, said) -> tuple[int, dict]:
        context = card_context(session, order, offset)
        current = store.get_item(item_id)
        context.update(conflict=other, mine=said, decided=current)
        return 409, context

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/review", status_code=303)

    @app.get("/ui/review", include_in_schema=False)
    def review_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/ui/login?" + urlencode({"next": path}), status_code=303)
        order, offset = queue_args(request.query_params)
        done = _int(request.query_params.get("saved"), 1)
        context = card_context(session, order, offset, saved(done) if done else "")
        return render("review.html", title="Review queue", **context)

    @app.get("/ui/review/card", include_in_schema=False)
    def review_card(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return login_page(request, 401, error="Your session has ended: log in again.",
                              fragment=is_htmx(request))  # fmt: skip
        order, offset = queue_args(request.query_params)
        return render("_card.html", **card_context(session, order, offset))

    @app.post("/ui/review/{item_id}", include_in_schema=False)
    async def review_decision(request: Request, item_id: str) -> Response:
        form = {**await form_of(request), "item": item_id}
        return await run_in_threadpool(decision_page, request, form)

    def decision_page(request: Request, form: dict[str, str]) -> Response:
        session = session_of(request)
        if session is None:
            pending = {k: form.get(k, "") for k in PENDING}
            return login_page(
                request,
                401,
                error="Your session has ended: log in again, and your decision below is saved.",
                pending=pending,
                next_url="/ui/review?" + urlencode({"order": pending["order"] or "oldest"}),
                fragment=is_htmx(request),
            )
        if not session_token_ok(session, form.get("csrf")):
            return refuse(request, "This form did not come from this site's review page (its "
                          "anti-forgery token is missing or wrong): reload the page.", 403,
                          session)  # fmt: skip
        if not session.key.allows(REVIEW):
            return refuse(request, f"Key {session.key.name} may not review.", 403, session)
        status, context = decide(session, form)
        if is_htmx(request):
            return render("_card.html", status, **context)
        if status == 200:
            query = {"order": context["order"], "offset": context["offset"], "saved": form["item"]}
            return RedirectResponse("/ui/review?" + urlencode(query), status_code=303)
        return render("review.html", status, title="Review queue", **context)

    # -- logging in and out ----------------------------------------------------------------

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request, next_url=safe_next(request.query_params.get("next")))

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        return await run_in_threadpool(login_answer, request, await form_of(request))

    def login_answer(request: Request, form: dict[str, str]) -> Response:
        pending = {k: form.get(f"pending_{k}", "") for k in PENDING if form.get(f"pending_{k}")}
        next_url = safe_next(form.get("next"))

        def again(message: str, status: int) -> HTMLResponse:
            return login_page(request, status, error=message, next_url=next_url, pending=pending)

        if not form_token_ok(secret, request.cookies.get(CSRF_COOKIE), form.get("csrf")):
            return again("This form expired or did not come from this site: try again.", 403)
        wait = login_limiter.allow(client(request))
        if wait:
            response = again("Too many attempts from your address: wait a minute.", 429)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        secret_key = form.get("key", "").strip()
        if not secret_key:
            return again("Paste your API key (mltagger keys create NAME --role review).", 401)
        try:
            key = identify(secret_key)
        except HTTPException:
            return again("That key is wrong or revoked.", 401)
        if not key.allows(REVIEW):
            return again(f"Key {key.name} has role {key.role}: the review pages need a key "
                         "with role review or admin.", 403)  # fmt: skip
        token, session = create_session(engine, key, minutes)
        item = store.get_item(_int(pending.get("item"), 1) or 0) if pending else None
        if item is not None:
            # Shown again, never applied: a decision carried through the login form may have
            # been posted by another site (the browser sends no session cookie with it).
            response: Response = render(
                "confirm.html", title="Confirm a decision", session=session, csrf=session.csrf,
                item=item, pending=pending, pending_text=describe_pending(pending),
            )  # fmt: skip
        else:
            response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(minutes * 60),
            httponly=True,
            secure=secure,
            samesite="lax",
            path="/ui",
        )
        return response

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        return await run_in_threadpool(logout_answer, request, await form_of(request))

    def logout_answer(request: Request, form: dict[str, str]) -> Response:
        session = session_of(request)
        if session is not None and not session_token_ok(session, str(form.get("csrf") or "")):
            return refuse(request, "Log-out refused: the form's anti-forgery token is wrong.",
                          403, session)  # fmt: skip
        end_session(engine, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    # -- a reader reports a wrong tag ------------------------------------------------------

    def report_page(request: Request, item: dict, status: int = 200, **extra: Any):
        context = {
            "title": f"Report a wrong tag: item {item['id']}",
            "item": item,
            "tags": tags,
            "max_comment": MAX_COMMENT_CHARS,
            "errors": {},
            "chosen": "",
            "comment": "",
            "reported": None,
            **extra,
        }
        return with_form_cookie(
            request, lambda token: render("item.html", status, csrf=token, **context)
        )

    def item_or_404(request: Request, item_id: str) -> dict | Response:
        """A published item; the public page never shows a held, rejected or unknown one."""
        number = _int(item_id, 1)
        item = store.get_item(number) if number is not None else None
        if not published(item):
            return render("message.html", 404, title="Not found", kind="error",
                          message=f"There is no item {item_id}.")  # fmt: skip
        return item

    @app.get("/ui/item/{item_id}", include_in_schema=False)
    def item_page(request: Request, item_id: str) -> Response:
        item = item_or_404(request, item_id)
        if isinstance(item, Response):
            return item
        reported = _int(request.query_params.get("reported"), 1)
        return report_page(request, item, reported=reported)

    @app.post("/ui/item/{item_id}", include_in_schema=False)
    async def report(request: Request, item_id: str) -> Response:
        return await run_in_threadpool(report_answer, request, item_id, await form_of(request))

    def report_answer(request: Request, item_id: str, form: dict[str, str]) -> Response:
        item = item_or_404(request, item_id)
        if isinstance(item, Response):
            return item
        chosen, comment = form.get("correct_tag", ""), form.get("comment", "")
        if not form_token_ok(secret, request.cookies.get(CSRF_COOKIE), form.get("csrf")):
            return report_page(
                request, item, 403, chosen=chosen, comment=comment,
                errors={"form": "This form expired or did not come from this site: send it "
                        "again (nothing was stored)."},
            )  # fmt: skip
        wait = public_limiter.allow(client(request))
        if wait:
            response = report_page(
                request, item, 429, chosen=chosen, comment=comment,
                errors={"form": f"Too many reports from your address: try again in "
                        f"{max(1, math.ceil(wait))} s (nothing was stored)."},
            )  # fmt: skip
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        errors = {}
        if chosen not in tags:
            errors["correct_tag"] = "Choose one of the approved tags."
        elif chosen == item["tag"]:
            errors["correct_tag"] = (
                f"{chosen} is the tag it has now: choose the tag it should have."
            )
        cleaned, problem = checked_text(comment, MAX_COMMENT_CHARS)  # as the API checks it
        if problem is not None:
            errors["comment"] = f"The comment {problem[1]}."
        if errors:
            return report_page(request, item, 422, chosen=chosen, comment=comment, errors=errors)
        record = store.add_feedback(item["id"], chosen, cleaned or None, PUBLIC_WRITER)
        app.state.metrics.feedback.inc()
        return RedirectResponse(f"/ui/item/{item['id']}?reported={record['id']}", status_code=303)

    # -- the model's health ----------------------------------------------------------------

    @app.get("/ui/health", include_in_schema=False)
    def health_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/ui/login?next=/ui/health", status_code=303)
        return render("health.html", title="Model health", session=session, csrf=session.csrf,
                      **health_context())  # fmt: skip

    def health_context() -> dict:
        health = tagger.health()
        backlog = store.review_backlog()
        snap = store.latest_snapshot()
        context: dict[str, Any] = {
            "health": health,
            "deployments": deployment_history(engine),
            "backlog": backlog,
            "backlog_age": _age(backlog["oldest_seconds"]),
            "queue_reasons": store.queue_reasons(),
            "reason_text": REASONS,
            "snap": snap,
            "target": target,
            "charts": {},
            "by_tag": [],
            "by_model": [],
            "snap_age": "",
        }
        if snap is None:
            return context
        stamp = datetime.fromisoformat(snap["created_at"])
        context["snap_age"] = _age((datetime.now(timezone.utc) - stamp).total_seconds())
        online = snap.get("online") or []
        overall = [r for r in online if r["model_version"] == "all"]
        context["by_tag"] = _table(overall, "tag")
        context["by_model"] = _table([r for r in online if r["tag"] == "all"], "model_version")
        context["charts"]["precision"] = charts.interval_chart(overall, target)
        if snap.get("timeline"):
            context["charts"]["timeline"] = charts.timeline_chart(snap["timeline"], target)
        drift = snap.get("drift") or {}
        if drift.get("pvalues"):
            context["charts"]["drift"] = charts.pvalue_chart(drift["pvalues"], drift["alpha"])
        return context


def _table(rows: list[dict], by: str) -> list[dict]:
    """One line per `by` value, one cell per proxy signal."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(str(r[by]), {"name": str(r[by])})[r["signal"]] = r
    names = sorted(out, key=lambda n: (n == "all", n))
    return [out[n] for n in names]
