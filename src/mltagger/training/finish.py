"""The end of a training run: best checkpoint back in, temperature fitted on validation, the
decision rule, val/test/fresh reports, plots, behaviour suite, the model folder and its card,
models/latest, and the W&B summary. Only the main process writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from mltagger.data.prepare import PreparedData
from mltagger.evaluation import plots
from mltagger.evaluation.drift import build_profile
from mltagger.evaluation.metrics import summary_metrics
from mltagger.evaluation.protocol import evaluate_val_test
from mltagger.models.modelio import (
    InferenceConfig,
    point_latest,
    write_model_metadata,
)
from mltagger.models.predict import TorchPredictor
from mltagger.models.rule import softmax
from mltagger.training.batches import predict_logits
from mltagger.training.calibrate import fit_temperature
from mltagger.training.card import headline, model_card
from mltagger.training.checkpoints import BEST, TrainState
from mltagger.training.decision import decision_rule, evaluate_fresh, run_behaviour_suite
from mltagger.training.tracking import log_run_to_wandb


def finish_run(
    cfg,
    accelerator,
    data: PreparedData,
    labels,
    val_loader,
    test_loader,
    state: TrainState,
    out_dir: Path,
    run,
    fresh_loader=None,
    decision: dict | None = None,
) -> dict:
    """Best model -> temperature on val -> decision rule -> val, test and fresh reports -> folder.

    The decision rule is eval.decision: per-tag thresholds chosen on out-of-fold predictions of
    this recipe (make cv), or one threshold chosen on val. Test and fresh are also scored under
    the single val threshold (`test_global/`, `fresh_global/`), so every run shows what the
    per-tag rule changes.
    """
    from transformers import AutoModelForSequenceClassification

    best = AutoModelForSequenceClassification.from_pretrained(out_dir / BEST)
    best = accelerator.prepare(best)
    limit = cfg.trainer.limit_eval_batches
    val_logits, val_y, _ = predict_logits(best, val_loader, accelerator, limit)
    test_logits, test_y, _ = predict_logits(best, test_loader, accelerator, limit)
    fresh_logits = (
        predict_logits(best, fresh_loader, accelerator)[0] if fresh_loader is not None else None
    )
    temperature = fit_temperature(val_logits, val_y) if cfg.temperature_scaling else 1.0
    val_probs, test_probs = softmax(val_logits, temperature), softmax(test_logits, temperature)
    if accelerator.is_main_process:
        # Raw logits, so calibration methods can be compared later without retraining (make cv).
        np.savez_compressed(
            out_dir / "logits.npz",
            val_logits=val_logits,
            val_labels=val_y,
            test_logits=test_logits,
            test_labels=test_y,
            **({"fresh_logits": fresh_logits} if fresh_logits is not None else {}),
        )

    if decision is None:
        decision = decision_rule(cfg, data, labels)
    title = f"{cfg.model.name} (epoch {state.best_epoch})"
    write_dir = out_dir if accelerator.is_main_process else None
    val_report, test_report, applied = evaluate_val_test(
        data, labels, val_probs, test_probs, cfg.eval, write_dir, title, decision["thresholds"]
    )
    per_tag = decision["thresholds"] is not None
    # The single val threshold, for comparison (the same reports when it is the shipped rule).
    _, test_global, global_thr = (
        evaluate_val_test(data, labels, val_probs, test_probs, cfg.eval, None, title)
        if per_tag
        else (val_report, test_report, applied)
    )
    metrics = {
        **summary_metrics(val_report, "val/"),
        **summary_metrics(test_report, "test/"),
        **summary_metrics(test_global, "test_global/"),
        "best_epoch": float(state.best_epoch),
        "temperature": temperature,
    }
    if isinstance(applied, dict):  # the shipped per-tag thresholds, in the W&B summary too
        metrics.update({f"threshold/{t}": float(v) for t, v in applied.items()})
    fresh_report = None
    if fresh_logits is not None:
        fresh_probs = softmax(fresh_logits, temperature)
        fresh_report = evaluate_fresh(
            data, labels, fresh_probs, cfg.eval, applied, write_dir, title
        )
        metrics.update(summary_metrics(fresh_report, "fresh/"))
        fresh_global = (
            evaluate_fresh(data, labels, fresh_probs, cfg.eval, global_thr, None, title)
            if per_tag
            else fresh_report
        )
        metrics.update(summary_metrics(fresh_global, "fresh_global/"))
    if not accelerator.is_main_process:
        return metrics

    plots.training_curves(state.history, cfg.trainer.monitor, out_dir / "training_curves.png")
    (out_dir / "metrics.json").write_text(
        json.dumps({"summary": metrics, "history": state.history}, indent=1) + "\n"
    )
    (out_dir / "decision.json").write_text(json.dumps(decision, indent=1) + "\n")

    model_dir = out_dir / "model"
    shutil.copytree(out_dir / BEST, model_dir, dirs_exist_ok=True)
    write_model_metadata(
        model_dir,
        labels,
        InferenceConfig(
            threshold=global_thr if np.isfinite(global_thr) else 1.01,
            temperature=temperature,
            max_length=int(cfg.model.max_length),
            fallback_tag=data.fallback_tag,
            approved_tags=list(data.tags),
            model_version=f"{cfg.model.name}-{out_dir.name}",
            thresholds=dict(applied) if per_tag else {},
            extra={
                "data_sha256": data.data_sha256,
                "base_model": str(cfg.model.name_or_path),
                "run_dir": str(out_dir),
                "decision": {k: v for k, v in decision.items() if k != "per_tag_detail"},
                "test": {k: v for k, v in metrics.items() if k.startswith("test/")},
                "fresh": {k: v for k, v in metrics.items() if k.startswith("fresh/")},
            },
        ),
    )
    (model_dir / "card.md").write_text(
        model_card(cfg, data, labels, val_report, test_report, temperature, state, fresh_report)
    )
    if cfg.eval.get("behavior", True):
        metrics.update(run_behaviour_suite(model_dir, out_dir))
        (out_dir / "metrics.json").write_text(
            json.dumps({"summary": metrics, "history": state.history}, indent=1) + "\n"
        )
    # What `mltagger monitor` compares the stream with (evaluation.drift): made here, after the
    # decision rule is written, so its answers are the ones this folder gives.
    build_profile(
        TorchPredictor(model_dir), data.splits["val"], [it["text"] for it in data.splits["train"]]
    ).save(model_dir)
    if cfg.update_latest:
        point_latest(model_dir, Path(cfg.paths.models_dir))
    log_run_to_wandb(run, cfg, data, out_dir, model_dir, val_report, test_report, metrics)
    print(headline(cfg.model.name, metrics, decision))
    print(f"Run folder: {out_dir}\nModel folder: {model_dir}")
    return metrics
