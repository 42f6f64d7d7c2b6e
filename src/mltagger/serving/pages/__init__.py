"""The pages for the people in the loop, served by the service itself (docs/ui.md):

  /ui/review        the review queue, one item at a time (log in with a key of role review)
  /ui/item/{id}     report a wrong tag: public, no key, rate limited like POST /feedback
  /ui/health        the model's health: versions, rollout, online precision, backlog, drift,
                    and the tag proposals of `mltagger discover` (an admin accepts or dismisses)

Server-rendered HTML (Jinja2) with a little JavaScript: htmx, shipped in `static/` with its
licence, loads the next item without a full page reload, and `static/ui.js` adds the keyboard
shortcuts. Every form also works without JavaScript (a plain POST, then a redirect), nothing is
fetched from another site, and the pages say which field is wrong next to the field.

One module-level router per page (`queue.py`, `login.py`, `wrong_tag.py`, `health.py`); what
they share (settings, templates, the signing secret) is `rendering.Pages`, on `app.state.pages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from mltagger.serving.pages import health, login, proposals, queue, wrong_tag
from mltagger.serving.pages.rendering import HERE, SECURITY_HEADERS, Pages

ROUTERS = (queue.router, login.router, wrong_tag.router, health.router, proposals.router)


def add_pages(app: FastAPI, ui: Mapping[str, Any]) -> None:
    """Add the pages, their static files and their security headers to the service's app
    (after `create_app` has set `app.state.shared`; `ui`: the ui section of conf/serve.yaml)."""
    app.state.pages = Pages(app.state.shared, ui)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.middleware("http")(security_headers)
    for router in ROUTERS:
        app.include_router(router)


async def security_headers(request: Request, call_next):
    """Every page: only this site's scripts, styles and forms, never in another site's frame."""
    response = await call_next(request)
    if request.url.path.startswith("/ui"):
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.url.path.startswith("/ui/static/"):
                continue
            response.headers.setdefault(name, value)
    return response
