"""End to end, tiny: `mltagger simulate-labels` replays a small pool with the tiny trained model's
encoder and writes its folder; bad arguments are one line and exit 2."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_job

# Pool items worded unlike the tiny training items (a pool row may not copy one).
WORDS = {
    "natural-language-processing": [
        "parse legal contracts into clauses",
        "rewrite emails politely",
        "spell checker for Welsh",
        "speech to text for lectures",
    ],
    "computer-vision": [
        "count cars in parking photos",
        "read licence plates from cameras",
        "segment leaves in garden pictures",
        "detect cracks in bridge images",
    ],
    "reinforcement-learning": [
        "agent learns chess by self play",
        "robot arm rewarded to grasp",
        "bandit picks headlines by clicks",
        "drone policy from reward",
    ],
    "graph-learning": [
        "GNN predicts protein contacts",
        "message passing over road networks",
        "node embeddings of citation graphs",
        "link prediction for friendships",
    ],
    "time-series": [
        "forecast rainfall for next week",
        "detect anomalies in heart beats",
        "predict store sales by day",
        "classify machine vibration series",
    ],
    "mlops": [
        "registry for model versions",
        "canary rollout of new models",
        "track experiments and metrics",
        "feature store for online serving",
    ],
}  # fmt: skip  (the tiny model has no `other` class: it is its fallback)


def pool(tmp_path) -> str:
    rows = []
    for tag, texts in WORDS.items():
        for j, text in enumerate(texts):
            k = len(rows) + 1
            rows.append({
                "id": 900000 + k, "created_on": f"2025-0{1 + j}-01",
                "title": text, "description": f"{text}, in one package.",
                "tag": tag, "also": "", "kind": "library",
                "reference": f"pypi:pool-test-{k}==1.0 (2025-0{1 + j})",
                "text_origin": "author-summary", "rule": "test fixture",
            })  # fmt: skip
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_a_tiny_replay_writes_its_folder_and_reads_the_targets(trained, tmp_path):
    data = OmegaConf.load(trained / "run" / "config.yaml").data
    data_file = tmp_path / "data.yaml"
    OmegaConf.save(data, data_file)
    out = tmp_path / "sim"
    proc = run_job(
        "simulate-labels",
        "--model", str(trained / "run" / "model"), "--data-config", str(data_file),
        "--pool", pool(tmp_path), "--pool-sha256", "",
        "--strategies", "oldest", "breaking_ties", "--seeds", "0", "1",
        "--day-size", "4", "--budget", "2", "--window", "10", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "simulation.json").read_text())
    assert result["chosen_on_first_half"] in ("oldest", "breaking_ties")
    assert set(result["second"]) == {"oldest", "breaking_ties"}
    assert len(result["second"]["oldest"]) == 2  # one list of windows per seed
    for rows in result["second"]["breaking_ties"]:
        assert sum(r["items"] for r in rows) == 12
        assert rows[-1]["labels"] <= 2 * 3  # at most the budget on each of the 3 days
    assert set(result["targets"]) >= {
        "labels_share_met",
        "quarter_gain_met",
        "window_precision_met",
    }
    assert (out / "curves_second.png").stat().st_size > 1000
    assert "default order chosen on the first half" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--strategies", "fastest"], "unknown review strategy 'fastest'; one of oldest,"),
        (["--budget", "0"], "budget must be at least 1"),
        (["--strategies", "breaking_ties"], "--strategies must include oldest"),
        (["--window", "0"], "--window must be at least 1 item"),
        (["--pool", "no/such/pool.json"], "pool file no/such/pool.json not found"),
        (["--halves", "second"], "with --halves second, --best must name the order chosen"),
        (["--gate", "mahalanobis"], "gate must be one of none, as_other, logistic, not"),
    ],
)
def test_bad_arguments_are_one_line(args, message):
    proc = run_job("simulate-labels", *args)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line


def test_the_warm_start_fine_tune_replays_and_resumes(trained, tmp_path):
    """The shipped (tiny) model keeps training on the answers; a rerun into the same folder
    reads every day back instead of training again, and decides the same."""
    data = OmegaConf.load(trained / "run" / "config.yaml").data
    data_file = tmp_path / "data.yaml"
    OmegaConf.save(data, data_file)
    out = tmp_path / "sim"
    args = (
        "--model", str(trained / "run" / "model"), "--data-config", str(data_file),
        "--pool", pool(tmp_path), "--pool-sha256", "", "--learner", "finetune",
        "--halves", "second", "--best", "breaking_ties",
        "--strategies", "oldest", "breaking_ties", "--seeds", "0",
        "--day-size", "4", "--budget", "2", "--window", "10", "--output", str(out),
    )  # fmt: skip
    proc = run_job("simulate-labels", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((out / "simulation.json").read_text())["second"]
    assert first["breaking_ties"][0][0]["passes_run"] == 3  # a pass after each of 3 days
    assert (out / "warm_start" / "second_breaking_ties_seed0" / "model_0003.pt").exists()
    proc = run_job("simulate-labels", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "simulation.json").read_text())["second"]
    for strategy in ("oldest", "breaking_ties"):
        rows, before = again[strategy][0], first[strategy][0]
        assert rows[0]["passes_run"] == 0
        assert [r["coverage"] for r in rows] == [r["coverage"] for r in before]
        assert [r["labels"] for r in rows] == [r["labels"] for r in before]


def test_a_replay_refuses_a_recipe_that_trains_on_the_pool_or_a_model_of_other_data(
    trained, tmp_path
):
    data = OmegaConf.load(trained / "run" / "config.yaml").data
    pool_file = pool(tmp_path)
    common = ["--model", str(trained / "run" / "model"), "--pool", pool_file,
              "--pool-sha256", ""]  # fmt: skip
    on_pool = OmegaConf.merge(data, {"sources": [*data.sources, {"name": "p", "path": pool_file}]})
    OmegaConf.save(on_pool, tmp_path / "on_pool.yaml")
    proc = run_job("simulate-labels", *common, "--data-config", str(tmp_path / "on_pool.yaml"))
    assert proc.returncode == 2
    assert "trains on the pool it would replay (source 'p')" in proc.stderr
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([{"id": 990001, "created_on": "2025-01-01", "title": "x y z",
                                  "description": "", "tag": "mlops"}]))  # fmt: skip
    other = OmegaConf.merge(data, {"sources": [*data.sources, {"name": "x", "path": str(extra)}]})
    OmegaConf.save(other, tmp_path / "other.yaml")
    proc = run_job("simulate-labels", *common, "--data-config", str(tmp_path / "other.yaml"))
    assert proc.returncode == 2 and "was trained on other data" in proc.stderr, proc.stderr
