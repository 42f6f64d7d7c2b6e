"""The pages' rules through FastAPI's test client, on a predictor with known answers and a real
SQLite store: sessions, anti-forgery tokens, conflicts between reviewers, the report form's
errors and limits, and what each decision stores. The browser test (tests/e2e/test_ui.py) runs
the same pages in Chromium."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.serving import charts
from mltagger.serving.api import create_app
from mltagger.serving.keys import INGEST, REVIEW, create_key, revoke_key
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.sessions import expire_sessions
from mltagger.serving.store import ReviewConflict, Store, StoreError
from tests.fakes import FakePredictor, make_model_folder, write_screen
from tests.unit.serving.test_api import NEAR_COPY, SURE

UNSURE = [
    {"title": "Notes from a reading group", "description": "We met on Tuesday."},
    {"title": "A list of links we liked", "description": "Weekly picks."},
]
STATIC = Path(__file__).parents[3] / "src" / "mltagger" / "serving" / "pages" / "static"


def make_app(tagger, tmp_path, *extra: str):
    # secure_cookies off: the test client talks plain HTTP to "testserver", where a browser
    # would not send a Secure cookie either (the browser test keeps the shipped setting)
    cfg = compose_config(
        "serve",
        [f"model_dir={tmp_path / 'model'}", "api_key=null", "ui.secure_cookies=false", *extra],
    )
    return create_app(tagger, cfg)


@pytest.fixture
def app(tagger, tmp_path):
    return make_app(tagger, tmp_path)


@pytest.fixture
def keys(tagger):
    engine = tagger.store.engine
    return {
        name: create_key(engine, name, role)[1]
        for name, role in (("alice", REVIEW), ("bob", REVIEW), ("feeder", INGEST))
    }


def add(tagger, item: dict) -> int:
    (out,) = tagger.add([prepare(**item)], source="test", policy="flag")
    assert out.stored
    return out.item_id


def token(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def browser(app) -> TestClient:
    return TestClient(app, follow_redirects=True)


def log_in(client: TestClient, key: str, **pending: str):
    page = client.get("/ui/login")
    form = {"csrf": token(page.text), "key": key, "next": "/ui/review"}
    form.update({f"pending_{k}": v for k, v in pending.items()})
    return client.post("/ui/login", data=form)


def card_form(html: str) -> dict:
    """The hidden fields of the decision form on a review card."""
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def test_pages_need_a_login_and_a_review_role(app, keys):
    c = browser(app)
    r = c.get("/ui/review?order=reported", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Freview%3Forder%3Dreported"
    r = log_in(c, "not-a-key")
    assert r.status_code == 401 and "wrong or revoked" in r.text
    assert 'aria-invalid="true"' in r.text  # the error sits at the key field
    r = log_in(c, keys["feeder"])
    assert r.status_code == 403 and "role ingest" in r.text
    r = log_in(c, keys["alice"])
    assert r.status_code == 200 and r.url.path == "/ui/review"
    assert "alice (review)" in r.text
    assert c.get("/ui/health").status_code == 200


def test_the_next_page_after_login_stays_on_this_site(app, keys):
    c = browser(app)
    page = c.get("/ui/login?next=//evil.example/x")
    assert 'name="next" value="/ui/review"' in page.text
    r = c.post(
        "/ui/login",
        data={"csrf": token(page.text), "key": keys["alice"], "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/review"


def test_a_revoked_key_or_a_logout_ends_the_session(app, tagger, keys):
    c = browser(app)
    r = log_in(c, keys["alice"])
    csrf = token(r.text)
    assert c.post("/ui/logout", data={"csrf": "forged"}).status_code == 403  # still logged in
    assert c.get("/ui/review", follow_redirects=False).status_code == 200
    c.post("/ui/logout", data={"csrf": csrf})
    assert c.get("/ui/review", follow_redirects=False).status_code == 303
    log_in(c, keys["bob"])
    assert c.get("/ui/review", follow_redirects=False).status_code == 200
    revoke_key(tagger.store.engine, "bob")
    assert c.get("/ui/review", follow_redirects=False).status_code == 303


def test_each_decision_is_stored_with_the_reviewers_name(app, tagger, keys):
    u0, sure, near, u1 = (add(tagger, it) for it in (UNSURE[0], SURE, NEAR_COPY, UNSURE[1]))
    c = browser(app)
    page = log_in(c, keys["alice"]).text
    assert UNSURE[0]["title"] in page and "not sure enough" in page
    fields = card_form(page)
    hx = {"HX-Request": "true"}
    r = c.post(f"/ui/review/{u0}", data={**fields, "decision": "tag:mlops"}, headers=hx)
    assert r.status_code == 200 and "<html" not in r.text  # a fragment for htmx
    assert f"Saved: item {u0} → mlops (by alice)" in r.text
    assert NEAR_COPY["title"] in r.text and f"It resembles item #{sure}" in r.text
    # a typed id that is no stored item: the error is shown at the field, nothing stored
    r = c.post(
        f"/ui/review/{near}",
        data={**card_form(r.text), "decision": "duplicate", "duplicate_of": "99"},
        headers=hx,
    )
    assert r.status_code == 422 and 'id="dup-error"' in r.text
    assert tagger.store.get_item(near)["needs_review"] is True
    r = c.post(
        f"/ui/review/{near}", data={**card_form(r.text), "decision": "duplicate"}, headers=hx
    )
    held = tagger.store.get_item(near)
    assert (held["status"], held["tag"], held["duplicate_of"]) == (
        "duplicate",
        "computer-vision",
        sure,
    )
    # without JavaScript: a plain form post, then a redirect to the queue
    r = c.post(
        f"/ui/review/{u1}", data={**card_form(r.text), "decision": "reject"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/review?")
    assert f"Saved: item {u1} → not ML / spam (by alice)" in c.get(r.headers["location"]).text
    assert tagger.store.get_item(u1)["status"] == "rejected"
    # a link cannot put words of its own on the page
    assert "send your key" not in c.get("/ui/review?notice=send+your+key&saved=x").text
    rows = [
        (r["tag"], r["written_by"]) for i in (u0, near, u1) for r in tagger.store.reviews_for(i)
    ]
    assert rows == [("mlops", "alice"), ("computer-vision", "alice"), ("other", "alice")]
    # published: only what a person or the model put up, never the spam or the held copy
    active = {it["id"] for it in tagger.store.list_items("active", 50, 0)[0]}
    assert active == {u0, sure}


def test_a_decision_made_meanwhile_is_shown_never_overwritten(app, tagger, keys):
    item = add(tagger, UNSURE[0])
    alice, bob = browser(app), browser(app)
    alice_card = card_form(log_in(alice, keys["alice"]).text)
    bob_card = card_form(log_in(bob, keys["bob"]).text)
    assert (
        bob.post(f"/ui/review/{item}", data={**bob_card, "decision": "tag:time-series"}).status_code
        == 200
    )
    r = alice.post(
        f"/ui/review/{item}",
        data={**alice_card, "decision": "tag:mlops"},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 409
    assert "bob" in r.text and "time-series" in r.text and "not stored" in r.text
    assert [x["tag"] for x in tagger.store.reviews_for(item)] == ["time-series"]
    assert tagger.store.get_item(item)["tag"] == "time-series"


def test_an_expired_session_keeps_the_decision_through_the_login(app, tagger, keys):
    item = add(tagger, UNSURE[0])
    c = browser(app)
    fields = card_form(log_in(c, keys["alice"]).text)
    expire_sessions(tagger.store.engine)
    r = c.post(f"/ui/review/{item}", data={**fields, "decision": "tag:graph-learning"})
    assert r.status_code == 401 and 'id="key"' in r.text
    assert f"decision on item {item}: graph-learning" in r.text
    assert tagger.store.reviews_for(item) == []
    kept = dict(re.findall(r'name="pending_(\w+)" value="([^"]*)"', r.text))
    assert kept["decision"] == "tag:graph-learning" and kept["item"] == str(item)
    r = log_in(c, keys["alice"], **kept)
    # shown again, not stored: the login form cannot tell the reviewer's post from a forged one
    assert r.status_code == 200 and "Store this decision?" in r.text
    assert "graph-learning" in r.text and tagger.store.reviews_for(item) == []
    r = c.post(f"/ui/review/{item}", data=confirm_form(r.text))
    assert r.status_code == 200 and f"Saved: item {item} → graph-learning" in r.text
    assert [x["tag"] for x in tagger.store.reviews_for(item)] == ["graph-learning"]


def confirm_form(html: str) -> dict:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def test_a_decision_forged_by_another_site_is_never_stored_through_the_login(app, tagger, keys):
    """Finding 2: another site's page posts a decision; the browser sends no session cookie
    (SameSite=Lax), so the login form carries it. Logging in must not store it."""
    item = add(tagger, SURE)  # published, auto-tagged computer-vision
    forged = browser(app).post(
        f"/ui/review/{item}", data={"decision": "reject", "seen_review": "0"}
    )
    assert forged.status_code == 401 and tagger.store.reviews_for(item) == []
    kept = dict(re.findall(r'name="pending_(\w+)" value="([^"]*)"', forged.text))
    reviewer = browser(app)
    r = log_in(reviewer, keys["alice"], **kept)
    assert r.status_code == 200 and "Store this decision?" in r.text
    assert (
        tagger.store.reviews_for(item) == [] and tagger.store.get_item(item)["status"] == "active"
    )
    # the confirmation carries the new session's token, which no page elsewhere can read
    session = reviewer.get("/ui/review")
    assert confirm_form(r.text)["csrf"] == token(session.text) != ""


def test_writes_without_the_anti_forgery_token_are_refused(app, tagger, keys):
    item = add(tagger, UNSURE[0])
    c = browser(app)
    fields = card_form(log_in(c, keys["alice"]).text)
    for bad in ({}, {"csrf": "guess"}):
        r = c.post(
            f"/ui/review/{item}",
            data={**fields, **bad, "csrf": bad.get("csrf", ""), "decision": "tag:mlops"},
        )
        assert r.status_code == 403 and "anti-forgery" in r.text
    r = c.post(f"/ui/item/{item}", data={"correct_tag": "mlops", "csrf": "guess"})
    assert r.status_code == 403 and "nothing was stored" in r.text
    fresh = browser(app)  # no CSRF cookie at all
    page = c.get("/ui/login")
    r = fresh.post("/ui/login", data={"csrf": token(page.text), "key": keys["alice"]})
    assert r.status_code == 403
    assert tagger.store.reviews_for(item) == [] and tagger.store.feedback_for(item) == []


def test_the_report_form_shows_each_error_at_its_field(app, tagger):
    item = add(tagger, SURE)  # auto-tagged computer-vision
    c = browser(app)
    csrf = token(c.get(f"/ui/item/{item}").text)
    r = c.post(f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "vision", "comment": "x"})
    assert r.status_code == 422 and 'id="tag-error"' in r.text and "approved tags" in r.text
    assert ">x</textarea>" in r.text  # what the reader wrote is kept
    r = c.post(f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "computer-vision"})
    assert r.status_code == 422 and "the tag it has now" in r.text
    r = c.post(
        f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "mlops", "comment": "y" * 2001}
    )
    assert r.status_code == 422 and 'id="comment-error"' in r.text and "2001" in r.text
    assert tagger.store.feedback_for(item) == []
    r = c.post(f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "mlops", "comment": "  "})
    assert r.status_code == 200 and "Thank you" in r.text
    (report,) = tagger.store.feedback_for(item)
    assert (report["correct_tag"], report["comment"], report["written_by"]) == (
        "mlops",
        None,
        "public",
    )
    assert c.get("/ui/item/999").status_code == 404
    assert c.get("/ui/item/abc").status_code == 404


def test_a_reader_may_say_which_topics_also_apply(app, tagger):
    item = add(tagger, SURE)
    c = browser(app)
    page = c.get(f"/ui/item/{item}").text
    assert 'name="also" value="mlops"' in page and 'name="also" value="other"' not in page
    data = {"csrf": token(page), "correct_tag": "vision", "also": ["time-series", "other"]}
    r = c.post(f"/ui/item/{item}", data=data)  # a bad tag: the ticks are kept
    assert r.status_code == 422 and 'value="time-series" checked' in r.text
    r = c.post(f"/ui/item/{item}", data={**data, "correct_tag": "mlops"})
    assert r.status_code == 200
    (report,) = tagger.store.feedback_for(item)
    assert report["secondary_tags"] == ["time-series"]


def test_reports_are_rate_limited_per_client(tagger, tmp_path):
    app = make_app(tagger, tmp_path, "limits.public_per_minute=1", "limits.public_burst=2")
    item = add(tagger, SURE)
    c = browser(app)
    csrf = token(c.get(f"/ui/item/{item}").text)
    codes = [
        c.post(f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "mlops"}).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    r = c.post(f"/ui/item/{item}", data={"csrf": csrf, "correct_tag": "mlops"})
    assert int(r.headers["Retry-After"]) >= 1 and "Too many reports" in r.text
    assert len(tagger.store.feedback_for(item)) == 2


def test_pages_carry_security_headers_and_ship_htmx_unchanged(app):
    r = browser(app).get("/ui/login")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert "unpkg" not in r.text and "cdn" not in r.text.lower()
    js = browser(app).get("/ui/static/htmx.min.js")
    assert js.status_code == 200
    provenance = (STATIC / "PROVENANCE.md").read_text()
    assert hashlib.sha256(js.content).hexdigest() in provenance
    assert (STATIC / "htmx.LICENSE").read_text().startswith("Zero-Clause BSD")


def test_secure_cookies_and_a_plain_http_host_are_flagged_on_the_login_page(tagger, tmp_path):
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", "api_key=null"])
    app = create_app(tagger, cfg)
    r = TestClient(app, base_url="http://10.1.2.3").get("/ui/login")
    assert "Secure" in r.headers["set-cookie"] and "ui.secure_cookies=false" in r.text
    r = TestClient(app, base_url="http://127.0.0.1").get("/ui/login")
    assert "ui.secure_cookies=false" not in r.text


def test_the_pages_can_be_turned_off(tagger, tmp_path):
    app = make_app(tagger, tmp_path, "ui.enabled=false")
    assert TestClient(app).get("/ui/login").status_code == 404


def test_the_health_page_without_a_monitor_run_says_how_to_get_one(app, tagger, keys):
    add(tagger, UNSURE[0])
    c = browser(app)
    log_in(c, keys["alice"])
    r = c.get("/ui/health")
    assert r.status_code == 200 and "No monitor run yet" in r.text and "<svg" not in r.text
    assert "fake-1" in r.text
    assert "has no per_tag.json" in r.text  # a folder from before the file: said, not hidden


def test_the_health_page_shows_the_promise_per_tag_the_model_made(app, tagger, keys):
    import json

    from mltagger.training.card import per_tag_rows

    def report(precision, low, n, cov):
        return {
            "per_class": {"computer-vision": {}, "mlops": {}},
            "coverage": {
                "threshold": 0.5,
                "at_threshold": {
                    "per_class_coverage": {"computer-vision": cov, "mlops": 0.2},
                    "per_class_auto": {
                        "computer-vision": {
                            "num_auto": n,
                            "precision": precision,
                            "precision_ci95": [low, 1.0],
                        },
                        "mlops": {"num_auto": 0},
                    },
                },
            },
        }

    decision = {
        "thresholds": {"computer-vision": 0.61, "mlops": 1.01},
        "per_tag_detail": {
            "computer-vision": {"precision": 0.97, "num_auto": 80, "pooled_lower": 0.91}
        },
    }
    rows = per_tag_rows(decision, report(0.95, 0.88, 40, 0.8), report(0.7, 0.52, 20, 0.6))
    folder = tagger.predictor.folder
    (folder / "per_tag.json").write_text(json.dumps(rows))
    c = browser(app)
    log_in(c, keys["alice"])
    page = c.get("/ui/health").text
    assert "The promise per tag" in page and "Out-of-scope gate: none" in page
    row = page[page.index("<td>computer-vision</td>") :].split("</tr>")[0]
    assert "0.610" in row and '<span class="ok">95.0%</span>' in row  # test keeps it
    assert '<span class="bad">70.0%</span>' in row and "≥ 52.0% n=20" in row  # fresh breaks it
    mlops = page[page.index("<td>mlops</td>") :].split("</tr>")[0]
    assert "1.010" in mlops and mlops.count("—") >= 3  # never applied: nothing to promise


def test_the_health_page_says_whether_labels_still_pay(app, tagger, keys):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)

    def rows(version, reason, when, n=100):
        return [
            {
                "title": f"{version}-{k}",
                "description": "",
                "content_hash": f"{version}{k:062d}",
                "tag": "other",
                "tagged_by": "model",
                "model_version": version,
                "reason": reason,
                "needs_review": reason == "low_confidence",
                "created_at": when,
            }
            for k in range(n)
        ]

    store = tagger.store
    first = store.add_items(rows("m1", "low_confidence", now - timedelta(hours=2)))
    c = browser(app)
    log_in(c, keys["alice"])
    page = c.get("/ui/health").text
    assert "Are labels still paying?" in page and "Not yet measurable" in page
    for i in first[:120]:
        store.review(i, "mlops", "ana")
    store.add_items(rows("m2", "classifier", now + timedelta(hours=1)))
    page = c.get("/ui/health").text
    assert "Not yet measurable" not in page
    assert re.search(r"<strong class=\"ok\">Yes</strong>", page)
    assert "Coverage 0.0% in the first window of 100" in page and "100.0% in the latest" in page


# -- the store rules under the pages --------------------------------------------------------


def test_two_reviewers_at_once_store_exactly_one_decision(store_url, tmp_path):
    store = Store(store_url)
    try:
        (item,) = store.add_items(
            [
                {
                    "title": "t",
                    "description": "",
                    "content_hash": "h" * 64,
                    "tag": "other",
                    "tagged_by": "model",
                    "needs_review": True,
                }
            ]
        )
        results: list = []
        go = threading.Barrier(2)

        def decide(name: str, tag: str) -> None:
            go.wait()
            try:
                store.review(item, tag, name, written_by=name, seen_review=0)
                results.append(name)
            except ReviewConflict as err:
                results.append(err.other["reviewer"])

        threads = [
            threading.Thread(target=decide, args=a)
            for a in (("alice", "mlops"), ("bob", "time-series"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = store.reviews_for(item)
        assert len(stored) == 1 and results == [stored[0]["reviewer"]] * 2
    finally:
        store.close()


def test_queue_orders_and_the_reasons_items_wait(store_url):
    store = Store(store_url)
    rows = [
        {"title": "a", "confidence": 0.7, "status": "active", "reason": "low_confidence"},
        {"title": "b", "confidence": 0.2, "status": "active", "reason": "low_confidence"},
        {"title": "c", "confidence": None, "status": "duplicate", "reason": None},
        {
            "title": "d",
            "confidence": 0.95,
            "status": "active",
            "reason": "classifier",
            "audit": True,
        },
    ]
    ids = store.add_items(
        [
            {
                "description": "",
                "content_hash": f"{k:064d}",
                "tag": "other",
                "tagged_by": "model",
                "needs_review": True,
                **r,
            }
            for k, r in enumerate(rows)
        ]
    )
    store.add_feedback(ids[3], "mlops", None, "public")

    def order(name: str) -> list[str]:
        return [r["title"] for r in store.review_queue(10, 0, name)[0]]

    assert order("oldest") == ["a", "b", "c", "d"]
    assert order("least_confident") == ["b", "a", "d", "c"]
    assert order("reported") == ["d", "a", "b", "c"]
    assert order("duplicates") == ["c", "a", "b", "d"]
    with pytest.raises(StoreError, match="unknown queue order"):
        store.review_queue(10, 0, "newest")
    assert store.queue_reasons() == {
        "low_confidence": 2,
        "out_of_scope": 0,
        "audit": 1,
        "near_duplicate": 1,
        "reported": 1,
    }
    store.close()


# -- the charts -----------------------------------------------------------------------------


def test_the_interval_chart_places_each_figure_and_escapes_names():
    rows = [
        {
            "tag": "<b>cv</b>",
            "signal": "audit",
            "precision": 0.5,
            "ci_low": 0.25,
            "ci_high": 0.75,
            "n": 8,
        },
        {
            "tag": "all",
            "signal": "reports",
            "precision": None,
            "ci_low": None,
            "ci_high": None,
            "n": 0,
        },
    ]
    svg = charts.interval_chart(rows, 0.85)
    assert "<b>" not in svg and "&lt;b&gt;cv&lt;/b&gt;" in svg
    left, span = 190, 680 - 190 - 20
    assert f'cx="{left + span * 0.5:.1f}"' in svg  # the dot at 50%
    assert f'x1="{left + span * 0.25:.1f}" x2="{left + span * 0.75:.1f}"' in svg  # its interval
    assert svg.count("<circle") == 2  # the legend's and the figure's; no marker for None
    assert "<title" in svg and 'role="img"' in svg


def test_the_drift_chart_marks_the_tests_past_the_alarm():
    svg = charts.pvalue_chart({"length": 0.5, "tags": 0.001}, 0.01)
    bars = re.findall(r'<rect [^>]*fill="(#[0-9A-F]+)"', svg)
    assert bars == ["#0072B2", "#B00020"]


def test_the_json_api_takes_the_same_order_and_conflict_rule(app, tagger, keys):
    first, second = add(tagger, UNSURE[0]), add(tagger, UNSURE[1])
    tagger.store.add_feedback(second, "mlops", None, "public")
    c = TestClient(app)
    h = {"X-API-Key": keys["alice"]}
    queue = c.get("/review", params={"order": "reported"}, headers=h).json()["items"]
    assert [it["id"] for it in queue] == [second, first]
    assert (queue[0]["reports"], queue[0]["last_review"]) == (1, 0)
    assert c.get("/review", params={"order": "newest"}, headers=h).status_code == 422
    r = c.post(f"/review/{first}", json={"tag": "mlops", "seen_review": 0}, headers=h)
    assert r.status_code == 200
    h_bob = {"X-API-Key": keys["bob"]}
    r = c.post(f"/review/{first}", json={"tag": "graph-learning", "seen_review": 0}, headers=h_bob)
    assert r.status_code == 409 and r.json()["decided"]["tag"] == "mlops"
    assert "in the meantime" in r.json()["detail"]
    latest = tagger.store.reviews_for(first)[-1]["id"]
    r = c.post(
        f"/review/{first}", json={"tag": "graph-learning", "seen_review": latest}, headers=h_bob
    )
    assert r.status_code == 200 and r.json()["tag"] == "graph-learning"


def test_a_session_made_in_one_worker_is_good_in_another(store_url, tmp_path):
    """Workers and replicas share sessions and the form-signing secret through the store."""
    taggers = [
        Tagger(
            FakePredictor(make_model_folder(tmp_path / f"model{k}")),
            Store(store_url),
            screen_file=write_screen(tmp_path / f"screen{k}.json"),
        )
        for k in range(2)
    ]
    try:
        one, two = (browser(make_app(t, tmp_path)) for t in taggers)
        _, key = create_key(taggers[0].store.engine, "alice", REVIEW)
        item = add(taggers[0], UNSURE[0])
        page = one.get("/ui/login")  # the login form from worker one ...
        two.cookies.update(one.cookies)
        r = two.post("/ui/login", data={"csrf": token(page.text), "key": key})  # ... sent to two
        assert r.status_code == 200 and UNSURE[0]["title"] in r.text
        one.cookies.update(two.cookies)
        fields = card_form(one.get("/ui/review").text)
        r = one.post(f"/ui/review/{item}", data={**fields, "decision": "tag:mlops"})
        assert r.status_code == 200
        assert [x["written_by"] for x in taggers[1].store.reviews_for(item)] == ["alice"]
    finally:
        for t in taggers:
            t.store.close()


def test_the_health_page_shows_the_cycle_its_banner_and_its_decisions(app, tagger, keys):
    from mltagger.serving.cycles import new_cycle, record_event, set_paused, update_cycle

    engine = tagger.store.engine
    c = browser(app)
    log_in(c, keys["alice"])
    page = c.get("/ui/health").text
    assert "No cycle has run on this store yet" in page and 'class="banner' not in page
    cyc = new_cycle(engine, "/tmp/c1", "/m/champion")
    record_event(
        engine,
        "gate",
        "recent.paired",
        "fail",
        cycle_id=cyc["id"],
        detail={"why": "coverage -0.03"},
    )
    update_cycle(
        engine,
        cyc["id"],
        status="closed",
        outcome="rejected",
        report={"why": "gate(s) tripped: ['recent.paired']", "failed_gates": ["recent.paired"]},
    )
    set_paused(engine, True, "ana", "holiday freeze")
    page = c.get("/ui/health").text
    assert 'class="banner bad"' in page and "Cycle 1 rejected" in page
    assert "on recent.paired" in page
    assert 'class="banner warn"' in page and "holiday freeze" in page
    row = page[page.index("gate recent.paired") :].split("</tr>")[0]
    assert "fail" in row and "coverage -0.03" in row


def test_the_card_sets_secondary_tags_from_its_also_boxes(app, tagger, keys):
    """The boxes show the item's secondary tags ticked; what is ticked when a tag button is
    pressed replaces them (the fallback tag is never offered as a secondary one)."""
    item = add(tagger, UNSURE[0])
    c = browser(app)
    page = log_in(c, keys["alice"]).text
    assert 'name="also" value="time-series"' in page and 'name="also" value="other"' not in page
    fields = card_form(page)
    also = ["time-series", "graph-learning", "other"]  # `other` is dropped
    c.post(f"/ui/review/{item}", data={**fields, "decision": "tag:mlops", "also": also})
    assert tagger.store.get_item(item)["secondary_tags"] == ["graph-learning", "time-series"]
    assert tagger.store.reviews_for(item)[-1]["secondary_tags"] == [
        "graph-learning",
        "time-series",
    ]


def test_a_discover_proposal_is_one_admin_click_from_a_pending_tag(app, tagger, keys):
    """The health page lists open proposals; only an admin sees and may press the buttons;
    accepting adds the tag as pending (the model's answers do not change)."""
    from mltagger.serving.keys import ADMIN
    from mltagger.serving.tag_list import TagList
    from mltagger.serving.tag_proposals import add_proposals, list_proposals

    engine = tagger.store.engine
    proposal = {"name": "recommender-systems", "keywords": ["recommender", "ranking"],
                "size": 41, "growth": 0.4, "examples": [{"id": 1, "title": "LightFM"}],
                "window": {"start": "2026-11-01", "end": "2026-12-01"}}  # fmt: skip
    (pid,) = add_proposals(engine, [proposal])
    reviewer = browser(app)
    log_in(reviewer, keys["alice"])
    page = reviewer.get("/ui/health").text
    assert "recommender-systems" in page and "LightFM" in page
    assert f"/ui/tags/proposals/{pid}/accept" not in page  # no button for a reviewer
    refused = reviewer.post(f"/ui/tags/proposals/{pid}/accept", data={"csrf": token(page)})
    assert refused.status_code == 403 and "recommender-systems" not in TagList(engine).statuses()
    admin = browser(app)
    log_in(admin, create_key(engine, "root", ADMIN)[1])
    page = admin.get("/ui/health").text
    assert f"/ui/tags/proposals/{pid}/accept" in page
    forged = admin.post(f"/ui/tags/proposals/{pid}/accept", data={"csrf": "forged"})
    assert forged.status_code == 403
    done = admin.post(f"/ui/tags/proposals/{pid}/accept", data={"csrf": token(page)})
    assert done.status_code == 200 and "as pending (by root)" in done.text
    assert TagList(engine).statuses()["recommender-systems"] == "pending"
    assert list_proposals(engine) == []  # no longer open
    again = admin.post(f"/ui/tags/proposals/{pid}/accept", data={"csrf": token(page)})
    assert "Nothing changed" in again.text
