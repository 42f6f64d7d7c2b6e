"""End to end: export the tiny trained model to ONNX fp32 and int8, check parity, predict through
the exported folder without torch, and run the latency benchmark on a handful of items."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, TAGS, export_overrides, run_job, split_by_confidence


def test_export_writes_candidates_parity_and_table(exported):
    tmp, stdout = exported
    report = json.loads((tmp / "export" / "export.json").read_text())
    cands = report["candidates"]
    exports = {"teacher-fp32", "teacher-int8", "teacher-int8-static"}
    assert set(cands) == {"teacher-torch", *exports}
    fp32 = cands["teacher-fp32"]["parity"]
    assert fp32["label_agreement"] == 1.0 and fp32["max_prob_diff"] < 1e-4
    assert cands["teacher-int8"]["size_mb"] < cands["teacher-fp32"]["size_mb"]
    # Dynamic int8 quantises activations per batch: an item's scores depend on its batch, so
    # it may not serve a micro-batching service; the static graph answers the same either way.
    assert cands["teacher-int8"]["batch_diff"] > 1e-4
    assert any("batched differs" in why for why in cands["teacher-int8"]["why_not"])
    assert cands["teacher-int8-static"]["batch_diff"] <= 1e-4
    assert cands["teacher-fp32"]["why_not"] == []
    # The fastest p50 of the exports that pass the rule ships.
    ok = [n for n in exports if not cands[n]["why_not"]]
    ship = report["ship"]
    assert ship == min(ok, key=lambda n: cands[n]["speed"]["p50_ms"])
    for name in exports:
        speed = cands[name]["speed"]
        assert 0 < speed["p50_ms"] <= speed["p99_ms"] and speed["throughput_batch32_per_s"] > 0
        f1 = cands[name]["f1_vs_fp32"]["test"]
        assert f1["low"] <= f1["diff"] <= f1["high"]
    assert cands["teacher-fp32"]["f1_vs_fp32"]["test"]["diff"] == 0.0
    assert f"| {ship} |" in stdout and "**shipped**" in stdout
    for name in exports:
        folder = tmp / "export" / "models" / name
        for f in ("model.onnx", "tokenizer.json", "labels.json", "inference.json", "card.md"):
            assert (folder / f).is_file(), (name, f)
        assert (tmp / "export" / name / "test" / "metrics.json").is_file()
    assert (tmp / "models" / "export").resolve() == (tmp / "export" / "models" / ship)
    # Fresh figures beside test for every candidate.
    assert "## Fresh 2023–2026 set, same rules" in stdout
    assert "fresh/f1_weighted" in cands["teacher-int8"]["summary"]


def test_export_carries_the_embedding_and_no_screen_of_its_own(exported, trained):
    """The ONNX graph's second output equals the torch model's mean-pooled middle layer (for
    analysis), and an export carries no duplicate-screen calibration: the screen is the store's
    (data/dedup/screen.json), so promoting a model never changes what counts as a duplicate."""
    import numpy as np

    from mltagger.models.predict import OnnxPredictor, TorchPredictor

    tmp, _ = exported
    texts = ["Object detection with YOLO", "Forecast sales with an LSTM", "a"]
    torch_pred = TorchPredictor(trained / "run" / "model")
    onnx_pred = OnnxPredictor(tmp / "export" / "models" / "teacher-fp32")
    assert onnx_pred.has_embeddings and onnx_pred.embedding_layer == torch_pred.embedding_layer == 1
    t_logits, t_emb = torch_pred.encode(texts)
    o_logits, o_emb = onnx_pred.encode(texts)
    np.testing.assert_allclose(o_logits, t_logits, atol=1e-4)
    np.testing.assert_allclose(o_emb, t_emb, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(o_emb, axis=1), 1.0, atol=1e-5)
    for name in ("teacher-fp32", "teacher-int8"):
        assert not (tmp / "export" / "models" / name / "dedup.json").exists()


def test_predict_through_the_export_never_imports_torch(exported, tmp_path):
    """The int8 export auto-tags the items the torch model is sure of and sends the unsure ones
    to review, through `mltagger predict`, without importing torch."""
    tmp, _ = exported
    folder = tmp / "export" / "models" / "teacher-int8"
    inference = json.loads((folder / "inference.json").read_text())
    teacher = json.loads((tmp / "export" / "export.json").read_text())
    sure, unsure = split_by_confidence(folder)
    items = tmp_path / "items.jsonl"
    rows = [*sure, *unsure]
    items.write_text(
        "".join(
            json.dumps({"id": k, "title": r["title"], "description": r["description"]}) + "\n"
            for k, r in enumerate(rows)
        )
    )
    out = tmp_path / "preds.jsonl"
    code = (
        "import json, sys\n"
        "from mltagger.cli import main\n"
        f"rc = main(['predict', '--model', {str(folder)!r}, '--input', {str(items)!r},"
        f" '--output', {str(out)!r}])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'scipy', 'matplotlib')"
        " if m in sys.modules]\n"
        "assert not heavy, f'predicting with an ONNX export imported {heavy}'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(preds) == len(rows) and teacher["candidates"]["teacher-int8"]
    for row, pred in zip(rows, preds, strict=True):
        assert pred["model_version"].endswith("+teacher-int8")
        assert pred["tag"] in TAGS
        if row in sure:
            assert pred["needs_review"] is False and pred["reason"] == "classifier"
            assert pred["tag"] == row["pred"]["tag"] != "other"
            assert pred["confidence"] >= inference["threshold"]
        else:
            assert pred["needs_review"] is True and pred["reason"] == "low_confidence"
            assert pred["tag"] == "other" and pred["confidence"] < inference["threshold"]


@pytest.mark.slow  # a second export (~20 s); the parity figures are unit-tested
def test_parity_below_the_bound_stops_the_export(tmp_path, trained):
    proc = run_job(
        "export",
        *export_overrides(tmp_path, trained, "parity.min_agreement.fp32=1.01", "quantize=false"),
    )
    assert proc.returncode == 2
    assert "must not ship" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # ~16 s: the latency benchmark end to end (make test-all)
def test_bench_script_on_a_handful_of_items(exported, trained):
    tmp, _ = exported
    out = tmp / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mltagger",
            "bench",
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
