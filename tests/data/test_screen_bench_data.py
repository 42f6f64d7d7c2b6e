"""The duplicate benchmark's shipped data: the registry rows are the ones the build report names,
and the benchmark built from them keeps its promises (queries are new, copies point at stored
originals, both splits are filled)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import content_hash
from mltagger.screen.bench_data import REGISTRY_FILE, REPORT_FILE, load_bench
from mltagger.screen.fitting import load_adjudicated, query_key
from mltagger.screen.pairs import CALIBRATION_FILE, load_model
from mltagger.screen.screening import url_key


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def test_the_registry_file_is_the_one_the_report_names():
    report = json.loads(resolve_path(REPORT_FILE).read_text())
    sha = hashlib.sha256(resolve_path(REGISTRY_FILE).read_bytes()).hexdigest()
    assert sha == report["sha256"]


def test_stores_queries_and_copies_keep_their_promises(bench):
    assert {k: len(v) for k, v in bench.stores.items()} == {"all": 100_000, "ml": 100_000}
    assert len(bench.queries) >= 900 and len(bench.copies) >= 1400
    for name, store in bench.stores.items():
        hashes = {content_hash(it["title"], it["description"] or "") for it in store}
        # no query is an exact copy of a stored item: they are new by construction
        assert not [
            q for q in bench.queries if content_hash(q["title"], q["description"] or "") in hashes
        ], name
        titles = {it["title"].lower() for it in store if it.get("source") == "registry"}
        assert not [
            q for q in bench.queries if q["source"] == "registry" and q["title"].lower() in titles
        ], name
    for c in bench.copies:  # each copy names its stored original
        orig = bench.stores["all"][c["of"]]
        assert bench.stores["ml"][c["of"]] is orig
        if c["kind"] == "relisted_with_link":
            assert url_key(c["url"]) == url_key(orig["url"]) is not None
    assert Counter(q["split"] for q in bench.queries).keys() == {"a", "b"}
    kinds = Counter((c["kind"], c["split"]) for c in bench.copies)
    assert all(kinds[(k, s)] >= 80 for k, _ in kinds for s in "ab")


def test_adjudicated_copies_are_benchmark_queries_and_the_screen_is_calibrated(bench):
    keys = {query_key(q) for q in bench.queries}
    adjudicated = load_adjudicated()
    assert adjudicated and set(adjudicated) <= keys
    shipped = json.loads(resolve_path(CALIBRATION_FILE).read_text())
    model = load_model(resolve_path(CALIBRATION_FILE))
    assert 0.0 < model.threshold < 1.0 and 0.0 <= model.floor < 1.0
    # the shipped screen's own figures, on split b at 100k: the targets
    fd = {(r["store"], r["stored"]): r["rate"] for r in shipped["false_duplicates"]}
    assert fd[("all", 100_000)] <= 0.005 and fd[("ml", 100_000)] <= 0.005
    pooled = [
        r["recall"]
        for r in shipped["recall"]
        if r["kind"] == "edited (pooled)" and r["stored"] == 100_000
    ]
    assert min(pooled) >= 0.95
