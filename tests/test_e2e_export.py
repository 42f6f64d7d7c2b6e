"""End to end: export the tiny trained model to ONNX fp32 and int8, check parity, predict through
the exported folder without torch, and run the latency benchmark on a handful of items."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, TAGS, make_items, run_module


def export_overrides(tmp, trained, *extra: str) -> list[str]:
    items_file = tmp / "items.json"
    items_file.write_text(json.dumps(make_items()))
    return [
        f"hydra.run.dir={tmp / 'export'}",
        "data=projects",
        f"data.sources=[{{name: tiny, path: '{items_file}', sha256: null}}]",
        "data.min_freq=2",
        "data.split.val_size=0.2",
        "data.split.test_size=0.2",
        f"teacher={trained / 'run' / 'model'}",
        f"paths.models_dir={tmp / 'models'}",
        # A 2-layer model with hidden size 32 has near-uniform scores, where int8 rounding can
        # flip a top class; the bound for real models is in conf/export.yaml.
        "parity.min_agreement.int8=0.5",
        "max_f1_drop=1.0",
        *extra,
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained):
    tmp = tmp_path_factory.mktemp("export")
    proc = run_module("mltagger.export", *export_overrides(tmp, trained))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc.stdout


def test_export_writes_candidates_parity_and_table(exported):
    tmp, stdout = exported
    report = json.loads((tmp / "export" / "export.json").read_text())
    cands = report["candidates"]
    assert set(cands) == {"teacher-torch", "teacher-fp32", "teacher-int8"}
    fp32 = cands["teacher-fp32"]["parity"]
    assert fp32["label_agreement"] == 1.0 and fp32["max_prob_diff"] < 1e-4
    assert cands["teacher-int8"]["size_mb"] < cands["teacher-fp32"]["size_mb"]
    assert report["ship"] == "teacher-int8"
    assert "| teacher-int8 |" in stdout and "Shipped: **teacher-int8**" in stdout
    for name in ("teacher-fp32", "teacher-int8"):
        folder = tmp / "export" / "models" / name
        for f in ("model.onnx", "tokenizer.json", "labels.json", "inference.json", "card.md"):
            assert (folder / f).is_file(), (name, f)
        assert (tmp / "export" / name / "test" / "metrics.json").is_file()
    assert (tmp / "models" / "export").resolve() == (tmp / "export" / "models" / "teacher-int8")


def test_predict_through_the_export_never_imports_torch(exported):
    tmp, _ = exported
    folder = tmp / "export" / "models" / "teacher-int8"
    code = (
        "import json, sys\n"
        "from mltagger.cli import main\n"
        f"rc = main(['predict', '--model', {str(folder)!r}, '--title', 'Object detection'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = json.loads(proc.stdout)
    assert pred["tag"] in TAGS and pred["reason"] in ("classifier", "low_confidence")
    assert pred["model_version"].endswith("+teacher-int8")


def test_parity_below_the_bound_stops_the_export(tmp_path, trained):
    proc = run_module(
        "mltagger.export",
        *export_overrides(tmp_path, trained, "parity.min_agreement.fp32=1.01", "quantize=false"),
    )
    assert proc.returncode == 2
    assert "must not ship" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_script_on_a_handful_of_items(exported, trained):
    tmp, _ = exported
    out = tmp / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_latency.py",
            "--models",
            str(trained / "run" / "model"),
            str(tmp / "export" / "models" / "teacher-int8"),
            "--n",
            "5",
            "--data",
            "projects",
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in rows] == ["torch", "onnx"]
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in rows)
    assert "| model | backend |" in proc.stdout
