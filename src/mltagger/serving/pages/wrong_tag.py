"""`/ui/item/{id}`: a reader reports a wrong tag on a published item. Public, no key; rate
limited like a keyless `POST /feedback` (the same limiter), and stored as one would be.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mltagger.serving.access import PUBLIC_WRITER
from mltagger.serving.pages.rendering import (
    CSRF_COOKIE,
    Pages,
    as_int,
    client,
    form_of,
    pages,
)
from mltagger.serving.schemas import MAX_COMMENT_CHARS, checked_text, published
from mltagger.serving.sessions import form_token_ok

router = APIRouter(include_in_schema=False)
PAGES = Depends(pages)


def report_page(
    ui: Pages, request: Request, item: dict, status: int = 200, **extra: Any
) -> HTMLResponse:
    context = {
        "title": f"Report a wrong tag: item {item['id']}",
        "item": item,
        "tags": ui.tags,
        "max_comment": MAX_COMMENT_CHARS,
        "errors": {},
        "chosen": "",
        "comment": "",
        "also": [],
        "fallback": ui.fallback,
        "reported": None,
        **extra,
    }
    return ui.with_form_cookie(
        request, lambda token: ui.render("item.html", status, csrf=token, **context)
    )


def item_or_404(ui: Pages, item_id: str) -> dict | Response:
    """A published item; the public page never shows a held, rejected or unknown one."""
    number = as_int(item_id, 1)
    item = ui.store.get_item(number) if number is not None else None
    if not published(item):
        return ui.render("message.html", 404, title="Not found", kind="error",
                         message=f"There is no item {item_id}.")  # fmt: skip
    return item


@router.get("/ui/item/{item_id}")
def item_page(request: Request, item_id: str, ui: Pages = PAGES) -> Response:
    item = item_or_404(ui, item_id)
    if isinstance(item, Response):
        return item
    reported = as_int(request.query_params.get("reported"), 1)
    return report_page(ui, request, item, reported=reported)


@router.post("/ui/item/{item_id}")
async def report(request: Request, item_id: str, ui: Pages = PAGES) -> Response:
    return await run_in_threadpool(report_answer, ui, request, item_id, await form_of(request))


def form_errors(ui: Pages, item: dict, chosen: str, comment: str) -> tuple[dict, str | None]:
    """What is wrong with the report, by field, and the comment as the API would store it."""
    errors = {}
    if chosen not in ui.tags:
        errors["correct_tag"] = "Choose one of the approved tags."
    elif chosen == item["tag"]:
        errors["correct_tag"] = f"{chosen} is the tag it has now: choose the tag it should have."
    cleaned, problem = checked_text(comment, MAX_COMMENT_CHARS)  # as the API checks it
    if problem is not None:
        errors["comment"] = f"The comment {problem[1]}."
    return errors, cleaned


def report_answer(ui: Pages, request: Request, item_id: str, form: dict[str, str]) -> Response:
    item = item_or_404(ui, item_id)
    if isinstance(item, Response):
        return item
    chosen, comment = form.get("correct_tag", ""), form.get("comment", "")
    also = [t for t in ui.tags if t in str(form.get("also") or "").split(",") and t != ui.fallback]
    if not form_token_ok(ui.secret, request.cookies.get(CSRF_COOKIE), form.get("csrf")):
        return report_page(
            ui, request, item, 403, chosen=chosen, comment=comment,
            errors={"form": "This form expired or did not come from this site: send it "
                    "again (nothing was stored)."},
        )  # fmt: skip
    wait = ui.shared.public_limiter.allow(client(request))
    if wait:
        response = report_page(
            ui, request, item, 429, chosen=chosen, comment=comment,
            errors={"form": f"Too many reports from your address: try again in "
                    f"{max(1, math.ceil(wait))} s (nothing was stored)."},
        )  # fmt: skip
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    errors, cleaned = form_errors(ui, item, chosen, comment)
    if errors:
        return report_page(
            ui, request, item, 422, chosen=chosen, comment=comment, also=also, errors=errors
        )
    record = ui.store.add_feedback(item["id"], chosen, cleaned or None, PUBLIC_WRITER, also)
    ui.shared.metrics.feedback.inc()
    return RedirectResponse(f"/ui/item/{item['id']}?reported={record['id']}", status_code=303)
