"""make cv end to end on the tiny BERT: folds, out-of-fold predictions, per-tag thresholds, and
the model folder that ships them."""

from __future__ import annotations

import json

import pytest

from mltagger.core.errors import ConfigError, DataError
from tests.conftest import LEARN, make_learnable_items, run_job, tiny_train_overrides

# Short but learnable: a fixed 6 epochs per fold (what the ablations do on the real model).
CV_LEARN = [
    o for o in LEARN if not o.startswith(("trainer.max_epochs", "trainer.early_stopping"))
] + ["trainer.max_epochs=6", "trainer.early_stopping_patience=99"]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("cv")
    items_file = tmp / "items.json"
    items_file.write_text(json.dumps(make_learnable_items()))
    overrides = tiny_train_overrides(tmp, items_file, tiny_model_dir, "logger=wandb", *CV_LEARN)
    # A weak train-only source (like the external lists): in every fold's training part or
    # held out for the label-issue search only, never in a figure.
    weak_file = tmp / "weak.json"
    weak_file.write_text(json.dumps(make_weak_items()))
    overrides = with_weak(overrides, weak_file)
    neg_file = tmp / "negatives.json"
    neg_file.write_text(json.dumps(make_negatives()))
    overrides = [*overrides, gate_override(neg_file)]
    proc = run_job(
        "cv",
        *overrides,
        "cv.folds=2",
        "cv.seeds=[0]",
        timeout=600,
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc.stdout


def with_weak(overrides: list[str], weak_file) -> list[str]:
    """The tiny overrides with the weak source added after the tiny one."""
    return [
        o
        if not o.startswith("data.sources=")
        else o[:-1] + f", {{name: weak, path: '{weak_file}', sha256: null, split: train, "
        "weight: 0.5}]"
        for o in overrides
    ]


def gate_override(neg_file) -> str:
    """The out-of-scope gate's negatives (data=projects names none): a gate is fitted per fold,
    scored cross-fitted on the out-of-fold rows, and its threshold chosen with the topics'."""
    return f"+data.gate_negatives={{path: '{neg_file}', sha256: null}}"


def make_negatives() -> list[dict]:
    """Real-looking registry summaries of no topic (none a copy of a tiny item)."""
    texts = [
        "Terminal colour themes", "A static site generator for blogs", "Parse CSV files fast",
        "Job scheduler for cron tasks", "Rename files in bulk", "PDF invoice maker",
        "A JSON parser for Rust", "Tailwind components for React", "Weather widget",
        "SQL migrations for PostgreSQL", "Claim free crypto airdrop tokens", "Emoji picker",
    ]  # fmt: skip
    return [
        {
            "id": 800001 + k,
            "title": t.split()[0].lower() + f"-tool{k}",
            "description": t,
            "tag": "other",
            "created_on": "2025-01-01 00:00:00",
            "source": "pypi",
            "stratum": "not-ml",
            "reference": f"pypi:tool{k}==1.0",
            "text_origin": "author-summary",
        }
        for k, t in enumerate(texts)
    ]


def make_weak_items() -> list[dict]:
    """Three weakly labelled variants per topic, ids 7001+ (not copies of the learnable items)."""
    from tests.conftest import _TOPICS

    rows = []
    for tag, pairs in _TOPICS.items():
        for i in range(3):
            rows.append(
                {
                    "id": 7001 + len(rows),
                    "created_on": "2024-01-01 00:00:00",
                    "title": f"{pairs[i][0]} for beginners",
                    "description": pairs[(i + 2) % len(pairs)][1],
                    "tag": tag,
                }
            )
    return rows


def test_cv_gives_every_pool_item_one_out_of_fold_prediction(cv_run):
    tmp, stdout = cv_run
    run = tmp / "run"
    oof = json.loads((run / "oof.json").read_text())
    split = json.loads((run / "split.json").read_text())
    weak_ids = {it["id"] for it in make_weak_items()}
    # The weak source went to train only; its held-out rows are scored and marked `weak`.
    assert not weak_ids & (set(split["ids"]["val"]) | set(split["ids"]["test"]))
    weak_in_train = weak_ids & set(split["ids"]["train"])
    assert weak_in_train
    assert {r["id"] for r in oof["oof"] if r.get("weak")} == weak_in_train
    # Every row, weak ones included, carries the gate's cross-fitted in-scope probability.
    assert all(0.0 <= r["in_scope"] <= 1.0 for r in oof["oof"])
    oof["oof"] = [r for r in oof["oof"] if not r.get("weak")]
    pool = (set(split["ids"]["train"]) | set(split["ids"]["val"])) - weak_ids
    ids = [r["id"] for r in oof["oof"]]
    # Every train+val item exactly once; no test item and no fresh item.
    assert sorted(ids) == sorted(pool)
    assert not set(ids) & set(split["ids"]["test"])
    # Each fold's model never saw its held-out items: its training split excludes them.
    for k in range(2):
        fold = json.loads((run / f"seed0_fold{k}" / "split.json").read_text())
        held = {r["id"] for r in oof["oof"] if r["fold"] == k}
        assert held == set(fold["ids"]["test"])
        assert not held & (set(fold["ids"]["train"]) | set(fold["ids"]["val"]))
        assert not set(fold["ids"]["train"]) & set(split["ids"]["test"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 2 and summary["num_oof"] == len(pool)
    assert summary["num_oof_weak"] == len(weak_in_train)
    # Test and fresh scored by both fold models after the choices (reported, not chosen on).
    assert summary["heldout"]["test"]["coverage"]["n"] == 2
    assert summary["heldout"]["fresh"]["coverage"]["n"] == 2
    assert "Test and fresh, scored by each fold model" in stdout
    assert summary["global_rule"]["f1_weighted"]["n"] == 2
    assert "mean ± std" in stdout and "Per-tag thresholds" in stdout
    # Vector scaling against one temperature, measured on the held-out folds.
    assert summary["calibration"]["vector_nll"]["n"] == 2
    # Mirrored in W&B: one offline run per fold and one for the CV summary.
    assert len(list(run.rglob("offline-run-*"))) >= 3


@pytest.fixture(scope="module")
def final_run(cv_run, tiny_model_dir):
    """make train with eval.oof from the CV run and the same recipe: the model that ships."""
    tmp, _ = cv_run
    train_tmp = tmp / "final"
    train_tmp.mkdir(exist_ok=True)
    proc = run_job(
        "train",
        *with_weak(
            tiny_train_overrides(
                train_tmp, tmp / "items.json", tiny_model_dir, "logger=none", *CV_LEARN
            ),
            tmp / "weak.json",
        ),
        gate_override(tmp / "negatives.json"),
        f"eval.oof={tmp / 'run' / 'oof.json'}",
        "eval.decision=per_tag",
        "eval.behavior=false",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return train_tmp / "run", proc.stdout


@pytest.mark.slow  # a training after the CV (~20 s with the next test)
def test_cv_thresholds_ship_in_a_model_trained_with_the_same_recipe(cv_run, final_run):
    """The model folder carries the per-tag thresholds chosen on the CV's out-of-fold
    predictions, and reports fresh beside test."""
    from mltagger.models.modelio import read_model_metadata

    tmp, _ = cv_run
    run, stdout = final_run
    labels, inference = read_model_metadata(run / "model")
    chosen = json.loads((tmp / "run" / "operating_points.json").read_text())["thresholds"]
    assert sorted(inference.thresholds) == sorted(labels)
    # The gate threshold was chosen with the topic thresholds (cross-fitted, every candidate
    # reported); the topic thresholds are the CV's own when no gate was chosen.
    decision = json.loads((run / "decision.json").read_text())
    assert inference.gate_threshold == decision["gate_threshold"]
    assert len(decision["gate_choice"]["table"]) == 20 and (run / "model" / "gate.json").is_file()
    assert inference.thresholds == decision["thresholds"]
    if decision["gate_threshold"] is None:
        assert inference.thresholds == chosen
    else:  # the shipped reports are the gated rule's: stopped rows answer out_of_scope
        rows = [json.loads(x) for x in (run / "test" / "predictions.jsonl").read_text().splitlines()
                if x.strip()]  # fmt: skip
        stopped = [r for r in rows if r["reason"] == "out_of_scope"]
        assert all(r["tag"] == "other" and r["needs_review"] for r in stopped)
    assert "decision rule per_tag" in stdout
    assert (run / "fresh" / "metrics.json").is_file()
    assert "fresh" in stdout


def test_train_refuses_per_tag_thresholds_of_another_recipe(cv_run, tiny_model_dir, tmp_path):
    """The decision rule is settled before training: thresholds from another recipe's
    out-of-fold predictions are refused (per_tag) or replaced by one val threshold (auto)."""
    from mltagger.core.config import compose_config
    from mltagger.data.prepare import prepare_data
    from mltagger.training.decision import decision_rule

    tmp, _ = cv_run
    overrides = [
        o
        for o in with_weak(
            tiny_train_overrides(tmp_path, tmp / "items.json", tiny_model_dir, "logger=none"),
            tmp / "weak.json",
        )
        if not o.startswith("hydra.")
    ]
    oof = f"eval.oof={tmp / 'run' / 'oof.json'}"
    # Another recipe: one epoch instead of the CV's fixed six.
    cfg = compose_config(
        "train", [*overrides, oof, "eval.decision=per_tag", "trainer.max_epochs=1"]
    )
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    with pytest.raises(ConfigError, match="another recipe"):
        decision_rule(cfg, data, data.label_names())
    auto = compose_config("train", [*overrides, oof, "eval.decision=auto", "trainer.max_epochs=1"])
    got = decision_rule(auto, data, data.label_names())
    assert got["rule_used"] == "global" and "another recipe" in got["why"]
    # The CV's own recipe gets its thresholds.
    same = compose_config("train", [*overrides, oof, "eval.decision=per_tag", *CV_LEARN])
    assert decision_rule(same, data, data.label_names())["rule_used"] == "per_tag"
    # Out-of-fold predictions of other *data* never fall back quietly, not even under auto.
    moved = json.loads((tmp / "run" / "oof.json").read_text()) | {"data_sha256": "f" * 64}
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    for mode in ("auto", "per_tag"):
        stale = compose_config(
            "train", [*overrides, f"eval.oof={tmp_path / 'moved.json'}", f"eval.decision={mode}"]
        )
        with pytest.raises(DataError, match=r"out-of-fold predictions of other data .*make cv"):
            decision_rule(stale, data, data.label_names())


def test_fold_counts_are_checked_against_the_smallest_tag():
    from mltagger.training.cv import check_folds

    items = [{"tag": "a"}] * 10 + [{"tag": "b"}] * 3
    check_folds(3, items)
    with pytest.raises(DataError, match=r"more folds than the smallest tag has items \(b: 3\)"):
        check_folds(4, items)
    with pytest.raises(DataError, match="at least 2 folds"):
        check_folds(1, items)


@pytest.mark.parametrize(("folds", "message"), [("1", "at least 2 folds")])
def test_cv_bad_fold_count_is_one_line_exit_2(tmp_path, tiny_model_dir, folds, message):
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(make_learnable_items()))
    proc = run_job(
        "cv",
        *tiny_train_overrides(tmp_path, items_file, tiny_model_dir, "logger=none"),
        f"cv.folds={folds}",
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # needs the same extra training
def test_other_rule_and_ablation_scripts_read_a_cv_run(cv_run, final_run):
    """The studies other_rule.py and ablation.py (docs/studies/), as the docs run them, on the
    tiny CV."""
    import subprocess
    import sys

    from tests.conftest import REPO

    tmp, _ = cv_run
    # The tiny model has six classes; the `other` rules need a seventh: a hand-made file per
    # fold: topic `a` 20 of 20 right at .95; `other` 18 of 20 right at .9 (2 are `a` items).
    oof = tmp / "oof_other.json"
    rows = []
    for fold in range(2):
        for i in range(40):
            is_a = i < 20 or i % 10 == 0
            scores = {"a": 0.95, "other": 0.05} if i < 20 else {"a": 0.1, "other": 0.9}
            gold = "a" if is_a else "other"
            rows.append(
                {"id": fold * 100 + i, "gold": gold, "seed": 0, "fold": fold, "scores": scores}
            )
    oof.write_text(json.dumps({"labels": ["a", "other"], "fallback_tag": "other", "oof": rows}))
    proc = subprocess.run(
        [
            sys.executable,
            "docs/studies/other_rule.py",
            str(oof),
            "--target",
            "0.85",
            "--other-targets",
            "0.8",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    table = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")]
    by_rule = {r[1].strip(): [c.strip() for c in r[2:-1]] for r in table[1:]}
    assert list(by_rule) == ["same", "review", "other@0.8"]
    # Columns: topic coverage, topic precision, lost to `other`, out-of-scope answered `other`,
    # out-of-scope auto-tagged with a topic, all items to review.
    assert by_rule["review"][3] == "0.0%" and by_rule["review"][2] == "0.0%"
    # 18 of 20 cannot prove .85 (so the same rule never applies `other`) but can prove .8:
    # then the 2 topic items per fold among them are lost to a confident `other`.
    assert by_rule["same"][3] == "0.0%"
    assert by_rule["other@0.8"][3] == "100.0%" and by_rule["other@0.8"][2] == "9.1%"
    # 20 of the 22 topic items per fold are auto-tagged, all right.
    assert by_rule["same"][0] == "90.9%" and by_rule["same"][1] == "100.0%"
    final, _ = final_run
    proc = subprocess.run(
        [
            sys.executable,
            "docs/studies/ablation.py",
            "--row",
            f"tiny global={tmp / 'run'}:global:{final}",
            "--row",
            f"tiny per-tag={tmp / 'run'}:per_tag:{final}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| tiny global |" in proc.stdout and "| tiny per-tag |" in proc.stdout
