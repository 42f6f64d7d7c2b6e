"""The out-of-scope gate scored in plain Python/numpy gives scikit-learn's own probabilities, and
survives a round trip through its file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltagger.models.gate import TextGate, char_ngrams, word_ngrams
from mltagger.training.gate import fit_gate, fit_pipeline, to_text_gate

IN = [
    "Transformer for named entity recognition in clinical notes",
    "Object detection with YOLO on drone images",
    "Graph neural network for molecule property prediction",
    "Forecasting electricity load with temporal convolutions",
    "PPO agent learns Atari games from pixels",
    "Model registry and canary deployment for ML models",
    "BERT sentiment classifier for tweets",
    "Semantic segmentation of street scenes",
] * 3
OUT = [
    "A fast JSON parser for Rust services",
    "Tailwind CSS components for React dashboards",
    "CLI to rename photos by EXIF date",
    "Free airdrop! Claim crypto tokens today",
    "Gradient boosting for tabular churn data",
    "Music generation from MIDI with a VAE",
    "SQL migration tool for PostgreSQL",
    "Weather widget for the Windows taskbar",
] * 3


@pytest.fixture(scope="module")
def fitted():
    texts = IN + OUT
    y = [True] * len(IN) + [False] * len(OUT)
    return fit_pipeline(texts, y, seed=0)


def test_numpy_gate_matches_scikit_learn(fitted):
    gate = to_text_gate(fitted)
    probe = [
        "Speculative decoding server for LLM inference",
        "graph database driver",
        "a",  # one short word: no character n-gram of length 3 but itself
        "",  # nothing at all
        "Time-series   anomaly\tdetection,  streaming",
        "Ünïcödé tokens — and émoji 🚀 in a README",
        # repeated terms: counts above 1, where sublinear tf (1 + log) differs from the count
        "graph graph graph neural network network for graph images images",
    ]
    want = fitted.predict_proba(probe)[:, 1]
    np.testing.assert_allclose(gate.in_scope(probe), want, rtol=0, atol=1e-10)
    # it learned something: the training texts fall on their side
    assert gate.in_scope(IN[:8]).min() > 0.5 > gate.in_scope(OUT[:8]).max()


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_analyzers_match_scikit_learn_on_any_text(text):
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2)).build_analyzer()
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5)).build_analyzer()
    assert sorted(word_ngrams(text)) == sorted(words(text))
    assert sorted(char_ngrams(text)) == sorted(chars(text))


def test_the_gate_file_round_trips(fitted, tmp_path):
    gate = to_text_gate(fitted)
    path = gate.save(tmp_path)
    again = TextGate.load(tmp_path)
    probe = ["LLM gateway with rate limits", "bird song classifier"]
    np.testing.assert_array_equal(again.in_scope(probe), gate.in_scope(probe))
    assert path.name == "gate.json"
    with pytest.raises(ValueError, match="gate kind 'energy'"):
        TextGate.from_dict({"kind": "energy"})


def test_a_gate_needs_both_sides():
    with pytest.raises(ValueError, match="in-scope and out-of-scope"):
        fit_gate(IN, [True] * len(IN))


def test_the_bench_times_a_shipped_gate_and_the_export_carries_it(fitted, tmp_path):
    from mltagger.benchmarks.latency import bench_gate
    from mltagger.export.onnx import copy_folder_files

    model = tmp_path / "model"
    model.mkdir()
    assert bench_gate(model, ["anything"]) == {}  # no gate.json: nothing to time
    to_text_gate(fitted).save(model)
    got = bench_gate(model, IN[:5], calls=50, warmup=2)
    assert got["gate_calls"] == 50 and 0 < got["gate_p50_ms"] < 1000
    (model / "per_tag.json").write_text("[]")
    copy_folder_files(model, tmp_path / "export")
    assert (tmp_path / "export" / "gate.json").read_text() == (model / "gate.json").read_text()
    assert (tmp_path / "export" / "per_tag.json").is_file()  # the health page reads it
