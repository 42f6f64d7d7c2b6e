"""`mltagger discover` against a real SQLite store: the window it reads (only `other` and
review items, no held-back duplicates, only the window's dates), the files it writes, and the
too-few-items path (one line, exit 0, nothing written)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa

from mltagger.core.config import compose_config
from mltagger.discover.job import run, window_of, window_rows
from mltagger.discover.proposals import PROPOSAL_KEYS
from mltagger.models.tag_rule import PENDING
from mltagger.serving.store import Store
from mltagger.serving.tag_list import TagList
from mltagger.serving.tag_proposals import list_proposals
from tests.conftest import run_job
from tests.fakes import bag_embedding

NOW = datetime.now(timezone.utc)


def _row(title, tag="other", reason="classifier", days_ago=1.0, status="active"):
    return {
        "title": title, "description": "", "content_hash": title, "tag": tag,
        "tagged_by": "model", "model_version": "m1", "model_tag": tag, "confidence": 0.5,
        "reason": reason, "needs_review": reason == "low_confidence", "status": status,
        "source": "test", "created_at": NOW - timedelta(days=days_ago),
    }  # fmt: skip


def _fill(url):
    rows = [_row(f"recommender ranking engine {i}", days_ago=2 + i % 5) for i in range(15)]
    rows += [
        _row(f"audio sound tagging {i}", reason="low_confidence", days_ago=20) for i in range(12)
    ]
    rows += [
        _row(f"tabular table {i}", tag="computer-vision", reason="classifier") for i in range(10)
    ]
    rows += [_row("recommender ranking engine copy", status="duplicate")]
    rows += [_row(f"recommender ranking engine old {i}", days_ago=60) for i in range(5)]
    store = Store(url)
    try:
        store.add_items(rows)
    finally:
        store.close()


def _embed(texts):
    return np.stack([bag_embedding(t.replace(".", " ")) for t in texts])


def test_window_holds_only_other_and_review_items_of_its_dates(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _fill(url)
    store = Store(url)
    try:
        rows = window_rows(store, window_of(30))
    finally:
        store.close()
    assert len(rows) == 27
    assert all(r["tag"] == "other" and r["status"] == "active" for r in rows)
    assert sum(r["needs_review"] for r in rows) == 12


def test_discover_writes_ranked_proposals_of_the_agreed_shape(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _fill(url)
    cfg = compose_config("discover", [f"store.url={url}", "discover.min_items=20",
                                      "discover.cluster.method=kmeans",
                                      "discover.cluster.items_per_cluster=13",
                                      "discover.cluster.min_cluster_size=5"])  # fmt: skip
    out = tmp_path / "run"
    assert run(cfg, output=str(out), embed=_embed) == 0
    props = json.loads((out / "proposals.json").read_text())
    assert [tuple(p) for p in props] == [PROPOSAL_KEYS] * 2
    by_name = {w: p for p in props for w in ("recommender", "audio") if w in p["name"]}
    assert by_name["recommender"]["size"] == 15 and by_name["recommender"]["growth"] == 1.0
    assert by_name["audio"]["size"] == 12 and by_name["audio"]["growth"] == -1.0
    assert props[0] is by_name["recommender"]  # growing, and larger
    assert all("audio" in e["title"] for e in by_name["audio"]["examples"])
    assert {"recommender", "ranking"} <= set(by_name["recommender"]["keywords"])
    assert len(by_name["audio"]["examples"]) == 5
    report = (out / "report.md").read_text()
    assert "27 items tagged `other` or waiting for review" in report
    assert "proposals:" in capsys.readouterr().out
    # stored as open proposals, the tag list untouched; a rerun does not list them twice
    engine = sa.create_engine(url)
    stored = list_proposals(engine)
    assert sorted(p["name"] for p in stored) == sorted(p["name"] for p in props)
    assert PENDING not in TagList(engine).statuses().values()
    assert run(cfg, output=str(tmp_path / "again"), embed=_embed) == 0
    assert len(list_proposals(engine)) == 2
    assert "2 already open" in capsys.readouterr().out
    engine.dispose()


def test_too_few_items_say_so_exit_0_and_write_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _fill(url)
    out = tmp_path / "run"
    done = run_job("discover", "--days", "30", "--output", str(out), f"store.url={url}",
                   "discover.min_items=28")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    assert (
        lines[0].startswith("27 items tagged other or waiting for review")
        and "at least 28" in lines[0]
    )
    assert not out.exists()


def test_bad_window_options_are_one_line_and_exit_2(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    done = run_job("discover", "--since", "last tuesday", f"store.url={url}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --since 'last tuesday' is not a date (YYYY-MM-DD or an ISO datetime)"
    ]
