"""The review queue page (`/ui/review`, log in with a key of role review): one item at a time,
its reasons for review, and one decision per form (a tag, not ML / spam, or a duplicate).

A decision names the item's latest review its reviewer saw, so a colleague's decision made in
the meantime is shown, never overwritten. Writes go through the same store calls as the JSON
API, so decisions land in `reviews` with the key's name and flow into `mltagger dataset build`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mltagger.data.text import item_text
from mltagger.models.rule import REASON_LOW_CONFIDENCE, REASON_OUT_OF_SCOPE
from mltagger.serving.keys import REVIEW
from mltagger.serving.pages.rendering import REASONS, Pages, as_int, form_of, is_htmx, pages
from mltagger.serving.sessions import Session, session_token_ok
from mltagger.serving.store import (
    HELD_DUPLICATE,
    QUEUE_ORDERS,
    REJECTED,
    ReviewConflict,
    StoreError,
)
from mltagger.serving.why import highlight

router = APIRouter(include_in_schema=False)
PAGES = Depends(pages)
# What the pending decision of an expired session carries through the login form.
PENDING = ("item", "decision", "seen_review", "duplicate_of", "order", "offset")


def queue_args(params: Mapping[str, Any]) -> tuple[str, int]:
    order = str(params.get("order") or "")
    order = order if order in QUEUE_ORDERS else ""  # "": the configured default order
    offset = as_int(params.get("offset"), 0, 1_000_000) or 0
    return order, offset


def card_context(
    ui: Pages, session: Session, order: str, offset: int, notice: str = "", **extra: Any
) -> dict:
    """What the card of the item at this place in the queue shows."""
    order = order or ui.shared.default_order
    rows, total = ui.shared.review_queue(1, offset, order)
    item = rows[0] if rows else None
    tags = ui.tags
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
        "fallback": ui.fallback,
        "suggested": [],
        "keys": {t: str(k + 1) for k, t in enumerate(tags)},  # shortcuts in the model's order
        "conflict": None,
        "mine": "",
        "field_error": "",
        **extra,
    }
    if item is not None:
        context.update(item_details(ui, item), **why_details(ui, item))
    return context


def item_details(ui: Pages, item: dict) -> dict:
    """Why the item is in the queue, its reports, the item it may repeat, its past reviews."""
    store = ui.store
    scores = sorted((item.get("scores") or {}).items(), key=lambda kv: -kv[1])[:3]
    reasons = []
    if item.get("reason") == REASON_LOW_CONFIDENCE:
        reasons.append(REASONS["low_confidence"])
    if item.get("reason") == REASON_OUT_OF_SCOPE:
        reasons.append(REASONS["out_of_scope"])
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
        "suggested": suggested_secondary(ui, item),
        "reasons": reasons or ["sent back for review"],
        "reports": reports,
        "original": original,
        "past": store.reviews_for(item["id"]),
    }


def suggested_secondary(ui: Pages, item: dict) -> list[str]:
    """Topics the model's secondary head offers beside its top tag (shown, never pre-ticked: a
    suggestion right about half the time must not be confirmed by a tired click)."""
    head = getattr(ui.shared.tagger.predictor, "secondary", None)
    scores = item.get("scores") or {}
    if head is None or set(scores) != set(head.labels):
        return []
    text = item_text(item["title"], item.get("description"))
    row = head.scores([text], np.array([[scores[t] for t in head.labels]]))[0]
    return [t for t, _ in head.suggestions(max(scores, key=scores.get), row)]


def why_details(ui: Pages, item: dict) -> dict:
    """The serving model's top words, highlighted in the title and description, and the
    nearest training items (never waiting for their index: the card says when it is built)."""
    why = ui.shared.why.why(ui.shared.tagger.predictor, item, wait=0.0)
    top = {w["word"] for w in why["words"][:5] if w["importance"] > 0}
    return {
        "why": why,
        "why_title": highlight(item["title"], top),
        "why_description": highlight(item.get("description") or "", top),
    }


def decide(ui: Pages, session: Session, form: Mapping[str, Any]) -> tuple[int, dict]:
    """Apply one decision from a form; (status, card context) of what to show next."""
    store = ui.store
    order, offset = queue_args(form)
    item_id = as_int(form.get("item"), 1)
    seen = as_int(form.get("seen_review"), 0)
    decision = str(form.get("decision") or "")
    name = session.key.name

    def card(status: int, notice: str = "", **extra: Any) -> tuple[int, dict]:
        return status, card_context(ui, session, order, offset, notice, **extra)

    if item_id is None or seen is None:
        return card(422, "That form was incomplete (item or seen_review); nothing stored.")
    item = store.get_item(item_id)
    if item is None:
        return card(404, f"There is no item {item_id}; nothing stored.")
    kwargs: dict[str, Any] = {"reviewer": name, "written_by": name, "seen_review": seen}
    typed = str(form.get("duplicate_of") or "").strip().lstrip("#")
    if decision.startswith("tag:") and decision[4:] in ui.tags:
        tag, kwargs["duplicate"], said = decision[4:], False, decision[4:]
        if "also_shown" in form:  # the card's "also about" boxes: what is ticked replaces
            ticked = str(form.get("also") or "").split(",")
            kwargs["secondary_tags"] = [t for t in ui.tags if t in ticked and t != ui.fallback]
    elif decision == "reject":
        tag, kwargs["reject"], said = ui.fallback, True, "not ML / spam"
    elif decision == "duplicate":
        if typed:
            other = as_int(typed, 1)
            original = store.get_item(other) if other is not None else None
            if original is None or other == item_id:
                return card(422, field_error=f"“{typed}” is not the id of another stored item.")
            kwargs["duplicate_of"] = other
        elif item.get("duplicate_of"):
            original = store.get_item(item["duplicate_of"])
            kwargs["duplicate"] = True
        else:
            return card(422, field_error="Give the id of the item this one repeats.")
        tag = original["tag"] if original else ui.fallback
        said = f"duplicate of item {kwargs.get('duplicate_of') or item['duplicate_of']}"
    else:
        return card(422, f"Unknown decision {decision!r}; nothing stored.")
    try:
        store.review(item_id, tag, **kwargs)
    except ReviewConflict as err:
        status, context = card(409)
        context.update(conflict=err.other, mine=said, decided=store.get_item(item_id))
        return status, context
    except StoreError as err:
        return card(409, f"Not stored: {err}.")
    return card(200, saved(ui, item_id))


def saved(ui: Pages, item_id: int) -> str:
    """What the last decision on an item was, from the store (a redirect carries only the
    id, so no link can put words of its own on the page)."""
    item, past = ui.store.get_item(item_id), ui.store.reviews_for(item_id)
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


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/review", status_code=303)


@router.get("/ui/review")
def review_page(request: Request, ui: Pages = PAGES) -> Response:
    session = ui.session_of(request)
    if session is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/ui/login?" + urlencode({"next": path}), status_code=303)
    order, offset = queue_args(request.query_params)
    done = as_int(request.query_params.get("saved"), 1)
    context = card_context(ui, session, order, offset, saved(ui, done) if done else "")
    return ui.render("review.html", title="Review queue", **context)


@router.get("/ui/review/card")
def review_card(request: Request, ui: Pages = PAGES) -> Response:
    session = ui.session_of(request)
    if session is None:
        return ui.login_page(request, 401, error="Your session has ended: log in again.",
                             fragment=is_htmx(request))  # fmt: skip
    order, offset = queue_args(request.query_params)
    return ui.render("_card.html", **card_context(ui, session, order, offset))


@router.post("/ui/review/{item_id}")
async def review_decision(request: Request, item_id: str, ui: Pages = PAGES) -> Response:
    form = {**await form_of(request), "item": item_id}
    return await run_in_threadpool(decision_page, ui, request, form)


def decision_page(ui: Pages, request: Request, form: dict[str, str]) -> Response:
    """A decision posted from the queue page: applied with a live session and its token; kept
    for confirmation after logging in when the session has ended."""
    session = ui.session_of(request)
    if session is None:
        pending = {k: form.get(k, "") for k in PENDING}
        return ui.login_page(
            request,
            401,
            error="Your session has ended: log in again, and your decision below is saved.",
            pending=pending,
            next_url="/ui/review?"
            + urlencode({"order": pending["order"] or ui.shared.default_order}),
            fragment=is_htmx(request),
        )
    if not session_token_ok(session, form.get("csrf")):
        return ui.refuse(request, "This form did not come from this site's review page (its "
                         "anti-forgery token is missing or wrong): reload the page.", 403,
                         session)  # fmt: skip
    if not session.key.allows(REVIEW):
        return ui.refuse(request, f"Key {session.key.name} may not review.", 403, session)
    status, context = decide(ui, session, form)
    if is_htmx(request):
        return ui.render("_card.html", status, **context)
    if status == 200:
        query = {"order": context["order"], "offset": context["offset"], "saved": form["item"]}
        return RedirectResponse("/ui/review?" + urlencode(query), status_code=303)
    return ui.render("review.html", status, title="Review queue", **context)
