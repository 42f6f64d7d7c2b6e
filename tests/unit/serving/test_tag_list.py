"""The store's tag list on SQLite and PostgreSQL: seeding, admin changes with who and when,
the bad-input rules (one line, nothing changed), admitting models, and proposals that never
change the list by themselves."""

from __future__ import annotations

import pytest

from mltagger.models.tag_rule import ACTIVE, PENDING, RETIRED, RETIRING, TagListError
from mltagger.serving.store import Store
from mltagger.serving.tag_list import (
    ROLLBACK,
    BadTagName,
    Serving,
    TagConflict,
    TagList,
    UnknownTag,
    seed_tags,
)
from mltagger.serving.tag_proposals import (
    accept_proposal,
    add_proposals,
    dismiss_proposal,
    list_proposals,
)
from tests.conftest import TAGS

SERVING = Serving("fake-1", tuple(TAGS))
PROPOSAL = {
    "name": "recommender-systems",
    "keywords": ["recommendation", "ranking", "collaborative"],
    "size": 42,
    "growth": 0.3,
    "examples": [{"id": 7, "title": "A two-tower recommender"}],
    "window": {"start": "2026-01-01", "end": "2026-02-01"},
}


@pytest.fixture
def tags(store_url):
    store = Store(store_url)
    yield TagList(store.engine)
    store.close()


def test_seeded_from_the_data_config_as_active_by_system(tags):
    assert seed_tags() == TAGS
    assert tags.statuses() == dict.fromkeys(TAGS, ACTIVE)
    rows = tags.rows()
    assert {r["created_by"] for r in rows} == {"system"}
    assert all(r["created_at"] for r in rows)
    assert {e["action"] for e in tags.history(limit=100)} == {"seed"}
    TagList(tags.engine).ensure_seeded()  # a second start seeds nothing
    assert len(tags.history(limit=100)) == len(TAGS)


def test_add_retire_remove_record_who_and_when(tags):
    added = tags.add("audio", "ana", "sound, not speech")
    assert (added["status"], added["created_by"], added["description"]) == (
        PENDING,
        "ana",
        "sound, not speech",
    )
    assert tags.retire("time-series", "bo")["status"] == RETIRING
    tags.remove("audio", "bo", SERVING)
    assert "audio" not in tags.statuses()
    events = [(e["tag"], e["action"], e["actor"]) for e in tags.history(limit=3)]
    assert events == [("audio", "remove", "bo"), ("time-series", RETIRING, "bo"),
                      ("audio", "add", "ana")]  # fmt: skip
    assert all(e["at"] for e in tags.history())


@pytest.mark.parametrize(
    "change, error, words",
    [
        (lambda t: t.add("mlops", "ana"), TagConflict, "already in the list (active)"),
        (lambda t: t.add("Audio Things", "ana"), BadTagName, "kebab-case"),
        (lambda t: t.add("a" * 41, "ana"), BadTagName, "at most 40"),
        (lambda t: t.remove("mlops", "ana", SERVING), TagConflict, "serving model fake-1"),
        (lambda t: t.remove("nope", "ana", SERVING), UnknownTag, "no tag 'nope'"),
        (lambda t: t.retire("other", "ana"), TagConflict, "fallback"),
        (lambda t: t.remove("other", "ana", SERVING), TagConflict, "fallback"),
        (lambda t: t.retire("nope", "ana"), UnknownTag, "no tag"),
    ],
)
def test_bad_changes_are_one_line_and_change_nothing(tags, change, error, words):
    before, history = tags.rows(), tags.history(limit=100)
    with pytest.raises(error) as err:
        change(tags)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert tags.rows() == before and tags.history(limit=100) == history


def test_removing_a_retiring_tag_the_model_still_answers_is_refused(tags):
    tags.retire("graph-learning", "ana")
    with pytest.raises(TagConflict, match="retire it first and promote a model without it"):
        tags.remove("graph-learning", "ana", SERVING)
    assert tags.statuses()["graph-learning"] == RETIRING


def test_admit_checks_then_promotes(tags):
    tags.add("audio", "ana")
    tags.retire("time-series", "ana")
    with pytest.raises(TagListError, match=r"quantum-computing \(not in the list\)"):
        tags.admit([*TAGS, "quantum-computing"], "model q", "bo")
    with pytest.raises(TagListError, match="does not answer the active tags"):
        tags.admit(TAGS[1:], "model m", "bo")
    assert tags.statuses()["audio"] == PENDING  # refused: nothing changed
    new = [t for t in TAGS if t != "time-series"] + ["audio"]
    assert tags.admit(new, "model n", "bo") == {"audio": ACTIVE, "time-series": RETIRED}
    assert tags.history(limit=2)[0]["actor"] == "bo"
    # the old model, rolled back to: the list describes it again
    assert tags.admit(TAGS, "model o", "bo", action=ROLLBACK) == {
        "audio": PENDING,
        "time-series": RETIRING,
    }
    tags.check(TAGS, "model o")


def test_proposals_never_change_the_list_and_accept_is_one_click(tags):
    before = tags.rows()
    ids = add_proposals(tags.engine, [PROPOSAL, {**PROPOSAL, "name": "ai-policy", "size": 3}])
    assert tags.rows() == before
    assert [p["name"] for p in list_proposals(tags.engine)] == ["recommender-systems", "ai-policy"]
    assert list_proposals(tags.engine)[0]["examples"] == PROPOSAL["examples"]
    added = accept_proposal(tags, ids[0], "ana")
    assert (added["name"], added["status"], added["created_by"]) == (
        "recommender-systems",
        PENDING,
        "ana",
    )
    dismiss_proposal(tags.engine, ids[1], "ana")
    assert list_proposals(tags.engine) == []
    decided = {p["name"]: (p["status"], p["decided_by"]) for p in list_proposals(tags.engine, None)}
    assert decided == {
        "recommender-systems": ("accepted", "ana"),
        "ai-policy": ("dismissed", "ana"),
    }
    with pytest.raises(TagConflict, match="already accepted"):
        accept_proposal(tags, ids[0], "ana")


def test_a_malformed_proposal_stores_nothing(tags):
    with pytest.raises(TagListError, match="proposal 1: 'size' has the wrong type"):
        add_proposals(tags.engine, [PROPOSAL, {**PROPOSAL, "size": "many"}])
    assert list_proposals(tags.engine, None) == []
