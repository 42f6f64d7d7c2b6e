"""Export model folders to ONNX (fp32) and int8, check parity, and compare every candidate.

`make export` (`mltagger export`, config `conf/export.yaml`) takes the fine-tuned
teacher (`models/latest`) and optionally a distilled student (`make distill`), and for each:

1. exports an fp32 ONNX graph with dynamic batch and sequence axes;
2. quantises its weights to int8 with ONNX Runtime's dynamic quantisation (activations are
   quantised on the fly, so no calibration data is needed);
3. checks parity with the torch model on the test split (largest probability difference, share of
   identical top classes) and stops when agreement is below `parity.min_agreement`;
4. evaluates it with the full report (threshold chosen on val, per tag, per slice, out-of-scope).

Each export is a complete model folder (tokenizer, labels, inference.json with its own val
threshold and the temperature, card.md) that `mltagger predict` and the service open with ONNX
Runtime and without torch. One table compares all candidates; `models/export` points at the one
configured to ship.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import write_run_info
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.drift import build_profile
from mltagger.evaluation.markdown import comparison_table
from mltagger.evaluation.metrics import Metric, summary_metrics
from mltagger.evaluation.protocol import evaluate_val_test
from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.export.config_rules import check_export_config
from mltagger.export.onnx import ExportError, copy_folder_files, export_onnx, parity, quantize_int8
from mltagger.models.modelio import point_latest, read_model_metadata, write_model_metadata
from mltagger.models.predict import (
    ONNX_FILE,
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


def export_candidates(cfg) -> dict:
    """Every candidate: torch reference, ONNX fp32, ONNX int8 (for the teacher and the student)."""

    check_export_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    sources = {"teacher": cfg.teacher, "student": cfg.get("student")}
    results: dict[str, dict] = {}
    reports: dict[str, dict] = {}
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
        variants = [("fp32", fp32_dir)]
        if cfg.quantize:
            int8_dir = out_dir / "models" / f"{role}-int8"
            copy_folder_files(fp32_dir, int8_dir)
            quantize_int8(
                fp32_dir / ONNX_FILE,
                int8_dir / ONNX_FILE,
                per_channel=bool(cfg.quantization.per_channel),
                reduce_range=bool(cfg.quantization.reduce_range),
            )
            variants.append(("int8", int8_dir))

        for precision, folder in variants:
            name = f"{role}-{precision}"
            pred = OnnxPredictor(folder, cfg.batch_size)
            results[name], reports[name] = _evaluate(name, pred, data, cfg.eval, out_dir)
            results[name]["folder"] = str(folder)
            moved = [t for t, c in results[name].get("recheck", {}).items() if c["differs"]]
            if moved:
                log.warning(
                    "%s: on val its own per-tag thresholds would differ for %s (see the export "
                    "report); the shipped ones are kept",
                    name,
                    ", ".join(moved),
                )
            check = parity(reference, results[name]["probs"]["test"])
            results[name]["parity"] = check
            bound = float(cfg.parity.min_agreement[precision])
            log.info(
                "%s: label agreement %.4f with torch (bound %.3f), max prob diff %.2e",
                name,
                check["label_agreement"],
                bound,
                check["max_prob_diff"],
            )
            if check["label_agreement"] < bound:
                raise ExportError(
                    f"{name}: only {check['label_agreement']:.2%} of test items keep the torch "
                    f"model's top class (bound {bound:.2%}, max probability difference "
                    f"{check['max_prob_diff']:.3f}); this export must not ship"
                )
            _finish_folder(folder, results[name]["global_threshold"], name, src)
            build_profile(
                OnnxPredictor(folder, cfg.batch_size),
                data.splits["val"],
                [it["text"] for it in data.splits["train"]],
            ).save(folder)
    return {"results": results, "reports": reports, "data": data}


def choose_ship(results: dict, teacher_f1: float, max_drop: float) -> str:
    """The smallest export (weights on disk, a proxy for latency: `make bench` measures it)
    whose test weighted F1 is within `max_drop` of the torch teacher's."""
    ok = [
        name
        for name, r in results.items()
        if "parity" in r and teacher_f1 - r["summary"]["test/" + Metric.F1_WEIGHTED] <= max_drop
    ]
    if not ok:
        raise ExportError(
            f"no export is within {max_drop} test weighted F1 of the teacher; set ship=<name> "
            "to ship one anyway"
        )
    return min(ok, key=lambda n: results[n]["size_mb"])


def render(results: dict, reports: dict, ship: str, f1_bound: dict) -> str:
    """The export report: quality of every candidate in one table, then parity and size."""
    lines = [
        "# Export candidates (test split; each folder's decision rule: per-tag thresholds "
        "as trained, or one threshold chosen on val)",
        "",
        comparison_table(reports),
        "",
    ]
    fresh = {n: r["fresh_report"] for n, r in results.items() if r.get("fresh_report")}
    if fresh:
        lines += ["## Fresh 2023–2026 set, same rules", "", comparison_table(fresh), ""]
    for name, r in results.items():
        if not r.get("recheck"):
            continue
        lines += [
            f"Per-tag thresholds of **{name}** re-checked on val:",
            "",
            "| tag | shipped | its own val choice | val auto-tagged | val precision at shipped "
            "| differs |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for tag, c in r["recheck"].items():
            prec = "—" if c["val_precision"] is None else f"{c['val_precision']:.3f}"
            lines.append(
                f"| {tag} | {c['shipped']:.3f} | {c['own_val']:.3f} | {c['val_auto']} | {prec} | "
                f"{'**yes**' if c['differs'] else 'no'} |"
            )
        lines.append("")
    lines += [
        "| candidate | size (MB) | label agreement with torch | max probability difference |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        p = r.get("parity")
        lines.append(
            f"| {name} | {r['size_mb']:.1f} | "
            + (f"{p['label_agreement']:.4f} | {p['max_prob_diff']:.2e} |" if p else "— | — |")
        )
    lines += [
        "",
        f"Shipped: **{ship}** (`models/export`). Test weighted F1 {f1_bound['shipped']:.3f} vs "
        f"teacher (torch, fp32) {f1_bound['teacher']:.3f}: "
        + (
            "within the bound."
            if f1_bound["ok"]
            else f"**{f1_bound['teacher'] - f1_bound['shipped']:.3f} below, over the "
            f"{f1_bound['max_drop']:.3f} bound.**"
        ),
        "",
        "Latency: `make bench`.",
        "",
    ]
    return "\n".join(lines)


def main(cfg) -> dict:
    """make export: candidates, one comparison, models/export -> the configured candidate."""

    out_dir = Path(cfg.paths.output_dir)
    out = export_candidates(cfg)
    results, reports = out["results"], out["reports"]
    write_run_info(out_dir, cfg, out["data"].manifest())
    teacher_f1 = results["teacher-torch"]["summary"]["test/" + Metric.F1_WEIGHTED]
    ship = cfg.ship if cfg.ship != "auto" else choose_ship(results, teacher_f1, cfg.max_f1_drop)
    if ship not in results or "parity" not in results[ship]:
        raise ExportError(
            f"ship={ship!r} is not an exported candidate; choose one of "
            f"{[n for n, r in results.items() if 'parity' in r]}"
        )
    shipped_f1 = results[ship]["summary"]["test/" + Metric.F1_WEIGHTED]
    f1_bound = {
        "teacher": teacher_f1,
        "shipped": shipped_f1,
        "max_drop": float(cfg.max_f1_drop),
        "ok": teacher_f1 - shipped_f1 <= float(cfg.max_f1_drop) + 1e-12,
    }
    text = render(results, reports, ship, f1_bound)
    (out_dir / "export_report.md").write_text(text)
    summary = {
        name: {k: v for k, v in r.items() if k not in ("probs", "fresh_report")}
        for name, r in results.items()
    }
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
