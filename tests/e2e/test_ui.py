"""The pages for people in a real browser: headless Chromium (the system's, as .ci/run installs it)
driven by Playwright against the real service on uvicorn (127.0.0.1, a SQLite store, a predictor
with known answers so the queue's contents are known).

A reviewer logs in and settles three items with the keyboard, one of them a near duplicate,
without a page reload, and the store holds the three decisions under the reviewer's key; an
expired session keeps the decision through the login; a reader reports a wrong tag without a
key; the health page draws its charts; writes without the anti-forgery token are refused; and
axe-core finds no WCAG violation on any page.
Screenshots of every page go to $MLTAGGER_SCREENSHOTS (docs/img/ui via `make ui-screenshots`),
else to the test's temp folder.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from mltagger.core.config import compose_config
from mltagger.evaluation.online import online_precision
from mltagger.monitoring.monitor import batches
from mltagger.serving.api import create_app
from mltagger.serving.keys import INGEST, REVIEW, create_key
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.sessions import expire_sessions
from mltagger.serving.store import Store
from mltagger.serving.tables import feedback, reviews
from mltagger.serving.tables import items as items_table
from mltagger.serving.tag_proposals import add_proposals
from tests.e2e.test_serve import on_uvicorn
from tests.fakes import FakePredictor, make_model_folder, write_screen
from tests.unit.serving.test_api import NEAR_COPY, SURE

CHROMIUM = os.environ.get("MLTAGGER_CHROMIUM") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)

UNSURE = [
    {"title": "Notes from a reading group", "description": "We met on Tuesday."},
    {"title": "A list of links we liked", "description": "Weekly picks from the team."},
    {"title": "Thoughts after a long week", "description": "Nothing in particular."},
]


@contextmanager
def running(tmp: Path):
    store = Store(f"sqlite:///{tmp / 'store.db'}")
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp / "model")),
        store,
        screen_file=write_screen(tmp / "screen.json"),
    )
    # the shipped cookie settings: Secure cookies, which Chromium keeps for 127.0.0.1
    cfg = compose_config("serve", [f"model_dir={tmp / 'model'}", "api_key=null"])
    try:
        with on_uvicorn(create_app(tagger, cfg), cfg) as port:
            yield f"http://127.0.0.1:{port}", tagger
    finally:
        store.close()


@pytest.fixture
def site(tmp_path):
    """A fresh service and store per test (tests run in random order): the queue holds, oldest
    first, an unsure item, a near copy of an auto-tagged item, and two more unsure items."""
    with running(tmp_path) as (url, tagger):
        engine = tagger.store.engine
        _, review_key = create_key(engine, "alice", REVIEW)
        _, ingest_key = create_key(engine, "feeder", INGEST)
        ids = {}
        ids["u0"], ids["sure"], ids["near"], ids["u1"], ids["u2"] = (
            add(tagger, item) for item in (UNSURE[0], SURE, NEAR_COPY, UNSURE[1], UNSURE[2])
        )
        yield url, tagger, {"review": review_key, "ingest": ingest_key}, ids


def add(tagger: Tagger, item: dict) -> int:
    (out,) = tagger.add([prepare(**item)], source="test", policy="flag")
    assert out.stored
    return out.item_id


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MLTAGGER_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def accessible(page) -> None:
    """axe-core's WCAG checks on the page as it is now: labels, contrast, landmarks, names."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    assert not found, [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in found]


def login(page, url: str, key: str) -> None:
    page.goto(f"{url}/ui/review")
    assert "/ui/login" in page.url  # no session yet: the login form
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/ui/review")


def decisions(tagger: Tagger) -> list[tuple]:
    with tagger.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(reviews.c.item_id, reviews.c.tag, reviews.c.written_by).order_by(reviews.c.id)
        ).all()
    return [tuple(r) for r in rows]


def card_title(page) -> str:
    return page.locator("#card [data-focus]").inner_text().strip()


def test_a_reviewer_settles_three_items_with_the_keyboard(site, browser, shots):
    url, tagger, keys, ids = site
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/ui/review")
    page.screenshot(path=shots / "login.png")
    accessible(page)
    page.keyboard.press("Tab")  # the first stop skips the navigation
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    login(page, url, keys["review"])
    assert card_title(page) == UNSURE[0]["title"]
    page.screenshot(path=shots / "review.png", full_page=True)
    accessible(page)
    page.evaluate("window.notReloaded = true")  # gone if the page reloads

    page.keyboard.press("2")  # computer-vision
    page.wait_for_function(
        "t => document.querySelector('#card [data-focus]').textContent.trim() === t",
        arg=NEAR_COPY["title"],
    )
    # the near duplicate is shown beside the item it resembles
    assert f"It resembles item #{ids['sure']}" in page.locator("#card").inner_text()
    # focus moved to the new item's title: Tab and screen readers go on from there
    assert page.evaluate("document.activeElement.id") == "card-title"
    page.screenshot(path=shots / "review-near-duplicate.png", full_page=True)
    accessible(page)
    page.keyboard.press("d")  # a duplicate of the item shown beside it
    page.wait_for_function(
        "t => document.querySelector('#card [data-focus]').textContent.trim() === t",
        arg=UNSURE[1]["title"],
    )
    page.keyboard.press("6")  # time-series
    page.wait_for_function(
        "t => document.querySelector('#card [data-focus]').textContent.trim() === t",
        arg=UNSURE[2]["title"],
    )
    assert page.evaluate("window.notReloaded") is True
    assert "Saved: item" in page.locator("#card .notice").inner_text()

    assert decisions(tagger) == [
        (ids["u0"], "computer-vision", "alice"),
        (ids["near"], "computer-vision", "alice"),  # a duplicate takes its original's tag
        (ids["u1"], "time-series", "alice"),
    ]
    store = tagger.store
    assert store.get_item(ids["near"])["status"] == "duplicate"
    assert store.get_item(ids["u0"])["tagged_by"] == "human"
    labels = {r["id"]: r["tag"] for r in store.human_labels()}  # what `dataset build` reads
    assert labels[ids["u1"]] == "time-series"
    context.close()


def test_an_expired_session_keeps_the_decision_through_the_login(site, browser, shots):
    url, tagger, keys, ids = site
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    login(page, url, keys["review"])
    assert card_title(page) == UNSURE[0]["title"]
    expire_sessions(tagger.store.engine, "alice")
    page.keyboard.press("x")  # not ML / spam, sent with an expired session
    page.get_by_label("API key").wait_for()
    assert f"decision on item {ids['u0']}: not ML / spam" in page.locator("#card").inner_text()
    page.screenshot(path=shots / "session-expired.png", full_page=True)
    assert decisions(tagger) == []  # not stored yet
    page.get_by_label("API key").fill(keys["review"])
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Store this decision").wait_for()  # shown again first
    assert "not ML / spam" in page.locator("#card").inner_text()
    page.screenshot(path=shots / "confirm-decision.png", full_page=True)
    accessible(page)
    assert decisions(tagger) == []
    page.get_by_role("button", name="Store this decision").click()
    page.locator("#card .notice").wait_for()
    assert decisions(tagger) == [(ids["u0"], "other", "alice")]
    assert tagger.store.get_item(ids["u0"])["status"] == "rejected"
    context.close()


ATTACKER = "http://attacker.example"  # another site: Playwright answers for it, no server


def test_a_decision_forged_by_another_site_is_not_stored_when_the_reviewer_logs_in(site, browser):
    """Finding 2: a page on another site auto-posts "not ML / spam" for a published item. The
    browser sends no session cookie with it (SameSite=Lax), so the decision lands in the login
    form; the reviewer logs in, and it is shown for confirmation, never stored by itself."""
    url, tagger, keys, ids = site
    context = browser.new_context()
    page = context.new_page()
    login(page, url, keys["review"])  # a logged-in reviewer, browsing elsewhere
    forged = (
        f'<form id="f" method="post" action="{url}/ui/review/{ids["sure"]}">'
        '<input name="decision" value="reject"><input name="seen_review" value="0"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    context.route(
        f"{ATTACKER}/**", lambda route: route.fulfill(body=forged, content_type="text/html")
    )
    page.goto(f"{ATTACKER}/cute-cats")
    page.get_by_label("API key").wait_for()  # no cookie came with the forged post
    assert decisions(tagger) == []
    page.get_by_label("API key").fill(keys["review"])
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Store this decision").wait_for()
    assert decisions(tagger) == []
    assert tagger.store.get_item(ids["sure"])["status"] == "active"
    page.get_by_role("link", name="Leave it: go to the queue").click()
    page.wait_for_url(f"{url}/ui/review?order=oldest")
    assert decisions(tagger) == []
    context.close()


def test_a_javascript_link_is_never_a_link_on_the_pages(site, browser):
    """Finding 3: an item whose url is a `javascript:` link (stored by an older version; the API
    and ingest now refuse one) shows it as text, never as a link to click."""
    url, tagger, keys, ids = site
    with tagger.store.engine.begin() as conn:
        for item in (ids["u0"], ids["sure"]):
            conn.execute(
                sa.update(items_table).where(items_table.c.id == item)
                .values(url="javascript:document.title='pwned'")
            )  # fmt: skip
    context = browser.new_context()
    page = context.new_page()
    login(page, url, keys["review"])  # the review card of u0
    assert card_title(page) == UNSURE[0]["title"]
    page.goto(f"{url}/ui/item/{ids['sure']}")  # the public report page
    for where in (f"{url}/ui/review", f"{url}/ui/item/{ids['sure']}"):
        page.goto(where)
        hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.href)")
        assert not [h for h in hrefs if not h.startswith("http")], hrefs
    context.close()


def test_a_reader_reports_a_wrong_tag_without_a_key(site, browser, shots):
    url, tagger, _, ids = site
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.goto(f"{url}/ui/item/{ids['sure']}")
    page.get_by_role("button", name="Send the report").click()  # no tag chosen
    error = page.locator("#tag-error")
    assert "Choose one of the approved tags" in error.inner_text()
    assert page.get_by_label("The tag it should have").get_attribute("aria-invalid") == "true"
    page.screenshot(path=shots / "report-error.png", full_page=True)
    accessible(page)
    page.get_by_label("The tag it should have").select_option("mlops")
    page.get_by_label("Comment").fill("It is about serving the model, not the images.")
    page.get_by_role("button", name="Send the report").click()
    page.get_by_text("Thank you: your report").wait_for()
    page.screenshot(path=shots / "report.png", full_page=True)
    rows = tagger.store.feedback_for(ids["sure"])
    assert [(r["correct_tag"], r["written_by"]) for r in rows] == [("mlops", "public")]
    assert tagger.store.get_item(ids["sure"])["needs_review"] is True  # back to a person
    context.close()


# A stream for the health page: keyword items the fake model tags surely, each with the tag its
# author chose (right for most, wrong for a few), a share of them drawn for audit.
STREAM = [
    ("Text classification with transformers", "text", "natural-language-processing"),
    ("Image captioning benchmark", "image", "computer-vision"),
    ("Deploy a model behind an API", "deploy", "mlops"),
    ("An agent that plays Atari", "agent", "reinforcement-learning"),
    ("Graph attention for molecules", "graph", "graph-learning"),
    ("Forecast electricity demand", "forecast", "time-series"),
]


WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "harbor violet canyon lantern meadow pepper glacier orbit saddle thimble cobalt prairie "
    "falcon marble tundra walnut beacon cinder dolphin ember fjord garnet hazel igloo "
    "jasmine kettle lagoon mango nectar oyster pebble quartz raven saffron tulip umber "
    "velvet willow yarrow zephyr almond birch cactus daisy elm fennel ginger heron iris "
    "juniper kelp lilac maple nutmeg olive poppy quince rosemary sage thyme urchin vanilla "
    "wasabi yew zinnia anchor bridge castle dune estuary forest grotto hill island jetty "
    "knoll ledge mesa nook oasis peak quay ridge shoal tor upland valley wharf atoll bluff "
    "cove delta "
).split()


def feed_stream(tagger: Tagger, rounds: int = 5) -> None:
    tagger.audit_share = 0.3
    words = iter(WORDS)
    for k in range(rounds):
        for j, (title, word, tag) in enumerate(STREAM):
            author = STREAM[(j + 1) % len(STREAM)][2] if (j + k) % 5 == 0 else tag
            extra = " ".join(next(words) for _ in range(3))  # no two items look alike
            add(tagger, {"title": f"{title}: {extra}", "description": f"About {word}.",
                         "author_tag": author})  # fmt: skip
    store = tagger.store
    audited = [r for r in store.monitor_rows() if r["audit"]]
    assert len(audited) >= 4, "the audit share drew too few items to show"
    for n, row in enumerate(audited):  # people check the audit sample; one in four was wrong
        tag = "other" if n % 4 == 3 else row["tag"]
        store.review(row["id"], tag, "carol", duplicate=False, written_by="carol")


def monitor_snapshot(store: Store, model_version: str) -> dict:
    """What `mltagger monitor` stores, from the store's own rows (a made-up drift result: the
    fake model has no reference profile)."""
    rows = store.monitor_rows()
    figures = ("precision", "ci_low", "ci_high", "n")
    timeline = [
        {
            "batch": k,
            "items": len(part),
            "signals": {
                r["signal"]: {f: r[f] for f in figures}
                for r in online_precision(part)
                if r["tag"] == "all" and r["model_version"] == "all"
            },
        }
        for k, part in enumerate(batches(rows, 6))
    ]
    return {
        "window": {"items": len(rows), "first_id": rows[0]["id"], "last_id": rows[-1]["id"]},
        "serving_model": model_version,
        "online": online_precision(rows),
        "review_ratio": sum(r["needs_review"] or r["audit"] for r in rows) / len(rows),
        "disagreement": [],
        "drift": {
            "pvalues": {"length": 0.4, "tags": 0.003, "embedding": 0.2},
            "alarm": True,
            "fired": ["tags"],
            "alpha": 0.01,
            "items": len(rows),
        },
        "timeline": timeline,
    }


def test_the_health_page_draws_its_charts(site, browser, shots):
    url, tagger, keys, _ = site
    feed_stream(tagger)
    tagger.store.save_snapshot(
        monitor_snapshot(tagger.store, tagger.predictor.inference.model_version)
    )
    add_proposals(tagger.store.engine, [{
        "name": "recommender-systems", "keywords": ["recommender", "ranking", "collaborative"],
        "size": 41, "growth": 0.46, "window": {"start": "2026-11-08", "end": "2026-12-08"},
        "examples": [{"id": 1, "title": "LightFM: hybrid recommendation"},
                     {"id": 2, "title": "implicit: collaborative filtering"}],
    }])  # fmt: skip
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    login(page, url, keys["review"])
    page.goto(f"{url}/ui/health")
    charts = page.locator("svg[role=img]")
    assert charts.count() == 3
    for k in range(3):
        box = charts.nth(k).bounding_box()
        assert box and box["width"] > 300 and box["height"] > 80  # drawn, not empty
        assert charts.nth(k).locator("title").text_content()
    # every proxy signal has figures, as markers in the chart and cells in the table
    precision = charts.nth(0)
    assert precision.locator("circle").count() > 1  # audit (the legend has one too)
    assert precision.locator("rect").count() > 1  # author
    assert precision.locator("polygon").count() > 1  # reports
    text = page.locator("main").inner_text()
    assert "ALARM" in text and "Review backlog" in text
    assert "recommender-systems" in text and "Add as pending tag" not in text  # a reviewer
    page.screenshot(path=shots / "health.png", full_page=True)
    accessible(page)
    context.close()


def test_writes_without_the_anti_forgery_token_are_refused(site, browser):
    url, tagger, keys, ids = site
    context = browser.new_context()
    page = context.new_page()
    login(page, url, keys["review"])
    before = decisions(tagger)
    # the session cookie goes along (same browser), the form's token does not
    r = page.request.post(
        f"{url}/ui/review/{ids['u0']}", form={"decision": "tag:mlops", "seen_review": "1"}
    )
    assert r.status == 403 and "anti-forgery" in r.text()
    r = page.request.post(
        f"{url}/ui/item/{ids['u0']}", form={"correct_tag": "mlops", "csrf": "forged"}
    )
    assert r.status == 403
    assert decisions(tagger) == before
    with tagger.store.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar()
    assert n == 0
    context.close()


def test_an_ingest_key_cannot_log_in(site, browser):
    url, _, keys, _ = site
    page = browser.new_page()
    page.goto(f"{url}/ui/login")
    page.get_by_label("API key").fill(keys["ingest"])
    page.get_by_role("button", name="Log in").click()
    assert "role ingest" in page.locator("#key-error").inner_text()
    page.close()
