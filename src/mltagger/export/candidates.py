"""Export model folders to ONNX, build the smaller and faster variants, and choose one to ship.

`make export` (`mltagger export`, config `conf/export.yaml`) takes the fine-tuned
teacher (`models/latest`) and optionally a distilled student (`make distill`), and for each:

1. exports an fp32 ONNX graph with dynamic batch and sequence axes;
2. builds every variant of `quantization.variants` from it (`mltagger.export.variants`: fused
   fp32, dynamic int8, static int8 calibrated on training texts, int8 with the parts most
   sensitive on val kept fp32, fp16);
3. checks parity with the torch model on the test split (largest probability difference, share of
   identical top classes): the fp32 graph stops the export below `parity.min_agreement.fp32`, a
   variant below its bound may not ship;
4. evaluates each with the full report (its decision rule, per tag, per slice, out-of-scope, the
   fresh set), measures how far its scores move when batched, and times every export together.

Each export is a complete model folder (tokenizer, labels, inference.json with its own val
threshold and the temperature, card.md) that `mltagger predict` and the service open with ONNX
Runtime and without torch. `models/export` points at the fastest export that passes the rule on
val (`mltagger.export.choose`), or the one `ship=` names; `export_report.md` holds the table.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import write_run_info
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.drift import build_profile
from mltagger.evaluation.metrics import Metric, summary_metrics
from mltagger.evaluation.protocol import evaluate_val_test
from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.export.choose import ShipRule, choose_fastest, quality_intervals
from mltagger.export.config_rules import check_export_config
from mltagger.export.onnx import ExportError, copy_folder_files, export_onnx, parity
from mltagger.export.report import render
from mltagger.export.variants import (
    VariantInputs,
    batch_difference,
    build_variant,
    check_variants,
    measure_speeds,
)
from mltagger.models.modelio import point_latest, read_model_metadata, write_model_metadata
from mltagger.models.predict import (
    OnnxPredictor,
    TorchPredictor,
    folder_weights_mb,
)
from mltagger.training.decision import evaluate_fresh

log = logging.getLogger(__name__)


def _evaluate(name, predictor, data, eval_cfg, out_dir: Path) -> tuple[dict, dict]:
    """Probabilities on val/test (and fresh) and the full reports under the folder's rule.

    A folder with per-tag thresholds (chosen once on out-of-fold predictions for the trained
    model) keeps them: they are applied as they are and re-checked on val (`recheck`). A folder
    with one threshold gets its own, chosen on val.
    """

    probs = {
        s: predictor.predict_proba([it["text"] for it in data.splits[s]]) for s in ("val", "test")
    }
    shipped = predictor.inference.thresholds or None
    val_report, test_report, applied = evaluate_val_test(
        data,
        predictor.labels,
        probs["val"],
        probs["test"],
        eval_cfg,
        out_dir / name,
        name,
        threshold=shipped,
        out_of_scope=predictor.stopped_splits(data.splits["val"], data.splits["test"]),
    )
    summary = {**summary_metrics(val_report, "val/"), **summary_metrics(test_report, "test/")}
    fresh_report = None
    if data.fresh:
        probs["fresh"] = predictor.predict_proba([it["text"] for it in data.fresh])
        fresh_report = evaluate_fresh(
            data, predictor.labels, probs["fresh"], eval_cfg, applied, out_dir / name, name,
            predictor.stopped(data.fresh),
        )  # fmt: skip
        summary.update(summary_metrics(fresh_report, "fresh/"))
    global_thr = val_report["coverage"]["threshold_for_target"] if shipped else applied
    out = {
        "probs": probs,
        "threshold": applied,
        "global_threshold": global_thr if global_thr is not None else float("inf"),
        "summary": summary,
        "size_mb": folder_weights_mb(predictor.folder),
        "fresh_report": fresh_report,
    }
    if shipped:
        out["recheck"] = recheck_thresholds(
            data.splits["val"], probs["val"], predictor.labels, shipped, eval_cfg
        )
    return out, test_report


def recheck_thresholds(val_items, val_probs, labels, shipped: dict, eval_cfg) -> dict:
    """The shipped per-tag thresholds against the ones this model's own val would choose.

    Val has ~30 items for a small tag, too few to choose on (that is why the thresholds come from
    out-of-fold predictions), but enough to notice an export that moved a lot: a tag is flagged
    when its own val threshold differs by more than eval.recheck_tolerance, or when its val
    precision at the shipped threshold is under the target.
    """

    target = float(eval_cfg.get("tag_precision_target", eval_cfg.precision_target))
    own = choose_tag_thresholds(
        val_probs,
        [it["tag"] for it in val_items],
        labels,
        target,
        rule=str(eval_cfg.get("tag_rule", "pooled")),
        prior_strength=float(eval_cfg.get("prior_strength", 20.0)),
    )
    tol = float(eval_cfg.get("recheck_tolerance", 0.05))
    top = np.asarray(val_probs).argmax(axis=1)
    conf = np.asarray(val_probs).max(axis=1)
    gold = np.array([it["tag"] for it in val_items], dtype=object)
    rows = {}
    for k, tag in enumerate(labels):
        auto = (top == k) & (conf >= shipped[tag])
        n = int(auto.sum())
        prec = float(np.mean(gold[auto] == tag)) if n else None
        mine = own["thresholds"][tag]
        differs = abs(mine - shipped[tag]) > tol or (prec is not None and prec < target)
        rows[tag] = {
            "shipped": float(shipped[tag]),
            "own_val": float(mine),
            "val_auto": n,
            "val_precision": prec,
            "differs": bool(differs),
        }
    return rows


def _finish_folder(folder: Path, threshold: float, name: str, source: Path) -> None:
    """The export's own val threshold (the global rule) and a version name in inference.json;
    per-tag thresholds, when the folder has them, stay as the trained model shipped them."""
    labels, inference = read_model_metadata(folder)
    write_model_metadata(
        folder,
        labels,
        replace(
            inference,
            threshold=threshold if np.isfinite(threshold) else 1.01,
            model_version=f"{inference.model_version}+{name}",
            extra={**inference.extra, "exported_from": str(source), "export": name},
        ),
    )


def _bound(cfg, name: str) -> float:
    """The parity bound of a variant: fp32's for fp32 graphs, int8's for the others."""
    precision = name.split("-", 1)[1]
    key = "fp32" if precision in ("fp32", "fused") else "int8"
    return float(cfg.parity.min_agreement[key])


def _variant_inputs(cfg, data, src: Path, fp32_val: np.ndarray, scratch: Path) -> VariantInputs:
    from transformers import AutoConfig

    model_cfg = AutoConfig.from_pretrained(src)
    qcfg = cfg.quantization
    train = [it["text"] for it in data.splits["train"]]
    rng = np.random.default_rng(0)
    picked = rng.choice(len(train), min(len(train), int(qcfg.calibration_items)), replace=False)
    return VariantInputs(
        calibration_texts=[train[i] for i in sorted(picked)],
        val_texts=[it["text"] for it in data.splits["val"]],
        val_reference=fp32_val,
        num_heads=int(model_cfg.num_attention_heads),
        hidden_size=int(model_cfg.hidden_size),
        scratch=scratch,
        per_channel=bool(qcfg.per_channel),
        reduce_range=bool(qcfg.reduce_range),
        static_reduce_range=bool(qcfg.static_reduce_range),
    )


def _measure_export(cfg, name, folder, source, data, out_dir, reference) -> tuple:
    """One export folder: the full evaluation, parity with torch and the batched-vs-alone
    difference (speed is timed for all exports together, `measure_speeds`)."""
    pred = OnnxPredictor(folder, cfg.batch_size)
    result, report = _evaluate(name, pred, data, cfg.eval, out_dir)
    result["folder"] = str(folder)
    moved = [t for t, c in result.get("recheck", {}).items() if c["differs"]]
    if moved:
        log.warning(
            "%s: on val its own per-tag thresholds would differ for %s (see the export report); "
            "the shipped ones are kept",
            name,
            ", ".join(moved),
        )
    check = parity(reference, result["probs"]["test"])
    bound = _bound(cfg, name)
    result["parity"], result["parity_ok"] = check, check["label_agreement"] >= bound
    log.info(
        "%s: label agreement %.4f with torch (bound %.3f), max prob diff %.2e",
        name, check["label_agreement"], bound, check["max_prob_diff"],
    )  # fmt: skip
    if not result["parity_ok"] and name.endswith("-fp32"):
        raise ExportError(
            f"{name}: only {check['label_agreement']:.2%} of test items keep the torch "
            f"model's top class (bound {bound:.2%}, max probability difference "
            f"{check['max_prob_diff']:.3f}); this export must not ship"
        )
    val_texts = [it["text"] for it in data.splits["val"]]
    result["batch_diff"] = batch_difference(folder, val_texts[: int(cfg.latency.batch_items)])
    _finish_folder(folder, result["global_threshold"], name, source)
    build_profile(
        OnnxPredictor(folder, cfg.batch_size),
        data.splits["val"],
        [it["text"] for it in data.splits["train"]],
    ).save(folder)
    return result, report


def export_candidates(cfg) -> dict:
    """Every candidate: the torch reference, ONNX fp32, and each configured variant (for the
    teacher and the student), measured side by side."""

    check_export_config(cfg)
    variants = check_variants(list(cfg.quantization.variants)) if cfg.quantize else []
    out_dir = Path(cfg.paths.output_dir)
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    tests = [it["text"] for it in data.splits["test"]]
    calls = int(cfg.latency.calls)
    speed_texts = [tests[i % len(tests)] for i in range(calls)] if tests else []
    sources = {"teacher": cfg.teacher, "student": cfg.get("student")}
    results: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    exports: dict[str, Path] = {}
    for role, given in sources.items():
        if not given:
            continue
        src = resolve_path(given, cfg.paths.root_dir)
        if not src.is_dir():
            raise FileNotFoundError(
                f"{role}={given}: no such model folder"
                + (" (train one with make train)" if role == "teacher" else " (make distill)")
            )
        src = src.resolve()
        labels, _ = read_model_metadata(src)
        if labels != data.label_names():
            raise ExportError(
                f"{role} classes {labels} differ from the data's {data.label_names()}: "
                "export with the data config the model was trained on (data=...)"
            )
        torch_pred = TorchPredictor(src, cfg.batch_size)
        name = f"{role}-torch"
        log.info("evaluating %s (%s)", name, src)
        results[name], reports[name] = _evaluate(name, torch_pred, data, cfg.eval, out_dir)
        results[name]["folder"] = str(src)
        reference = results[name]["probs"]["test"]

        fp32_dir = out_dir / "models" / f"{role}-fp32"
        copy_folder_files(src, fp32_dir)
        export_onnx(src, fp32_dir, cfg.opset)
        fp32_val = OnnxPredictor(fp32_dir, cfg.batch_size).predict_proba(
            [it["text"] for it in data.splits["val"]]
        )
        inputs = _variant_inputs(cfg, data, src, fp32_val, out_dir / "models" / f".{role}-scratch")
        folders = [(f"{role}-fp32", fp32_dir)]
        for variant in variants:
            log.info("building %s-%s", role, variant)
            folder = out_dir / "models" / f"{role}-{variant}"
            folders.append((f"{role}-{variant}", build_variant(variant, fp32_dir, folder, inputs)))
        for name, folder in folders:
            results[name], reports[name] = _measure_export(
                cfg, name, folder, src, data, out_dir, reference
            )
            exports[name] = folder
        if inputs.sensitivity:
            results[f"{role}-fp32"]["int8_sensitivity"] = inputs.sensitivity
        shutil.rmtree(inputs.scratch, ignore_errors=True)
    threads = int(cfg.latency.threads) if cfg.latency.threads else None
    log.info("timing %d exports, %d interleaved rounds", len(exports), int(cfg.latency.rounds))
    speeds = measure_speeds(exports, speed_texts, threads, int(cfg.latency.rounds))
    for name, speed in speeds.items():
        results[name]["speed"] = speed
    return {"results": results, "reports": reports, "data": data}


def _ship(cfg, results: dict, labels: list[str], data) -> tuple[str, dict]:
    """The export that ships (`ship: auto`: `choose_fastest` on val) and the paired intervals
    of every export's test and fresh weighted F1 against the teacher's fp32 export."""
    exports = {n: r for n, r in results.items() if "speed" in r}
    ref = results["teacher-fp32"]["probs"]["val"].argmax(1)
    for r in exports.values():
        r["val_agreement"] = float(np.mean(r["probs"]["val"].argmax(1) == ref))
    auto = choose_fastest(exports, "teacher-fp32", ShipRule(**cfg.ship_rule))
    ship = auto if cfg.ship == "auto" else cfg.ship
    if ship not in exports:
        raise ExportError(
            f"ship={ship!r} is not an exported candidate; choose one of {list(exports)}"
        )
    gold = {"test": [it["tag"] for it in data.splits["test"]]}
    if data.fresh:
        gold["fresh"] = [it["tag"] for it in data.fresh]
    probs = {n: {k: v for k, v in r["probs"].items() if k in gold} for n, r in exports.items()}
    return ship, quality_intervals(gold, probs, labels, "teacher-fp32")


def main(cfg) -> dict:
    """make export: candidates, one comparison, models/export -> the chosen candidate."""

    out_dir = Path(cfg.paths.output_dir)
    out = export_candidates(cfg)
    results, reports = out["results"], out["reports"]
    write_run_info(out_dir, cfg, out["data"].manifest())
    ship, intervals = _ship(cfg, results, out["data"].label_names(), out["data"])
    teacher_f1 = results["teacher-torch"]["summary"]["test/" + Metric.F1_WEIGHTED]
    shipped_f1 = results[ship]["summary"]["test/" + Metric.F1_WEIGHTED]
    f1_bound = {
        "teacher": teacher_f1,
        "shipped": shipped_f1,
        "max_drop": float(cfg.max_f1_drop),
        "ok": teacher_f1 - shipped_f1 <= float(cfg.max_f1_drop) + 1e-12,
    }
    text = render(results, reports, ship, f1_bound, intervals, ShipRule(**cfg.ship_rule))
    (out_dir / "export_report.md").write_text(text)
    summary = {
        name: {k: v for k, v in r.items() if k not in ("probs", "fresh_report")}
        for name, r in results.items()
    }
    for name, by_split in intervals.items():
        summary[name]["f1_vs_fp32"] = by_split
    (out_dir / "export.json").write_text(
        json.dumps({"ship": ship, "f1_bound": f1_bound, "candidates": summary}, indent=1) + "\n"
    )
    point_latest(Path(results[ship]["folder"]), resolve_path(cfg.paths.models_dir), "export")
    print(text)
    if not f1_bound["ok"]:
        log.warning(
            "the shipped export loses %.3f test weighted F1 against the teacher (bound %.3f)",
            teacher_f1 - shipped_f1,
            cfg.max_f1_drop,
        )
    print(f"Export folder: {out_dir}\nShipped model folder: {results[ship]['folder']}")
    return summary
