"""The index-at-scale benchmark's own arithmetic: sizes, the exact reference, the recall figures,
and the store it fills beyond the real texts (on tiny registry lists written here)."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.core.errors import DataError, UserError
from mltagger.data.duplicates import dedup_key
from mltagger.screen.bench_data import Bench
from mltagger.screen.pairs import PairModel
from mltagger.screen.scale_bench import exact_top_k, parse_scale, recall_figures
from mltagger.screen.scale_data import build_scale_store, registry_texts
from mltagger.screen.sketch import Text, sketch_counts, unit_sketches


def test_scale_sizes_parse_with_suffixes():
    assert parse_scale("1M, 10k,100k") == [10_000, 100_000, 1_000_000]
    assert parse_scale("2500") == [2500]
    with pytest.raises(UserError):
        parse_scale("10k,lots")


def test_exact_top_k_is_brute_force_chunk_by_chunk():
    rng = np.random.default_rng(0)
    texts = [
        Text(" ".join(rng.choice(["ab", "cd", "ef", "gh", "ij", "kl"], 6))) for _ in range(300)
    ]
    counts = sketch_counts(texts).astype(np.int8)
    vecs = unit_sketches(counts)
    queries = vecs[::7] + 0.01
    pos, sims = exact_top_k(queries, counts, 250, 4, chunk=37)  # only the first 250 are stored
    full = queries @ vecs[:250].T
    assert np.allclose(sims, -np.sort(-full, axis=1)[:, :4], atol=1e-5)
    assert np.allclose(np.take_along_axis(full, pos, 1), sims, atol=1e-5) and pos.max() < 250


def test_recall_figures_count_pairs_above_the_floor_and_changed_verdicts():
    model = PairModel(np.zeros(8), 0.0, threshold=0.5, k=3, floor=0.6)
    prob = {(0, 10): 0.9, (0, 11): 0.1, (1, 20): 0.8, (1, 21): 0.7, (2, 30): 0.2}
    ref = (
        np.array([[10, 11, 12], [20, 21, -1], [30, 31, 32]]),
        np.array([[0.9, 0.7, 0.5], [0.8, 0.65, -1.0], [0.7, 0.5, 0.4]]),  # 12, 31, 32 below floor
    )
    got = (
        np.array([[11, 13, 10], [21, -1, -1], [30, 33, 34]]),
        np.array([[0.7, 0.62, 0.9], [0.65, -1.0, -1.0], [0.7, 0.2, 0.1]]),
    )
    groups = np.array(["copies", "copies", "new"])
    out = recall_figures(ref, got, groups, lambda j, i: prob.get((j, i), 0.0), model)
    # candidates above the floor: ref {10, 11}, {20, 21}, {30}; found 10, 11, 21, 30
    assert out["all"]["candidate_pairs"] == 5 and out["all"]["candidate_recall"] == 4 / 5
    # duplicates (p >= 0.5): (0, 10), (1, 20), (1, 21); found (0, 10), (1, 21)
    assert out["all"]["duplicate_pairs"] == 3 and out["all"]["duplicate_recall"] == 2 / 3
    assert out["all"]["changed_verdicts"] == 0  # query 1 is still called a duplicate (via 21)
    assert out["new"] == {
        "queries": 1,
        "candidate_pairs": 1,
        "candidate_recall": 1.0,
        "duplicate_pairs": 0,
        "duplicate_recall": 1.0,
        "changed_verdicts": 0,
        "duplicate_queries": 0,
        "verdict_recall": 1.0,
    }
    assert out["all"]["duplicate_queries"] == 2 and out["all"]["verdict_recall"] == 1.0
    got[0][1] = [-1, -1, -1]  # query 1 loses both: its verdict changes
    out = recall_figures(ref, got, groups, lambda j, i: prob.get((j, i), 0.0), model)
    assert out["copies"]["changed_verdicts"] == 1 and out["copies"]["verdict_recall"] == 1 / 2


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "pypi.tsv").write_text(
        "name\tversion\tmonth\trank\tsummary\n"
        "alpha\t1\t2024-01\t\tAlpha parses configuration files quickly\n"
        "beta\t1\t2024-01\t\tshort\n"
        "gamma\t1\t2024-02\t3\tGamma draws charts of time series in the terminal\n"
        "dup\t2\t2024-02\t\tALPHA parses configuration files, quickly!\n"
    )
    (tmp_path / "npm.tsv").write_text(
        "name\tversion\tdownloads\tsummary\n"
        "delta\t1\t5\t[tested here: installs] Delta renders markdown tables to HTML pages\n"
    )
    (tmp_path / "nuget.tsv").write_text(
        "name\tversion\tlicence\tsummary\tversions\n"
        "Epsilon\t1\tMIT\tEpsilon reads and writes spreadsheet documents\t1\n"
    )
    return tmp_path


def test_registry_texts_read_each_list_and_drop_the_lists_own_notes(registry):
    rows = list(registry_texts(registry))
    assert ("npm", "delta", "Delta renders markdown tables to HTML pages") in rows
    assert ("nuget", "Epsilon", "Epsilon reads and writes spreadsheet documents") in rows
    assert {name for _, name, _ in rows} == {"alpha", "gamma", "dup", "delta", "Epsilon"}
    with pytest.raises(DataError):
        list(registry_texts(registry / "missing"))


def test_the_store_is_benchmark_then_real_then_synthetic_distinct_and_seeded(registry):
    things = ["files", "charts", "tables", "images", "logs", "maps"]
    verbs = ["parsing", "drawing", "sorting", "checking", "merging", "cutting"]
    places = ["terminal", "browser", "notebook", "cloud", "editor", "phone"]
    base = [
        {"title": f"t{i}", "description": f"a tool for the {v} of {t} in the {p}", "url": None}
        for i, (v, t, p) in enumerate(zip(verbs, things, places, strict=True))
    ]
    query = {"title": "q", "description": "Gamma draws charts of time series in the terminal"}
    bench = Bench({"all": base}, [{**query, "source": "fresh"}], [])
    items, info = build_scale_store(bench, 30, registry, seed=1)
    again, _ = build_scale_store(bench, 30, registry, seed=1)
    assert items == again and len(items) == 30
    assert items[:6] == [{**it, "source": "benchmark"} for it in base]
    real = [it for it in items if it["source"] in ("pypi", "npm", "nuget")]
    # alpha, delta, Epsilon: gamma is a query's text, dup repeats alpha, beta is too short
    assert sorted(it["title"] for it in real) == ["Epsilon", "alpha", "delta"]
    assert info["real_registry"] == 3 and info["synthetic"] == 21
    assert [it["source"] for it in items[9:]] == ["synthetic"] * 21
    keys = [dedup_key(it["description"]) for it in items]
    assert len(set(keys)) == len(keys) and dedup_key(query["description"]) not in keys
    assert build_scale_store(bench, 2, None)[0] == base[:2]  # within the benchmark: no lists
    with pytest.raises(DataError, match="--registry"):
        build_scale_store(bench, 30, None)


def test_a_chain_with_too_few_texts_stops_with_one_line(tmp_path):
    (tmp_path / "nuget.tsv").write_text("name\tversion\tlicence\tsummary\tversions\n")
    one = {"title": "tool", "description": "sixteen quite distinct words appear here", "url": None}
    with pytest.raises(DataError, match="too few real texts"):
        build_scale_store(Bench({"all": [one]}, [], []), 50, tmp_path)
