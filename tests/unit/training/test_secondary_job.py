"""`mltagger secondary` end to end on a small synthetic pool: it chooses on the pool's folds,
writes secondary.json where asked and a run folder, and refuses bad input in one line."""

from __future__ import annotations

import json

import numpy as np

from mltagger.models.secondary import SECONDARY_FILE, SecondaryHead
from mltagger.training.secondary_job import main
from tests.fakes import LABELS, make_model_folder


def _pool_and_oof(tmp_path, n: int = 90):
    """Items whose `also` is mlops exactly when the primary model gives mlops a second score of
    0.3 (a learnable, separable signal), others with no also."""
    rng = np.random.default_rng(0)
    pool, rows = [], []
    for i in range(n):
        tag = LABELS[i % 3]
        also = "mlops" if i % 2 and tag != "mlops" else ""
        scores = dict.fromkeys(LABELS, 0.01)
        scores[tag] = 0.95 if not also else 0.66
        if also:
            scores["mlops"] = 0.3
        total = sum(scores.values())
        pool.append({"id": 500_000 + i, "title": f"item {i} {'serve' if also else 'plain'}",
                     "description": "words " * int(rng.integers(1, 4)), "tag": tag,
                     "also": also})  # fmt: skip
        rows.append({"id": 500_000 + i, "source": "pool", "gold": tag, "fold": i % 3,
                     "scores": {t: v / total for t, v in scores.items()}})  # fmt: skip
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    (tmp_path / "oof.json").write_text(json.dumps({"labels": list(LABELS), "oof": rows}))


def test_it_chooses_on_the_folds_and_writes_the_head(tmp_path, capsys):
    _pool_and_oof(tmp_path)
    model = make_model_folder(tmp_path / "model", threshold=0.6)
    other = tmp_path / "export"
    other.mkdir()
    code = main(["--model", str(model), "--pool", str(tmp_path / "pool.json"),
                 "--oof", str(tmp_path / "oof.json"), "--fresh", str(tmp_path / "none.json"),
                 "--write", str(model), str(other), "--out", str(tmp_path / "runs"),
                 "--min-applied", "5"])  # fmt: skip
    assert code == 0
    head = SecondaryHead.load(other)
    assert (model / SECONDARY_FILE).is_file()
    # the separable signal: mlops beside an applied tag is right every time on the folds
    assert head.apply_threshold is not None and head.apply_threshold <= 0.3
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cv"]["apply"]["precision"] >= 0.85 and metrics["fresh"] is None
    assert "Shipped kind" in capsys.readouterr().out


def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().out.strip() == f"mltagger secondary: {tmp_path / 'nope'} does not exist"
    )
