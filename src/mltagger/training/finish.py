"""The end of a training run, as the recipe's last steps: the best checkpoint's logits
(`predict_with_best`), a temperature fitted on validation (`calibrate`), the decision rule
applied to val, test and fresh (`apply_decision`), then plots, behaviour suite, the model folder
and its card, models/latest and the W&B summary (`finish_run`). Only the main process writes.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from mltagger.core.paths import resolve_path
from mltagger.evaluation import plots
from mltagger.evaluation.drift import build_profile
from mltagger.evaluation.metrics import summary_metrics
from mltagger.evaluation.protocol import evaluate_val_test
from mltagger.models.modelio import (
    PER_TAG_FILE,
    InferenceConfig,
    point_latest,
    write_model_metadata,
)
from mltagger.models.predict import TorchPredictor
from mltagger.models.rule import gate_mask, softmax
from mltagger.training.batches import predict_logits
from mltagger.training.calibrate import fit_temperature
from mltagger.training.card import headline, model_card, per_tag_points, per_tag_rows
from mltagger.training.checkpoints import BEST
from mltagger.training.decision import evaluate_fresh, run_behaviour_suite
from mltagger.training.gate import gate_auroc
from mltagger.training.run_state import TrainingRun
from mltagger.training.secondary import ship as ship_secondary
from mltagger.training.tracking import log_run_to_wandb

log = logging.getLogger(__name__)


@dataclass
class BestLogits:
    """The best checkpoint's logits (and gold classes) on val and test, and on fresh if any."""

    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    fresh: np.ndarray | None = None


@dataclass
class Evaluation:
    """What the decision rule gave: the flat metrics, the reports, and the thresholds."""

    metrics: dict[str, float]
    val_report: dict
    test_report: dict
    fresh_report: dict | None
    applied: Any  # the shipped rule: per-tag thresholds (a dict) or the one val threshold
    global_threshold: float  # the one val threshold, shipped or not
    temperature: float


def predict_with_best(run: TrainingRun, limit: int | None) -> BestLogits:
    """The best epoch's model (saved under best/) on val, test and fresh. The raw logits are
    kept in logits.npz, so calibration methods can be compared later without retraining."""
    from transformers import AutoModelForSequenceClassification

    accelerator, loaders = run.accelerator, run.loaders
    best = accelerator.prepare(
        AutoModelForSequenceClassification.from_pretrained(run.out_dir / BEST)
    )
    val_logits, val_y, _ = predict_logits(best, loaders.val, accelerator, limit)
    test_logits, test_y, _ = predict_logits(best, loaders.test, accelerator, limit)
    fresh = (
        predict_logits(best, loaders.fresh, accelerator)[0] if loaders.fresh is not None else None
    )
    logits = BestLogits(val_logits, val_y, test_logits, test_y, fresh)
    if accelerator.is_main_process:
        np.savez_compressed(
            run.out_dir / "logits.npz",
            val_logits=logits.val,
            val_labels=logits.val_labels,
            test_logits=logits.test,
            test_labels=logits.test_labels,
            **({"fresh_logits": logits.fresh} if logits.fresh is not None else {}),
        )
    return logits


def calibrate(logits: BestLogits, temperature_scaling: bool) -> float:
    """The temperature that makes val confidences mean what they say (1.0 when turned off);
    fitted before the threshold, so the threshold is chosen on calibrated probabilities."""
    return fit_temperature(logits.val, logits.val_labels) if temperature_scaling else 1.0


def apply_decision(
    run: TrainingRun, logits: BestLogits, temperature: float, eval_cfg: DictConfig, title: str
) -> Evaluation:
    """The decision rule (run.decision, settled before training) on val and test, and fresh.

    The rule is eval.decision: per-tag thresholds chosen on out-of-fold predictions of this
    recipe (make cv), or one threshold chosen on val. Test and fresh are also scored under the
    single val threshold (`test_global/`, `fresh_global/`), so every run shows what the per-tag
    rule changes.
    """
    data, labels = run.data, run.labels
    val_probs, test_probs = softmax(logits.val, temperature), softmax(logits.test, temperature)
    write_dir = run.out_dir if run.accelerator.is_main_process else None
    thresholds = run.decision["thresholds"]
    gated = (gate_masks(run, "val"), gate_masks(run, "test"))
    gated = None if gated[0] is None else gated
    val_report, test_report, applied = evaluate_val_test(
        data, labels, val_probs, test_probs, eval_cfg, write_dir, title, thresholds, gated
    )
    per_tag = thresholds is not None
    # The single val threshold (behind the same gate), for comparison (the same reports when it
    # is the shipped rule).
    _, test_global, global_thr = (
        evaluate_val_test(data, labels, val_probs, test_probs, eval_cfg, None, title, None, gated)
        if per_tag
        else (val_report, test_report, applied)
    )
    metrics = {
        **summary_metrics(val_report, "val/"),
        **summary_metrics(test_report, "test/"),
        **summary_metrics(test_global, "test_global/"),
        "best_epoch": float(run.state.best_epoch),
        "temperature": temperature,
    }
    if isinstance(applied, dict):  # the shipped per-tag thresholds, in the W&B summary too
        metrics.update({f"threshold/{t}": float(v) for t, v in applied.items()})
    evaluation = Evaluation(
        metrics, val_report, test_report, None, applied, global_thr, temperature
    )
    if logits.fresh is not None:
        _score_fresh(
            run, softmax(logits.fresh, temperature), eval_cfg, evaluation, write_dir, title
        )
    return evaluation


def gate_masks(run: TrainingRun, split: str) -> np.ndarray | None:
    """Which items of a split ("val", "test", "fresh") the shipped rule's gate stops; None when
    the rule has no gate."""
    threshold = run.decision.get("gate_threshold")
    if threshold is None:
        return None
    items = run.data.fresh if split == "fresh" else run.data.splits[split]
    return gate_mask(run.gate.in_scope(it["text"] for it in items), threshold, len(items))


def _score_fresh(
    run: TrainingRun,
    probs: np.ndarray,
    eval_cfg: DictConfig,
    evaluation: Evaluation,
    write_dir: Path | None,
    title: str,
) -> None:
    """The fresh set under the shipped rule (`fresh/`) and under the one val threshold
    (`fresh_global/`, the same report when that is the shipped rule)."""
    data, labels = run.data, run.labels
    gated = gate_masks(run, "fresh")
    report = evaluate_fresh(
        data, labels, probs, eval_cfg, evaluation.applied, write_dir, title, gated
    )
    evaluation.fresh_report = report
    evaluation.metrics.update(summary_metrics(report, "fresh/"))
    fresh_global = (
        evaluate_fresh(
            data, labels, probs, eval_cfg, evaluation.global_threshold, None, title, gated
        )
        if run.decision["thresholds"] is not None
        else report
    )
    evaluation.metrics.update(summary_metrics(fresh_global, "fresh_global/"))


def finish_run(run: TrainingRun, cfg: DictConfig, evaluation: Evaluation) -> dict[str, float]:
    """The run folder's files (curves, metrics, decision), the model folder with its card, the
    behaviour suite, the drift profile, models/latest and W&B; returns the flat metrics."""
    metrics = evaluation.metrics
    if not run.accelerator.is_main_process:
        return metrics
    out_dir, state, data = run.out_dir, run.state, run.data
    plots.training_curves(state.history, cfg.trainer.monitor, out_dir / "training_curves.png")
    _write_metrics(out_dir, metrics, state.history)
    (out_dir / "decision.json").write_text(json.dumps(run.decision, indent=1) + "\n")
    model_dir = _write_model_folder(run, cfg.model, evaluation)
    _ship_gate(run, cfg, model_dir, metrics)
    metrics.update(ship_run_secondary(cfg, model_dir, out_dir))
    (model_dir / "card.md").write_text(
        model_card(
            cfg,
            data,
            run.labels,
            evaluation.val_report,
            evaluation.test_report,
            evaluation.temperature,
            state,
            evaluation.fresh_report,
            run.decision,
        )
    )
    # The promise per tag as the model made it (CV, test, fresh), for the service's health page.
    (model_dir / PER_TAG_FILE).write_text(
        json.dumps(
            per_tag_rows(run.decision, evaluation.test_report, evaluation.fresh_report), indent=1
        )
        + "\n"
    )
    if cfg.eval.get("behavior", True):
        metrics.update(run_behaviour_suite(model_dir, out_dir))
        _write_metrics(out_dir, metrics, state.history)
    # What `mltagger monitor` compares the stream with (evaluation.drift): made here, after the
    # decision rule is written, so its answers are the ones this folder gives.
    build_profile(
        TorchPredictor(model_dir), data.splits["val"], [it["text"] for it in data.splits["train"]]
    ).save(model_dir)
    if cfg.update_latest:
        point_latest(model_dir, Path(cfg.paths.models_dir))
    log_run_to_wandb(
        run.tracker,
        cfg,
        data,
        out_dir,
        model_dir,
        evaluation.val_report,
        evaluation.test_report,
        metrics,
    )
    print(headline(cfg.model.name, metrics, run.decision))
    print("\nPer tag (coverage of the tag's items, precision of its automatic tags (n), lower "
          "bound):")  # fmt: skip
    print("\n".join(per_tag_points(run.decision, evaluation.test_report, evaluation.fresh_report)))
    print(f"Run folder: {out_dir}\nModel folder: {model_dir}")
    return metrics


def ship_run_secondary(cfg: DictConfig, model_dir: Path, out_dir: Path) -> dict[str, float]:
    """The secondary-tag head of this run (issue 35, `mltagger.training.secondary`), when the
    data has the stream pool (its `also` labels) and this recipe's out-of-fold predictions; its
    CV figures as metrics. Without them the folder has no secondary.json and answers the primary
    tag alone, which the log says."""
    ecfg, root = cfg.eval, cfg.paths.root_dir
    pool = next((s for s in cfg.data.sources if s.name == "pool"), None)
    oof = resolve_path(ecfg.oof, root) if ecfg.get("oof") else None
    if not ecfg.get("secondary", True) or pool is None or oof is None or not oof.is_file():
        log.info("no secondary-tag head: needs the pool source and eval.oof (eval.secondary)")
        return {}
    try:
        _, cv = ship_secondary(
            model_dir, resolve_path(pool.path, root), oof, out_dir / "secondary",
            target=float(ecfg.secondary_target),
            suggest_target=float(ecfg.secondary_suggest_target),
            min_applied=int(ecfg.secondary_min_applied),
        )  # fmt: skip
    except ValueError as err:  # e.g. out-of-fold predictions of other classes
        log.warning("no secondary-tag head: %s", err)
        return {}
    (out_dir / "secondary" / "cv.json").write_text(json.dumps(cv, indent=1) + "\n")
    chosen = cv["kinds"][cv["kind"]]
    return {
        "secondary/cv_apply_ap": chosen["apply_ap"] or 0.0,
        "secondary/apply_threshold": cv["apply"]["threshold"] if cv["apply"] else -1.0,
        "secondary/suggest_threshold": cv["suggest"]["threshold"] if cv["suggest"] else -1.0,
    }


def _write_metrics(out_dir: Path, metrics: dict, history: list[dict]) -> None:
    (out_dir / "metrics.json").write_text(
        json.dumps({"summary": metrics, "history": history}, indent=1) + "\n"
    )


def _ship_gate(run: TrainingRun, cfg: DictConfig, model_dir: Path, metrics: dict) -> None:
    """The out-of-scope gate (issue 32), fitted in load_data when the data config names its
    negatives (`data.gate_negatives`), saved as gate.json beside the model, with its AUROC on val
    and test. The rule applies it when its threshold (inference.json `gate_threshold`, chosen
    with the topic thresholds on out-of-fold predictions) is set."""
    negatives, gate = run.gate_negatives, run.gate
    if gate is None:
        return
    gate.save(model_dir)
    for split in ("val", "test"):
        auroc = gate_auroc(gate, run.data.splits[split], run.data.fallback_tag)
        if auroc is not None:
            metrics[f"gate/{split}_auroc"] = auroc
    metrics["gate/negatives"] = float(len(negatives))
    if run.decision.get("gate_threshold") is not None:  # applied by the shipped rule
        metrics["gate/threshold"] = float(run.decision["gate_threshold"])
    log.info("gate: %d negatives, AUROC val %s test %s", len(negatives),
             metrics.get("gate/val_auroc"), metrics.get("gate/test_auroc"))  # fmt: skip


def _write_model_folder(run: TrainingRun, model_cfg: DictConfig, evaluation: Evaluation) -> Path:
    """The best checkpoint as a model folder, with the inference settings the service reads:
    the shipped thresholds (no threshold is above 1 when val could not reach the target),
    the temperature, and where the model came from."""
    out_dir, data, metrics = run.out_dir, run.data, evaluation.metrics
    global_thr = evaluation.global_threshold
    model_dir = out_dir / "model"
    shutil.copytree(out_dir / BEST, model_dir, dirs_exist_ok=True)
    write_model_metadata(
        model_dir,
        run.labels,
        InferenceConfig(
            threshold=global_thr if np.isfinite(global_thr) else 1.01,
            temperature=evaluation.temperature,
            max_length=int(model_cfg.max_length),
            fallback_tag=data.fallback_tag,
            approved_tags=list(data.tags),
            model_version=f"{model_cfg.name}-{out_dir.name}",
            thresholds=dict(evaluation.applied) if run.decision["thresholds"] is not None else {},
            gate_threshold=run.decision.get("gate_threshold"),
            extra={
                "data_sha256": data.data_sha256,
                "base_model": str(model_cfg.name_or_path),
                "run_dir": str(out_dir),
                "decision": {
                    k: v
                    for k, v in run.decision.items()
                    if k not in ("per_tag_detail", "gate_choice")
                },
                "test": {k: v for k, v in metrics.items() if k.startswith("test/")},
                "fresh": {k: v for k, v in metrics.items() if k.startswith("fresh/")},
            },
        ),
    )
    return model_dir
