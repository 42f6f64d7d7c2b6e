"""Fine-tune an encoder under Accelerate: the same recipe on a laptop CPU, one GPU or many.

`train` is the recipe, read top to bottom as its steps: data -> loaders -> model -> optimiser
and schedule -> epochs (train one, validate, keep the best, checkpoint, stop early) ->
calibration -> decision rule -> finishing (reports, model folder, W&B). The run's state lives in
one `TrainingRun` (mltagger.training.run_state); the steps before the epochs are in `build`, the
ones after in `finish`, and one epoch's training and validation are here.

`mltagger train` (make train) runs it through Hydra; `train(cfg)` returns the flat metrics
so a sweep can read `cfg.optimized_metric`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from mltagger.data.prepare import PreparedData
from mltagger.evaluation.metrics import evaluate_predictions, summary_metrics
from mltagger.evaluation.protocol import eval_kwargs
from mltagger.models.rule import softmax
from mltagger.training.batches import predict_logits, progress_bar
from mltagger.training.build import (
    build_loaders,
    build_loss,
    build_model,
    build_optimiser,
    load_data,
    load_teacher_signal,
    resume,
    start_run,
    start_trackers,
)
from mltagger.training.checkpoints import BEST, save_checkpoint, save_pretrained
from mltagger.training.config_rules import check_train_config
from mltagger.training.distill import distillation_loss
from mltagger.training.finish import apply_decision, calibrate, finish_run, predict_with_best
from mltagger.training.run_state import TrainingRun

log = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]


def train(
    cfg: DictConfig,
    on_epoch: EpochHook | None = None,
    data: PreparedData | None = None,
    *,
    checked: bool = False,
) -> dict[str, float]:
    """Fine-tune, evaluate and save; returns flat metrics (val/…, test/…, fresh/…).

    on_epoch(epoch, metrics) is called after each epoch's validation (a sweep reports to Optuna
    there, and may raise to prune the trial). `data` replaces the splits the data config would
    give (make cv hands each fold in this way; everything else runs as in make train).
    `checked=True` says the caller already ran the config rules on this very config
    (mltagger.training.config_rules: the CLI before importing this module, make cv before its
    folds); otherwise they run here, once, before anything slow.
    """
    if not checked:  # given splits (a CV fold) need no label-issue layer file: the fold has its own
        check_train_config(cfg, layer_must_exist=data is None)
    tcfg = cfg.trainer
    run = start_run(cfg)
    load_data(run, cfg, data)
    build_loaders(run, cfg.model, tcfg)
    build_model(run, cfg.model, cfg.get("distill"))
    load_teacher_signal(run, cfg)
    build_optimiser(run, cfg.optim, tcfg)
    build_loss(run, cfg.loss)
    resume(run)
    start_trackers(run, cfg)
    # Per-epoch validation: headline figures only; slices are reported once, at the end.
    val_kw = {**eval_kwargs(run.data, cfg.eval, run.labels), "slice_names": []}
    try:
        _log_start(run, cfg.model.name)
        epochs_this_run = 0
        run.model.train()
        while run.state.epoch < tcfg.max_epochs:
            train_figures = train_one_epoch(run, tcfg.max_grad_norm, cfg.get("distill"))
            epoch_metrics = {**validate(run, tcfg.limit_eval_batches, val_kw), **train_figures}
            end_epoch(run, epoch_metrics, tcfg.monitor)
            epochs_this_run += 1
            if on_epoch is not None:
                on_epoch(run.state.epoch, epoch_metrics)
            if stop_early(run.state.bad_epochs, tcfg):
                break
            if stop_as_configured(epochs_this_run, tcfg, run.out_dir):
                return {}
        best = predict_with_best(run, tcfg.limit_eval_batches)
        temperature = calibrate(best, cfg.temperature_scaling)
        title = f"{cfg.model.name} (epoch {run.state.best_epoch})"
        evaluation = apply_decision(run, best, temperature, cfg.eval, title)
        metrics = finish_run(run, cfg, evaluation)
        if run.soft_info:
            metrics["distill/soft_labels_used"] = float(bool(run.soft_info.get("used")))
        return metrics
    finally:
        run.accelerator.end_training()


def _log_start(run: TrainingRun, model_name: str) -> None:
    log.info(
        "training %s on %d items (%d classes), %d updates/epoch, %d processes on %s",
        model_name,
        len(run.train_targets),
        len(run.labels),
        run.plan.updates_per_epoch,
        run.accelerator.num_processes,
        run.accelerator.device,
    )


def train_one_epoch(
    run: TrainingRun, max_grad_norm: float | None, distill_cfg: DictConfig | None
) -> dict[str, float]:
    """One pass over the train loader (at most plan.batches batches); returns the epoch's mean
    loss and speed. Each optimiser update is logged with its loss and learning rate."""
    accelerator, state, batches = run.accelerator, run.state, run.plan.batches
    run.loaders.train.set_epoch(state.epoch)
    t0, seen, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
    progress = progress_bar(accelerator, batches, f"epoch {state.epoch + 1}")
    for step, batch in enumerate(run.loaders.train):
        if step >= batches:
            break
        loss, rows = _train_step(run, batch, max_grad_norm, distill_cfg)
        seen += rows * accelerator.num_processes
        loss_sum += loss.item()
        loss_n += 1
        if accelerator.sync_gradients:
            state.global_step += 1
            accelerator.log(
                {
                    "train/loss": loss.item(),
                    "train/lr": run.scheduler.get_last_lr()[0],
                    "train/epoch": state.epoch + step / batches,
                },
                step=state.global_step,
            )
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t0
    return {
        "train/epoch_loss": loss_sum / max(loss_n, 1),
        "train/epoch_seconds": seconds,
        "train/samples_per_second": seen / seconds if seconds else 0.0,
    }


def _train_step(
    run: TrainingRun, batch: dict, max_grad_norm: float | None, distill_cfg: DictConfig | None
) -> tuple[Any, int]:
    """Forward, loss (row-weighted, distilled when there is a teacher), backward and, when the
    accumulated gradients sync, a clipped optimiser update; returns the loss and the rows."""
    accelerator, model = run.accelerator, run.model
    idx = batch.pop("idx")
    targets = batch.pop("labels")
    row_weights = batch.pop("weight", None)
    with accelerator.accumulate(model):
        logits = model(**batch).logits
        loss = run.loss_fn(logits.float(), targets)
        if row_weights is not None:  # suspect labels count less (label_issues)
            loss = (loss * row_weights).sum() / row_weights.sum()
        if run.teacher_logits is not None:
            teacher = run.teacher_logits[idx.to(run.teacher_logits.device)]
            loss = distillation_loss(
                logits.float(), teacher, loss, distill_cfg.temperature, distill_cfg.alpha
            )
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    return loss, targets.shape[0]


def validate(run: TrainingRun, limit: int | None, val_kw: dict) -> dict[str, float]:
    """The headline val figures of the model as it is now (at most `limit` batches)."""
    logits, _, _ = predict_logits(run.model, run.loaders.val, run.accelerator, limit)
    items = run.data.splits["val"][: len(logits)]
    report = evaluate_predictions(items, softmax(logits), run.labels, **val_kw)
    return summary_metrics(report, "val/")


def end_epoch(run: TrainingRun, metrics: dict[str, float], monitor: str) -> None:
    """Count the epoch; keep the model when `monitor` beats the best so far; record, log and
    checkpoint (the checkpoint replaces the previous epoch's)."""
    accelerator, state = run.accelerator, run.state
    state.epoch += 1
    current = metrics[monitor]
    improved = current > state.best_metric
    if improved:
        state.best_metric, state.best_epoch, state.bad_epochs = current, state.epoch, 0
        save_pretrained(accelerator, run.model, run.tokenizer, run.out_dir / BEST)
    else:
        state.bad_epochs += 1
    state.history.append({"epoch": state.epoch, **metrics})
    accelerator.log({**metrics, "epoch": state.epoch}, step=state.global_step)
    log.info(
        "epoch %d: loss %.4f, %s %.4f%s, %.1f s (%.0f samples/s)",
        state.epoch,
        metrics["train/epoch_loss"],
        monitor,
        current,
        " (best)" if improved else "",
        metrics["train/epoch_seconds"],
        metrics["train/samples_per_second"],
    )
    save_checkpoint(accelerator, state, run.out_dir)


def stop_early(bad_epochs: int, trainer_cfg: DictConfig) -> bool:
    """No gain in the monitored metric for early_stopping_patience epochs in a row."""
    if bad_epochs < trainer_cfg.early_stopping_patience:
        return False
    log.info("early stopping: no gain in %s for %d epochs", trainer_cfg.monitor, bad_epochs)
    return True


def stop_as_configured(epochs_this_run: int, trainer_cfg: DictConfig, out_dir: Any) -> bool:
    """trainer.stop_after_epochs: stop as if killed (what the resume tests need)."""
    if not trainer_cfg.stop_after_epochs or epochs_this_run < trainer_cfg.stop_after_epochs:
        return False
    log.warning(
        "stopping after %d epochs as configured; resume with resume=%s", epochs_this_run, out_dir
    )
    return True


def run(cfg: DictConfig) -> float | None:
    """`mltagger train` (and `distill`): train, then hand cfg.optimized_metric to Hydra.

    The CLI has run the config rules on this config before importing this module
    (mltagger.core.config.hydra_entry), so the recipe does not run them again.
    """
    return train(cfg, checked=True).get(cfg.optimized_metric)
