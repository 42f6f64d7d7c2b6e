"""The pure parts of `mltagger discover`: c-TF-IDF keywords and names, growth and rank, the
exact shape of a proposal, and the clustering on data whose groups are known."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mltagger.core.errors import ConfigError
from mltagger.discover.clusters import ClusterParams, cluster, drop_small
from mltagger.discover.keywords import c_tfidf_scores, class_tfidf, kebab_name
from mltagger.discover.proposals import (
    PROPOSAL_KEYS,
    Window,
    build_proposals,
    growth,
    markdown_report,
    rank,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WINDOW = Window(T0, T0 + timedelta(days=30))


def test_c_tfidf_favours_a_term_of_one_cluster_over_a_term_of_all():
    # terms: [own to cluster 0, in every cluster, own to cluster 1]
    counts = np.array([[5, 5, 0], [0, 5, 5]])
    s = c_tfidf_scores(counts)
    assert s[0, 0] > s[0, 1] and s[1, 2] > s[1, 1]
    assert s[0, 2] == 0 and s[1, 0] == 0


def test_class_tfidf_names_each_cluster_by_its_shared_words_and_skips_noise():
    texts = [
        *("recommender ranking for shops", "recommender ranking of feeds", "session recommender"),
        *("audio tagging of birds", "audio event tagging", "music audio tagging"),
        "recommender audio odd one",
    ]
    labels = [0, 0, 0, 1, 1, 1, -1]
    kw = class_tfidf(texts, labels, top_k=3, ngram_range=(1, 1))
    assert set(kw) == {0, 1}
    assert set(kw[0][:2]) == {"recommender", "ranking"}
    assert set(kw[1][:2]) == {"audio", "tagging"}
    # "ranking" is only cluster 0's; "recommender" also occurs in the noise item: less specific
    assert kw[0][0] == "ranking"
    # words of a single item never name a cluster (min_df over items)
    assert "shops" not in kw[0] and "birds" not in kw[1]


@pytest.mark.parametrize(
    "keywords, name",
    [
        (["recommender systems", "recommender", "ranking"], "recommender-systems-ranking"),
        (["Audio", "audio tagging"], "audio-tagging"),
        (["c++ kernels"], "c-kernels"),
        ([], "unnamed"),
    ],
)
def test_kebab_name(keywords, name):
    assert kebab_name(keywords) == name


def test_growth_compares_the_two_halves_of_the_window():
    early, late = T0 + timedelta(days=2), T0 + timedelta(days=20)
    assert growth([late] * 4, WINDOW) == 1.0
    assert growth([early] * 4, WINDOW) == -1.0
    assert growth([early, late], WINDOW) == 0.0
    assert growth([early, late, late, late], WINDOW) == 0.5
    assert growth([], WINDOW) == 0.0


def test_rank_puts_recent_volume_first_then_size():
    props = [
        {"name": "old-big", "size": 40, "growth": -0.5},  # 10 items in the later half
        {"name": "new-small", "size": 16, "growth": 1.0},  # 16
        {"name": "steady", "size": 30, "growth": 0.0},  # 15
        {"name": "steady-small", "size": 20, "growth": 0.5},  # 15, smaller
    ]
    assert [p["name"] for p in rank(props)] == ["new-small", "steady", "steady-small", "old-big"]


def _rows(n: int, start_id: int, day: int, word: str) -> list[dict]:
    return [
        {"id": start_id + i, "title": f"{word} item {i}", "created_at": T0 + timedelta(days=day)}
        for i in range(n)
    ]


def test_proposals_have_exactly_the_agreed_shape():
    rows = _rows(6, 1, 3, "recommender") + _rows(4, 100, 25, "audio") + _rows(1, 900, 1, "x")
    labels = np.array([0] * 6 + [1] * 4 + [-1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 8))
    x[2] = x[:6].mean(axis=0) * 3  # the most typical item of cluster 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kws = {0: ["recommender systems", "ranking"], 1: ["audio"]}
    props = build_proposals(rows, labels, x, kws, WINDOW, n_examples=3)
    assert len(props) == 2
    for p in props:
        assert tuple(p) == PROPOSAL_KEYS
        assert isinstance(p["name"], str) and isinstance(p["size"], int)
        assert isinstance(p["growth"], float) and all(isinstance(k, str) for k in p["keywords"])
        assert all(set(e) == {"id", "title"} and isinstance(e["id"], int) for e in p["examples"])
        assert p["window"] == {"start": T0.isoformat(), "end": (T0 + timedelta(30)).isoformat()}
    rec = next(p for p in props if p["name"] == "recommender-systems-ranking")
    assert rec["size"] == 6 and rec["growth"] == -1.0 and len(rec["examples"]) == 3
    assert rec["examples"][0]["id"] == 3
    audio = next(p for p in props if p["name"] == "audio")
    assert audio["size"] == 4 and audio["growth"] == 1.0
    assert props[0]["name"] == "audio"  # 4 recent items beat 0
    summary = {"window": WINDOW.as_dict(), "items": 11, "clustered": 10, "noise": 1,
               "window_growth": 0.0, "params": {}, "encoder": "e"}  # fmt: skip
    md = markdown_report(props, summary)
    assert "| 1 | audio | 4 | +1.00 |" in md and "#3 recommender item 2" in md


def _blobs(sizes, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)]
    x = np.concatenate(
        [c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, sizes, strict=True)]
    )
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth


@pytest.mark.parametrize(
    "params",
    [
        ClusterParams(method="hdbscan", min_cluster_size=5),
        ClusterParams(method="hdbscan", pca=5, min_cluster_size=5, selection="leaf"),
        ClusterParams(method="agglomerative", distance_threshold=1.0, min_cluster_size=5),
        ClusterParams(method="kmeans", items_per_cluster=15, min_cluster_size=5),
    ],
)
def test_each_method_recovers_well_separated_groups(params):
    x, truth = _blobs([15, 15, 15])
    labels = cluster(x, params)
    assert len(set(labels) - {-1}) == 3
    for k in range(3):  # each true group lies in one cluster
        assert len(set(labels[truth == k]) - {-1}) == 1


def test_too_few_rows_make_no_cluster_and_small_clusters_become_noise():
    x, _ = _blobs([3])
    assert (cluster(x, ClusterParams(min_cluster_size=5)) == -1).all()
    assert drop_small(np.array([4, 4, 4, 9, 7, 7, 7, -1]), 3).tolist() == [0, 0, 0, -1, 1, 1, 1, -1]


def test_cluster_config_is_checked():
    with pytest.raises(ConfigError, match="unknown keys"):
        ClusterParams.from_config({"method": "hdbscan", "min_size": 3})
    with pytest.raises(ConfigError, match="method"):
        ClusterParams.from_config({"method": "dbscan"})
