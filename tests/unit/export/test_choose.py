"""Which export ships (`mltagger.export.choose`), the variant names the config may hold, and the
paired weighted-F1 interval the export report shows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mltagger.core.errors import ConfigError
from mltagger.evaluation.paired import paired_weighted_f1
from mltagger.export.choose import ShipRule, choose_fastest
from mltagger.export.quantize import block_of, most_sensitive
from mltagger.export.variants import check_variants


def row(val_f1: float, agreement: float, batch_diff: float, p50: float, parity=True) -> dict:
    return {
        "summary": {"val/f1_weighted": val_f1},
        "val_agreement": agreement,
        "batch_diff": batch_diff,
        "speed": {"p50_ms": p50},
        "parity_ok": parity,
    }


def test_the_fastest_export_within_every_bound_ships():
    rows = {
        "fp32": row(0.900, 1.0, 0.0, 3.0),
        "int8": row(0.899, 0.995, 3e-3, 1.0),  # fastest, but batching changes its answers
        "static": row(0.897, 0.992, 0.0, 1.5),
        "static-pct": row(0.893, 0.995, 0.0, 1.2),  # 0.007 below fp32 on val
        "keep": row(0.899, 0.985, 0.0, 1.1),  # agreement under 0.99
        "broken": row(0.9, 1.0, 0.0, 0.5, parity=False),
    }
    assert choose_fastest(rows, "fp32", ShipRule()) == "static"
    assert rows["static"]["why_not"] == [] and rows["fp32"]["why_not"] == []
    assert "batched differs" in rows["int8"]["why_not"][0]
    assert "val weighted F1" in rows["static-pct"]["why_not"][0]
    assert "agreement" in rows["keep"]["why_not"][0]
    assert rows["broken"]["why_not"] == ["parity with torch below the bound"]
    # a looser rule lets the faster one through
    assert choose_fastest(rows, "fp32", ShipRule(max_batch_diff=1e-2)) == "int8"


def test_fp32_ships_when_nothing_else_passes():
    rows = {"fp32": row(0.9, 1.0, 0.0, 3.0), "int8": row(0.8, 0.9, 0.1, 1.0)}
    assert choose_fastest(rows, "fp32", ShipRule()) == "fp32"


@pytest.mark.parametrize("name", ["fused", "int8", "int8-keep2", "int8-static-keep1", "fp16"])
def test_known_variants_pass(name):
    assert check_variants([name]) == [name]


@pytest.mark.parametrize("name", ["int4", "int8-keep", "int8-keepx", "bf16"])
def test_an_unknown_variant_is_one_line(name):
    with pytest.raises(ConfigError) as err:
        check_variants(["int8", name])
    assert f"{name!r} is not a variant" in str(err.value) and "\n" not in str(err.value)


def test_graph_nodes_are_named_by_their_block():
    assert block_of("/inner/bert/encoder/layer.3/attention/self/query/MatMul") == "layer.3"
    assert block_of("/inner/bert/embeddings/word_embeddings/Gather") == "embeddings"
    assert block_of("/inner/classifier/MatMul") == "classifier"
    assert block_of("/inner/Softmax") is None
    sens = {
        "layer.0": {"flips": 0.01, "mean_abs_diff": 0.002},
        "layer.5": {"flips": 0.03, "mean_abs_diff": 0.001},
        "classifier": {"flips": 0.01, "mean_abs_diff": 0.004},
    }
    assert most_sensitive(sens, 2) == ["classifier", "layer.0"]  # by mean abs change


def test_paired_weighted_f1_matches_sklearn_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 5, 400)
    a = np.where(rng.random(400) < 0.85, gold, rng.integers(0, 5, 400))
    b = np.where(rng.random(400) < 0.70, gold, rng.integers(0, 5, 400))
    r = paired_weighted_f1(gold, a, b)
    assert r["a"] == pytest.approx(f1_score(gold, a, average="weighted"))
    assert r["b"] == pytest.approx(f1_score(gold, b, average="weighted"))
    assert r["low"] < r["diff"] < r["high"] < 0  # B is clearly worse
    same = paired_weighted_f1(gold, a, a)
    assert same["diff"] == same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError):
        paired_weighted_f1(gold, a, b[:10])
