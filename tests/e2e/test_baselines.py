"""End to end: `python -m mltagger.baselines` on the shipped data writes a complete run folder,
and bad data stops it with the validation report (exit 2, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def run_baselines(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLTAGGER_ROOT": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mltagger", "baselines", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_baselines_write_the_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_baselines(f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Baselines compared" in proc.stdout
    assert "| rules |" in proc.stdout and "| tfidf |" in proc.stdout
    for name in ("config.yaml", "split.json", "run_info.json", "comparison.md"):
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run_info.json").read_text())
    manifest = json.loads((run_dir / "split.json").read_text())
    assert manifest["label_noise"]["action"] == "relabel" and manifest["label_noise"]["affected"]
    assert manifest["reviewed_labels"]["corrected"] == 65
    assert info["data_sha256"] == json.loads((run_dir / "split.json").read_text())["data_sha256"]
    for model in ("rules", "tfidf"):
        for split in ("val", "test"):
            folder = run_dir / model / split
            metrics = json.loads((folder / "metrics.json").read_text())
            assert set(metrics) >= {
                "overall",
                "per_class",
                "slices",
                "coverage",
                "calibration",
                "confusion_matrix",
            }
            assert {
                "short_text",
                "llm",
                "cv_transformers",
                "tutorial",
                "library",
                "tag=mlops",
                "tag=other",
                "out_of_scope",
            } <= set(metrics["slices"])
            # The default data has out-of-scope items: their report is there.
            assert metrics["scope"]["out_of_scope"]["num_samples"] > 50
            assert metrics["overall"]["num_samples"] == len(
                json.loads((run_dir / "split.json").read_text())["ids"][split]
            )
            for png in ("confusion_matrix.png", "precision_coverage.png", "reliability.png"):
                assert (folder / png).stat().st_size > 1000
        test = json.loads((run_dir / model / "test" / "metrics.json").read_text())
        assert test["coverage"]["threshold_chosen_on"] == "given"  # the val threshold
    # The TF-IDF baseline learns something real on this data.
    tfidf = json.loads((run_dir / "tfidf" / "test" / "metrics.json").read_text())
    assert tfidf["overall"]["f1_weighted"] > 0.7


def test_bad_rows_stop_the_job_with_the_report(tmp_path, raw_items):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([*raw_items, {**raw_items[0], "id": 99, "tag": "nlp"}]))
    proc = run_baselines(
        f"hydra.run.dir={tmp_path / 'run'}",
        "data=projects",
        f"data.sources=[{{name: bad, path: '{bad}', sha256: null}}]",
    )
    assert proc.returncode == 2
    assert "row 43 (id 99): tag: unknown tag 'nlp'" in proc.stderr
    assert "data.skip_invalid=true" in proc.stderr
    assert "Traceback" not in proc.stderr
