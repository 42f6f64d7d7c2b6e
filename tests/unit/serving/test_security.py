"""Regression tests for the holes a probe of the running service found (issue 29), through the
test client on a SQLite file and on a throw-away PostgreSQL (SQLite hid the NUL finding). Each
test names its finding; tests/e2e/test_security.py has the ones that need a real server (proxy
headers, timeouts) and tests/e2e/test_ui.py the browser ones (forged login decision, links)."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.serving.api import create_app
from mltagger.serving.keys import REVIEW, create_key, end_sessions, revoke_key
from mltagger.serving.metrics import METHODS
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from mltagger.serving.tables import items as items_table
from tests.fakes import FakePredictor, make_model_folder, write_screen
from tests.unit.serving.test_api import NEAR_COPY, SURE, UNSURE
from tests.unit.serving.test_web import log_in

ADMIN_KEY = "admin-key"
A = {"X-API-Key": ADMIN_KEY}
UNSTORABLE_BODIES = [
    ("POST", "/items", {"title": "Graph\x00networks"}, "title"),
    ("POST", "/items", {"title": "ok", "description": "a\x00b"}, "description"),
    ("POST", "/predict", {"items": [{"title": "x\x00"}]}, "title"),
    ("POST", "/feedback", {"item_id": 1, "correct_tag": "mlops", "comment": "\x00"}, "comment"),
    ("POST", "/review/1", {"tag": "mlops", "reviewer": "ana\x00"}, "reviewer"),
]


@contextmanager
def service(url: str, tmp_path, *extra: str, key: str | None = ADMIN_KEY):
    """The app over a store at `url`, with the config key `key`: (client, tagger)."""
    store = Store(url)
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp_path / "model")),
        store,
        screen_file=write_screen(tmp_path / "screen.json"),
    )
    cfg = compose_config(
        "serve",
        [
            f"model_dir={tmp_path / 'model'}",
            f"api_key={key}" if key else "api_key=null",
            "ui.secure_cookies=false",
            *extra,
        ],
    )
    try:
        with TestClient(create_app(tagger, cfg), follow_redirects=True) as client:
            yield client, tagger
    finally:
        store.close()


@pytest.fixture
def served(store_url, tmp_path):
    """On SQLite and PostgreSQL: for what reaches the store."""
    with service(store_url, tmp_path) as pair:
        yield pair


@pytest.fixture
def app(tmp_path):
    """On SQLite: for rules the request meets before any store call."""
    with service(f"sqlite:///{tmp_path / 'store.db'}", tmp_path) as pair:
        yield pair


def add(tagger: Tagger, item: dict) -> int:
    (out,) = tagger.add([prepare(**item)], source="ingest:drop.jsonl", written_by="feeder")
    return out.item_id


# -- 1. every invented method was a new metric series ------------------------------------------


def test_invented_methods_and_paths_add_no_metric_series(tmp_path):
    with service(f"sqlite:///{tmp_path / 'store.db'}", tmp_path) as (client, _):

        def series() -> set[str]:
            text = client.get("/metrics").text
            return {
                line.split(" ")[0] for line in text.splitlines() if line.startswith("mltagger_")
            }

        for k in range(20):
            client.request(f"M{k}", f"/made-up/{k}")
        series()  # the scrape itself is a request: its own series exist from here on
        before = series()
        for k in range(20, 220):
            assert client.request(f"INVENTED{k}" * 5, f"/made-up/{k}").status_code in (404, 405)
        after = series()
        assert after == before
        methods = set(re.findall(r'mltagger_requests_total\{method="([^"]+)"', "\n".join(after)))
        assert methods <= METHODS | {"other"} and "other" in methods
        assert len(client.get("/metrics").content) < 100_000


# -- 3. javascript:, data: and vbscript: links --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "//evil.example/x",
        "https://example.org/a b",
        "http://bank.example@evil.example/login",  # reads as the bank
        "http://[::1/x",  # no parser takes it
        "https://example.org/\n",  # Python's `$` would take it; ECMA-262's does not
        "https://ex\u00e4mple.org/",  # an international name goes in its xn-- form
    ],
)
def test_only_http_links_are_taken(app, url):
    client, tagger = app
    for path, body in (
        ("/items", {"title": "Graph networks", "url": url}),
        ("/predict", {"items": [{"title": "Graph networks", "url": url}]}),
    ):
        r = client.post(path, json=body, headers=A)
        assert r.status_code == 422 and "url" in r.json()["detail"], r.text
    assert tagger.store.count_items() == 0


def test_a_link_stored_before_the_check_is_never_handed_out(served):
    client, tagger = served
    item = add(tagger, SURE)
    with tagger.store.engine.begin() as conn:  # as an older version could have stored it
        conn.execute(
            items_table.update().where(items_table.c.id == item).values(url="javascript:alert(1)")
        )
    assert client.get(f"/items/{item}").json()["url"] is None
    assert client.get("/items").json()["items"][0]["url"] is None
    page = client.get(f"/ui/item/{item}").text
    assert "javascript:" not in page.split("<form")[0].split("</h2>")[1]
    assert 'href="javascript' not in page
    ok = client.post(
        "/items", json={"title": "Graph nets", "url": "HTTPS://example.org/x"}, headers=A
    )
    assert ok.status_code == 201 and ok.json()["item"]["url"] == "HTTPS://example.org/x"


# -- 4. a NUL character was a 500 on PostgreSQL -------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "field"), UNSTORABLE_BODIES)
def test_nul_characters_get_422_and_nothing_is_stored(served, method, path, body, field):
    client, tagger = served
    add(tagger, UNSURE)
    before = (tagger.store.count_items(), tagger.store.feedback_for(1), tagger.store.reviews_for(1))
    r = client.request(method, path, json=body, headers=A)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and "U+0000" in r.json()["detail"]
    assert "\n" not in r.json()["detail"]
    after = (tagger.store.count_items(), tagger.store.feedback_for(1), tagger.store.reviews_for(1))
    assert after == before
    # the public report form says it at the field, and stores nothing either
    page = client.get("/ui/item/1")
    if page.status_code == 200:
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        form = {"csrf": csrf, "correct_tag": "mlops", "comment": "nul\x00here"}
        r = client.post("/ui/item/1", data=form)
        assert r.status_code == 422 and "U+0000" in r.text
        assert tagger.store.feedback_for(1) == []


def test_ingest_refuses_nul_and_unsafe_links_row_by_row(served, tmp_path):
    from mltagger.serving.ingest import ingest_file

    _, tagger = served
    drop = tmp_path / "drop.jsonl"
    rows = [
        '{"title": "Graph\\u0000networks"}',
        '{"title": "Graph networks", "url": "javascript:alert(1)"}',
        '{"title": "Image segmentation", "description": "U-Net.", "url": "https://ex.org/u"}',
    ]
    drop.write_text("\n".join(rows) + "\n")
    summary = ingest_file(tagger, drop, progress=False)
    assert (summary["rejected"], summary["stored"]) == (2, 1)
    rejects = (tmp_path / "drop.rejects.jsonl").read_text()
    assert "U+0000" in rejects and "http" in rejects
    (stored,) = tagger.store.list_items()[0]
    assert stored["url"] == "https://ex.org/u"


# -- 5. a non-ASCII key was a 500; a wrong key skipped the public rate limit --------------------


def test_a_non_ascii_key_is_refused_with_401(app):
    client, _ = app
    for raw in ("é".encode("latin-1"), "clé-ü".encode(), b"\xff\xfe"):
        r = client.post("/feedback", json={"item_id": 1, "correct_tag": "mlops"},
                        headers=[(b"X-API-Key", raw)])  # fmt: skip
        assert r.status_code == 401, r.text
        assert client.get("/review", headers=[(b"X-API-Key", raw)]).status_code == 401
    login = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    r = client.post("/ui/login", data={"csrf": csrf, "key": "ключ\x00é", "next": "/ui/review"})
    assert r.status_code == 401 and "wrong or revoked" in r.text


def test_a_wrong_key_counts_against_the_public_rate_limit(store_url, tmp_path):
    extra = ("limits.public_per_minute=1", "limits.public_burst=3")
    with service(store_url, tmp_path, *extra) as (client, _):
        codes = [
            client.post(
                "/predict", json={"items": [SURE]}, headers={"X-API-Key": f"guess-{k}"}
            ).status_code
            for k in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]
        assert client.post("/predict", json={"items": [SURE]}).status_code == 429
        assert client.post("/predict", json={"items": [SURE]}, headers=A).status_code == 200


# -- 6. sessions outlived the config key; no way to end them ------------------------------------


def reviewing(client) -> bool:
    return client.get("/ui/review", follow_redirects=False).status_code == 200


def test_a_session_ends_when_the_config_key_changes(store_url, tmp_path):
    with service(store_url, tmp_path, key="first-key") as (client, _):
        assert log_in(client, "first-key").status_code == 200 and reviewing(client)
        cookies = dict(client.cookies)
    with service(store_url, tmp_path, key="second-key") as (client, _):
        client.cookies.update(cookies)
        assert not reviewing(client)  # the key it was made with is no longer the config key
    with service(store_url, tmp_path, key="first-key") as (client, _):
        client.cookies.update(cookies)
        assert reviewing(client)  # set back: the same key, the same session


def test_a_new_key_of_the_same_name_does_not_inherit_the_old_sessions(served):
    client, tagger = served
    engine = tagger.store.engine
    _, old = create_key(engine, "alice", REVIEW)
    log_in(client, old)
    assert reviewing(client)
    revoke_key(engine, "alice")
    with engine.begin() as conn:  # a name freed for reuse (keys are unique by name)
        conn.execute(sa.text("DELETE FROM api_keys WHERE name = 'alice'"))
    create_key(engine, "alice", REVIEW)
    assert not reviewing(client)


def test_ending_sessions_logs_reviewers_out(served):
    client, tagger = served
    engine = tagger.store.engine
    _, alice = create_key(engine, "alice", REVIEW)
    _, bob = create_key(engine, "bob", REVIEW)
    other = TestClient(client.app, follow_redirects=True)
    log_in(client, alice)
    log_in(other, bob)
    assert reviewing(client) and reviewing(other)
    assert end_sessions(engine, "alice") == 1
    assert not reviewing(client) and reviewing(other)
    assert end_sessions(engine) == 1
    assert not reviewing(other)


# -- 10. public reads showed what is not published ----------------------------------------------


HIDDEN = ("written_by", "audit", "shadow", "author_tag", "source", "model_tag", "scores")


def test_the_public_reads_published_items_in_their_public_fields(served):
    client, tagger = served
    engine = tagger.store.engine
    _, review_key = create_key(engine, "alice", REVIEW)
    published = add(tagger, {**SURE, "author_tag": "computer-vision"})
    held = add(tagger, NEAR_COPY)
    rejected = add(tagger, UNSURE)
    tagger.store.review(rejected, "other", written_by="alice", reject=True)
    tagger.store.add_feedback(published, "mlops", "secret note from alice", "alice")
    listing = client.get("/items").json()
    assert [it["id"] for it in listing["items"]] == [published] and listing["total"] == 1
    item = listing["items"][0]
    assert not set(HIDDEN) & set(item), item
    got = client.get(f"/items/{published}").json()
    assert not set(HIDDEN) & set(got)
    assert got["feedback"] == [
        {k: got["feedback"][0][k] for k in ("id", "item_id", "correct_tag", "previous_tag",
                                            "created_at")}
    ]  # fmt: skip
    assert "secret note" not in client.get(f"/items/{published}").text
    for hidden in (held, rejected):
        assert client.get(f"/items/{hidden}").status_code == 404
        assert client.get(f"/ui/item/{hidden}").status_code == 404
        # nor can a report find it, or put it back in front of the reviewers
        report = client.post("/feedback", json={"item_id": hidden, "correct_tag": "mlops"})
        assert report.status_code == 404 and tagger.store.feedback_for(hidden) == []
        # nor does /predict name it as the item a text repeats
        copy = NEAR_COPY if hidden == held else UNSURE
        (answer,) = client.post("/predict", json={"items": [copy]}).json()["items"]
        assert answer["duplicate"] is None, answer
    (seen,) = client.post("/predict", json={"items": [NEAR_COPY]}, headers=A).json()["items"]
    assert seen["duplicate"]["item_id"] in (published, held)  # a reviewer's key sees it
    for status in ("duplicate", "rejected"):
        r = client.get("/items", params={"status": status})
        assert r.status_code == 403 and "role review" in r.json()["detail"]
    # the people in the loop see everything
    full = client.get("/items", headers={"X-API-Key": review_key}).json()
    assert full["total"] == 3 and full["items"][-1]["written_by"] == "feeder"
    assert client.get(f"/items/{held}", headers=A).json()["status"] == "duplicate"


def test_the_public_health_shows_no_paths_hosts_or_processes(app):
    client, tagger = app
    public = client.get("/health")
    assert public.json() == {
        "status": "ok",
        "model_version": "fake-1",
        "labels": list(tagger.predictor.labels),
    }
    full = client.get("/health", headers=A).json()
    assert "store" in full and "worker_pid" in full and "duplicate_screen" in full
    _, review_key = create_key(tagger.store.engine, "alice", REVIEW)
    assert "store" not in client.get("/health", headers={"X-API-Key": review_key}).json()


# -- 11. the reviewer name was whatever the client sent -----------------------------------------


def test_a_decision_is_recorded_under_the_keys_name(app):
    client, tagger = app
    _, review_key = create_key(tagger.store.engine, "alice", REVIEW)
    item = add(tagger, UNSURE)
    r = client.post(
        f"/review/{item}", json={"tag": "mlops", "reviewer": "the CEO"},
        headers={"X-API-Key": review_key},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    (review,) = tagger.store.reviews_for(item)
    assert (review["reviewer"], review["written_by"]) == ("alice", "alice")
    tagger.store.add_feedback(item, "time-series", None, "public")  # back in the queue
    log_in(client, review_key)
    page = client.get("/ui/review").text
    assert "alice → mlops" in page and "the CEO" not in page


# -- 12. rules ran before text cleaning ---------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("\ufdfa" * 150, "characters once cleaned"),  # 150 raw, 2,700 cleaned
        ("\u202e\u202d\u2066", "is blank"),  # bidirectional controls only
        ("\u200b\u200d\u2060\ufeff", "is blank"),  # zero-width characters only
        ("\x01\x02\x1b\x7f\x9b", "is blank"),  # control characters only
        ("\u3164\u115f", "is blank"),  # Hangul fillers: letters that show nothing
        ("\ufe0f\u034f\u0301", "is blank"),  # variation selector, grapheme joiner, accent
        ("\u00a8", "is blank"),  # NFKC: a space and a combining diaeresis
    ],
)
def test_length_and_visibility_are_checked_on_the_cleaned_text(app, title, message):
    client, tagger = app
    r = client.post("/items", json={"title": title}, headers=A)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert tagger.store.count_items() == 0


def test_invisible_and_reordering_characters_are_not_stored(app):
    client, _ = app
    r = client.post(
        "/items", json={"title": "Graph \u202enetworks\u202c for \u200bmolecules\x07"}, headers=A
    )
    assert r.status_code == 201
    assert r.json()["item"]["title"] == "Graph networks for molecules"
    comment = "\u202eevil\u202c " + "ok" * 10
    fb = client.post("/feedback", json={"item_id": 1, "correct_tag": "mlops", "comment": comment})
    assert fb.status_code == 201 and fb.json()["comment"] == "evil " + "ok" * 10


# -- also: Swagger UI came from a CDN -----------------------------------------------------------


def test_the_api_docs_load_nothing_from_another_site(app):
    client, _ = app
    page = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs/static/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200
    assert client.get("/redoc").status_code == 404
