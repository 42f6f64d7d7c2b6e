"""Tag proposals on `/ui/health` (issue 35): what `mltagger discover` found piling up in `other`
and in review, with its keywords, size, growth and examples, and for an admin one button to add
the proposed tag to the approved list as `pending` (or to dismiss it).

Never automatic: `discover` only stores proposals; the list changes when a person presses the
button, and the new tag is answered only once a model that answers it is promoted (the tag
list's rule, `mltagger.models.tag_rule`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mltagger.serving.keys import ADMIN
from mltagger.serving.pages.rendering import Pages, as_int, form_of, pages
from mltagger.serving.sessions import session_token_ok
from mltagger.serving.tag_list import TagList, TagListError
from mltagger.serving.tag_proposals import accept_proposal, dismiss_proposal, list_proposals

router = APIRouter(include_in_schema=False)
PAGES = Depends(pages)
ACTIONS = ("accept", "dismiss")


def proposals_context(ui: Pages, limit: int = 10) -> list[dict]:
    """The open proposals, largest first, for the health page."""
    return list_proposals(ui.store.engine, limit=limit)


def decide_proposal(ui: Pages, who: str, proposal_id: int, action: str) -> str:
    """Accept (the tag becomes `pending`) or dismiss one proposal; the line the page shows."""
    try:
        if action == "accept":
            row = accept_proposal(TagList(ui.store.engine), proposal_id, who)
            return f"Added {row['name']} to the tag list as pending (by {who})."
        row = dismiss_proposal(ui.store.engine, proposal_id, who)
        return f"Dismissed proposal {proposal_id} ({row['name']})."
    except TagListError as err:
        return f"Nothing changed: {err}"


@router.post("/ui/tags/proposals/{proposal_id}/{action}")
async def proposal_action(
    request: Request, proposal_id: str, action: str, ui: Pages = PAGES
) -> Response:
    session = ui.session_of(request)
    if session is None:
        return RedirectResponse("/ui/login?next=/ui/health", status_code=303)
    form = await form_of(request)
    if not session_token_ok(session, form.get("csrf")):
        return ui.refuse(request, "This form did not come from this site's health page (its "
                         "anti-forgery token is missing or wrong): reload the page.", 403,
                         session)  # fmt: skip
    if not session.key.allows(ADMIN):
        return ui.refuse(request, f"Key {session.key.name} may not change the tag list "
                         "(role admin).", 403, session)  # fmt: skip
    number = as_int(proposal_id, 1)
    if number is None or action not in ACTIONS:
        return ui.refuse(request, "No such proposal action; nothing changed.", 404, session)
    said = await run_in_threadpool(decide_proposal, ui, session.key.name, number, action)
    return ui.render("message.html", 200, title="Tag proposals", message=said,
                     session=session, csrf=session.csrf)  # fmt: skip
