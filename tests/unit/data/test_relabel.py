"""The written relabelling rules (data.relabel): what fires, what is refused, what is recorded."""

from __future__ import annotations

import json

import pytest

from mltagger.core.errors import DataError
from mltagger.data.corrections import apply_layer, ids_digest
from mltagger.data.prepare import prepare_data
from mltagger.data.relabel import apply_rules, load_rules
from mltagger.data.validation import combined_sha256, sha256_file
from tests.conftest import REPO

TAGS = ["natural-language-processing", "mlops", "other"]

RULES = """
version: 1
rules:
  - name: serving
    from: [natural-language-processing]
    to: mlops
    all_of: ['\\bLLMs?\\b', '\\bserv(?:e|ing)\\b']
    none_of: ['\\bfine-tun\\w*']
"""


def _rules(tmp_path, text=RULES, tags=TAGS):
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    return load_rules(p, tags)


def _row(i, title, tag="natural-language-processing", source="weak"):
    return {"id": i, "title": title, "description": "", "tag": tag, "source": source}


def test_a_rule_fires_only_when_every_pattern_and_no_exclusion_matches(tmp_path):
    rules, sha = _rules(tmp_path)
    rows = [
        _row(1, "Serving LLMs fast"),  # fires
        _row(2, "llm SERVE"),  # case-insensitive
        _row(3, "LLM tokenizer"),  # one pattern missing
        _row(4, "Fine-tuning and serving LLMs"),  # excluded
        _row(5, "Serving LLMs", tag="other"),  # tag not in `from`
        _row(6, "Serving LLMs", source="gold"),  # source not named
        _row(7, "Serving LLMs", tag="mlops"),  # already the target
    ]
    out, summary = apply_rules(rows, rules, ["weak"])
    changed = {r["id"]: r for r in out if "relabel_rule" in r}
    assert sorted(changed) == [1, 2]
    assert changed[1]["tag"] == "mlops" and changed[1]["tag_weak"] == "natural-language-processing"
    assert [r["tag"] for r in out if r["id"] not in changed] == [
        "natural-language-processing",
        "natural-language-processing",
        "other",
        "natural-language-processing",
        "mlops",
    ]
    assert summary == {
        "relabelled": 2,
        "per_rule": {"serving": 2},
        "per_source": {"weak": 2},
        "moves": {"natural-language-processing -> mlops": 2},
    }
    assert sha == sha256_file(tmp_path / "rules.yaml")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("version: 2\nrules: []", "version: 1"),
        ("version: 1\nrules: []", "non-empty list"),
        ("version: 1\nrules: [{from: [other], to: mlops, all_of: [x]}]", "needs a `name`"),
        ("version: 1\nrules: [{name: a, from: [], to: mlops, all_of: [x]}]", "`from` must"),
        ("version: 1\nrules: [{name: a, from: [other], to: sports, all_of: [x]}]", "'sports'"),
        ("version: 1\nrules: [{name: a, from: [other], to: mlops, all_of: []}]", "at least one"),
        ("version: 1\nrules: [{name: a, from: [other], to: mlops, all_of: ['(']}]", "not a regul"),
        ("version: 1\nrules: [{name: a, from: [other], to: mlops, all_of: x}]", "a list of reg"),
        (
            "version: 1\nrules: [{name: a, from: [other], to: mlops, all_of: [x]},"
            " {name: a, from: [other], to: mlops, all_of: [y]}]",
            "used twice",
        ),
        ("version: 1\nrules: [: :", "not YAML"),
    ],
)
def test_a_bad_rules_file_is_one_line(tmp_path, text, says):
    with pytest.raises(DataError, match=None) as err:
        _rules(tmp_path, text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_missing_rules_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_rules(tmp_path / "nope.yaml", TAGS)


def test_the_shipped_llmops_mapping_loads_and_moves_nlp_serving_rows_to_mlops():
    tags = [
        "natural-language-processing", "computer-vision", "mlops", "reinforcement-learning",
        "graph-learning", "time-series", "other",
    ]  # fmt: skip
    rules, _ = load_rules(REPO / "data" / "mappings" / "llmops.yaml", tags)
    rows = [
        _row(1, "An LLM gateway with cost-tracking and observability"),
        _row(2, "An inference server for large language models"),
        _row(3, "An MCP server that gives LLM agents a browser"),  # agent tooling: NLP
        _row(4, "Fine-tuning LLMs and serving them"),  # building the model: NLP
        _row(5, "Attention kernels for LLM serving"),  # kernels: not this rule
    ]
    out, _ = apply_rules(rows, rules, ["weak"])
    assert [r["tag"] for r in out] == ["mlops", "mlops"] + ["natural-language-processing"] * 3


def test_prepare_data_applies_the_rules_and_folds_their_sha256_into_the_data_hash(
    tmp_path, data_cfg, raw_items
):
    weak = [
        {**_row(9001, "Serving LLMs at scale"), "created_on": "2024-01-01 00:00:00"},
        {**_row(9002, "Serving LLMs on phones"), "created_on": "2024-01-02 00:00:00"},
    ]
    for r in weak:
        r.pop("source")
        r["description"] = "a weak row about inference"
    weak_file = tmp_path / "weak.json"
    weak_file.write_text(json.dumps(weak))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    data_cfg.sources.append(
        {"name": "weak", "path": str(weak_file), "sha256": sha256_file(weak_file), "split": "train"}
    )
    plain = prepare_data(data_cfg)
    data_cfg.relabel = {"path": str(rules_file), "sha256": None, "sources": ["weak"]}
    ruled = prepare_data(data_cfg)
    train = {it["id"]: it for it in ruled.splits["train"]}
    assert train[9001]["tag"] == train[9002]["tag"] == "mlops"
    assert ruled.relabel["relabelled"] == 2 and ruled.manifest()["relabel"] == ruled.relabel
    assert plain.data_sha256 == combined_sha256(plain.sources)
    assert ruled.data_sha256 != plain.data_sha256  # a changed rule invalidates derived files
    data_cfg.relabel.sources = ["nope"]
    with pytest.raises(DataError, match="'nope' is not a data source"):
        prepare_data(data_cfg)
    data_cfg.relabel.sources = []
    with pytest.raises(DataError, match="name the data sources"):
        prepare_data(data_cfg)
    data_cfg.relabel = {"path": str(rules_file), "sha256": "0" * 64, "sources": ["weak"]}
    with pytest.raises(DataError, match="was changed"):
        prepare_data(data_cfg)


def test_the_label_issue_layer_leaves_rows_a_rule_decided_alone():
    rows = [
        {"id": 1, "tag": "mlops", "source": "weak", "relabel_rule": "serving"},
        {"id": 2, "tag": "other", "source": "weak"},
    ]
    splits = {"train": rows, "val": [], "test": []}
    sources = [{"name": "weak", "sha256": "a" * 64}]
    layer = {
        "version": 1,
        "data_sha256": "f" * 64,
        "split": {"s": 1},
        "train_ids_sha256": ids_digest(rows),
        "issues": [
            {"id": 1, "source": "weak", "tag": "mlops", "suggested": "other"},
            {"id": 2, "source": "weak", "tag": "other", "suggested": "mlops"},
        ],
    }
    out, summary = apply_layer(
        splits, layer, action="relabel", sources=["weak"], weight=1.0,
        data_sources=sources, data_sha256="f" * 64, split_config={"s": 1},
    )  # fmt: skip
    assert [it["tag"] for it in out["train"]] == ["mlops", "mlops"]
    assert summary["overruled_by_relabel_rules"] == 1 and summary["affected"] == 1
    # the whole data's fingerprint stands in for the sources' combined hash, not beside it
    with pytest.raises(DataError, match="computed for other data"):
        apply_layer(
            splits, layer, action="relabel", sources=["weak"], weight=1.0,
            data_sources=sources, data_sha256="e" * 64, split_config={"s": 1},
        )  # fmt: skip
