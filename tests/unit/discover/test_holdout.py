"""The held-out measurement's scoring: which cluster is the topic's, its share and purity, when
the target is met, and the parameter grid `--select` scores."""

from __future__ import annotations

import numpy as np

from mltagger.discover.clusters import ClusterParams
from mltagger.discover.holdout import HeldOut, best_cluster, grid, held_out_windows, score


def test_best_cluster_is_the_one_holding_most_of_the_topic():
    gold = np.array(["ts"] * 7 + ["other"] * 2 + ["ts"] * 2 + ["other"] * 3)
    labels = np.array([0] * 9 + [1] * 5)
    b = best_cluster(labels, gold, "ts", n_topic=10)  # one more ts item never reached the window
    assert (b["cluster"], b["held"], b["size"]) == (0, 7, 9)
    assert b["share"] == 0.7 and round(b["purity"], 4) == round(7 / 9, 4)
    assert not b["met"]  # purity 0.78 < 0.8
    labels[7] = -1  # one "other" item left as noise: 7 of 8
    assert best_cluster(labels, gold, "ts", n_topic=10)["met"]
    # the share counts the topic's items the classifier placed elsewhere as missed
    assert not best_cluster(labels, gold, "ts", n_topic=12)["met"]


def test_no_cluster_means_nothing_held():
    b = best_cluster(np.array([-1, -1]), np.array(["ts", "ts"]), "ts", 2)
    assert b["cluster"] is None and b["share"] == 0.0 and not b["met"]


def test_grid_crosses_list_values():
    params = grid([
        {"method": "hdbscan", "pca": [0, 5], "min_cluster_size": [5, 8], "min_samples": [None]},
        {"method": "kmeans", "items_per_cluster": 30},
    ])  # fmt: skip
    assert len(params) == 5
    assert ClusterParams(method="hdbscan", pca=5, min_cluster_size=8) in params
    assert params[-1] == ClusterParams(method="kmeans", items_per_cluster=30)


def _split(rng, n_per, centres, tags):
    x = np.concatenate([c + 0.05 * rng.normal(size=(n_per, len(c))) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(tags, n_per)


def test_a_topic_the_classifier_never_saw_reaches_the_window_and_one_cluster():
    rng = np.random.default_rng(0)
    tags = np.array(["cv", "nlp", "other", "ts"])
    centres = np.eye(8)[:4]
    emb, gold = {}, {}
    for name in ("train", "val", "fresh"):
        emb[name], gold[name] = _split(rng, 20, centres, tags)
    windows = held_out_windows(emb, gold, "fresh", precision=0.85, c=10.0)
    assert [w.topic for w in windows] == ["cv", "nlp", "ts"]
    result = score(
        windows, ClusterParams(method="kmeans", items_per_cluster=20, min_cluster_size=5)
    )
    for t in result["topics"]:
        # the held-out topic lands in `other` or review, and clusters apart from `other`
        assert t["in_window"] == t["n_topic"] == 20 and t["met"], t
    assert result["met"] == 3


def test_score_counts_met_topics():
    x = np.concatenate([np.eye(4)[[0]].repeat(6, 0), np.eye(4)[[1]].repeat(6, 0)])
    w = HeldOut("ts", x, np.array(["ts"] * 6 + ["other"] * 6), 6, 0.5, 0.9)
    r = score([w], ClusterParams(method="kmeans", items_per_cluster=6, min_cluster_size=2))
    assert r["met"] == 1 and r["topics"][0]["share"] == 1.0 and r["topics"][0]["purity"] == 1.0
