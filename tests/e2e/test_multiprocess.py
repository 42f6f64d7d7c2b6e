"""Two processes (gloo on CPU, launched like `accelerate launch`/torchrun) evaluate exactly the
items one process does: no duplicated or dropped evaluation samples, same order, same metrics.

With lr=0 the model stays at its seeded initialisation, so any difference between the runs can
only come from how evaluation is sharded and gathered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_job, tiny_train_overrides


@pytest.mark.slow  # two launches with process start-up (~40 s); kept out of the 10-minute CI
def test_two_processes_match_one(tmp_path, items_file, tiny_model_dir):
    common = [
        "logger=none",
        "trainer.max_epochs=1",
        "optim.lr=0",
        "model.eval_batch_size=3",
        "temperature_scaling=false",
        "update_latest=false",
    ]
    single = run_job(
        "train",
        *tiny_train_overrides(tmp_path / "one", items_file, tiny_model_dir, *common),
    )
    assert single.returncode == 0, single.stderr[-3000:]

    env = {
        **os.environ,
        "MLTAGGER_ROOT": str(REPO),
        "MLTAGGER_RUN_ID": "ddp",
        "OMP_NUM_THREADS": "1",
    }
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "mltagger",
            "train",
            *tiny_train_overrides(tmp_path / "two", items_file, tiny_model_dir, *common),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-4000:]
    info = json.loads((tmp_path / "two" / "run" / "run_info.json").read_text())
    assert info["num_processes"] == 2

    for split in ("val", "test"):
        one = json.loads((tmp_path / "one" / "run" / split / "metrics.json").read_text())
        two = json.loads((tmp_path / "two" / "run" / split / "metrics.json").read_text())
        ids = json.loads((tmp_path / "one" / "run" / "split.json").read_text())["ids"][split]
        assert one["num_samples"] == two["num_samples"] == len(ids)
        assert two["overall"] == one["overall"]
        assert two["confusion_matrix"] == one["confusion_matrix"]
        preds = [
            json.loads(line)["id"]
            for line in (tmp_path / "two" / "run" / split / "predictions.jsonl")
            .read_text()
            .splitlines()
        ]
        assert preds == ids
