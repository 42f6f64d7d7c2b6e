"""Fine-tune an encoder under Accelerate: the same loop on a laptop CPU, one GPU or many.

Read top to bottom: Accelerator -> seed -> data -> tokenise -> loaders -> model -> optimizer ->
prepare -> schedule -> trackers -> epochs (train, evaluate on val, keep the best, checkpoint,
stop early) -> best model on val and test with the full report -> model folder -> W&B.

`mltagger train` (make train) runs it through Hydra; `train(cfg)` returns the flat metrics
so a sweep can read `cfg.optimized_metric`.

Slightly over 400 lines because `train` is the loop read top to bottom, as in Hugging Face's
`run_glue_no_trainer`; its parts that other jobs share live in `batches`, `checkpoints`,
`distill`, `decision` and `finish`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mltagger.core.errors import ConfigError
from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import write_run_info
from mltagger.core.tracking import wandb_settings
from mltagger.data.prepare import PreparedData, prepare_data
from mltagger.evaluation.metrics import evaluate_predictions, summary_metrics
from mltagger.evaluation.protocol import eval_kwargs
from mltagger.models.modelio import (
    resolve_model_path,
)
from mltagger.models.rule import softmax
from mltagger.training.batches import class_weights, predict_logits, progress_bar, tokenize_split
from mltagger.training.checkpoints import (
    BEST,
    TrainState,
    find_checkpoint,
    save_checkpoint,
    save_pretrained,
)
from mltagger.training.config_rules import check_train_config
from mltagger.training.decision import decision_rule
from mltagger.training.distill import (
    distillation_loss,
    find_teacher_dir,
    shrink,
    teacher_train_logits,
)
from mltagger.training.finish import finish_run
from mltagger.training.teacher import load_soft_labels
from mltagger.training.tracking import wandb_run

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig, *, layer_must_exist: bool = True) -> None:
    """Refuse values that would only fail (with a traceback) minutes into training: the
    declared rules (mltagger.training.config_rules) and a GPU that is not there."""
    check_train_config(cfg, layer_must_exist=layer_must_exist)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer=gpu but no CUDA device is visible; use trainer=cpu")


def train(cfg: DictConfig, on_epoch=None, data: PreparedData | None = None) -> dict[str, float]:
    """Fine-tune, evaluate and save; returns flat metrics (val/…, test/…, fresh/…).

    on_epoch(epoch, metrics) is called after each epoch's validation (a sweep reports to Optuna
    there, and may raise to prune the trial). `data` replaces the splits the data config would
    give (make cv hands each fold in this way; everything else runs as in make train).
    """
    # Given splits (a CV fold) need no label-issue layer file: the fold rebuilt its own.
    check_config(cfg, layer_must_exist=data is None)
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        get_scheduler,
    )

    out_dir = Path(cfg.paths.output_dir)
    tcfg = cfg.trainer
    ckpt = find_checkpoint(cfg.resume) if cfg.resume else None
    wandb_kwargs = wandb_settings(cfg)
    accelerator = Accelerator(
        cpu=tcfg.accelerator == "cpu",
        mixed_precision=tcfg.mixed_precision,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        log_with="wandb" if wandb_kwargs else None,
        project_dir=str(out_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.seed)

    # Data and model files are resolved before anything slow, so a mistake fails in seconds.
    teacher_dir = find_teacher_dir(cfg)
    model_path = resolve_model_path(cfg.model.name_or_path)
    if data is None:
        data = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=out_dir)
    labels = data.label_names()
    # The decision rule is settled before training: out-of-fold predictions of another recipe
    # stop the run now, not after the epochs.
    decision = decision_rule(cfg, data, labels)
    if accelerator.is_main_process:
        write_run_info(
            out_dir,
            cfg,
            data.manifest(),
            {
                "model_path": model_path,
                "num_processes": accelerator.num_processes,
                "device": str(accelerator.device),
                "mixed_precision": tcfg.mixed_precision,
            },
        )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    with accelerator.main_process_first():
        weighted = any("weight" in it for it in data.splits["train"])
        train_ds, val_ds, test_ds = (
            tokenize_split(
                data.splits[s], labels, tokenizer, cfg.model.max_length, weighted and s == "train"
            )
            for s in ("train", "val", "test")
        )
    collator = DataCollatorWithPadding(
        tokenizer, pad_to_multiple_of=8 if tcfg.mixed_precision != "no" else None
    )
    loader_kw = {"collate_fn": collator, "num_workers": tcfg.num_workers}
    train_loader = DataLoader(train_ds, batch_size=cfg.model.batch_size, shuffle=True, **loader_kw)
    val_loader = DataLoader(val_ds, batch_size=cfg.model.eval_batch_size, **loader_kw)
    test_loader = DataLoader(test_ds, batch_size=cfg.model.eval_batch_size, **loader_kw)
    fresh_loader = None
    if data.fresh:
        # Fresh gold tags may name a tag the model has no class for; the loader needs none.
        fresh_items = [{**it, "tag": labels[0]} for it in data.fresh]
        fresh_ds = tokenize_split(fresh_items, labels, tokenizer, cfg.model.max_length)
        fresh_loader = DataLoader(fresh_ds, batch_size=cfg.model.eval_batch_size, **loader_kw)

    model = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)},
        hidden_dropout_prob=cfg.model.dropout,
        attention_probs_dropout_prob=cfg.model.dropout,
        # A checkpoint with another head (e.g. an earlier mltagger model) gets a fresh one.
        ignore_mismatched_sizes=True,
    )
    teacher_logits = None
    if teacher_dir is not None:
        if cfg.distill.get("keep_layers"):
            model = shrink(model, cfg.distill.keep_layers)
        teacher_logits = teacher_train_logits(
            teacher_dir, data.splits["train"], labels, cfg, accelerator, collator_kw=loader_kw
        )
    soft_info: dict = {}
    if teacher_dir is None and cfg.get("distill") and cfg.distill.get("soft_labels"):
        # A shipped teacher's probabilities (make teacher): distillation without running it.
        soft, soft_info = load_soft_labels(
            resolve_path(cfg.distill.soft_labels, cfg.paths.root_dir),
            data,
            labels,
            data.splits["train"],
        )
        if accelerator.is_main_process:  # what the run learnt from, next to its config
            (out_dir / "soft_labels.json").write_text(json.dumps(soft_info, indent=1) + "\n")
        if soft is None:
            log.warning(
                "distill.soft_labels=%s NOT used: %s (training on gold labels only; rebuild "
                "them with `make teacher` for this data)",
                cfg.distill.soft_labels,
                soft_info["reason"],
            )
        else:
            teacher_logits = torch.log(torch.tensor(soft, dtype=torch.float32).clamp_min(1e-6))
            log.info(
                "soft labels of teacher %s for %d train items (alpha %.2f, T %.1f)",
                (soft_info.get("teacher") or {}).get("name"),
                len(soft),
                cfg.distill.alpha,
                cfg.distill.temperature,
            )
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": cfg.optim.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps
    )
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader
    )
    if fresh_loader is not None:
        fresh_loader = accelerator.prepare(fresh_loader)
    # Step counts after prepare: sharding across processes changes the loader length.
    batches = len(train_loader)
    if tcfg.limit_train_batches:
        batches = min(batches, tcfg.limit_train_batches)
    updates_per_epoch = math.ceil(batches / tcfg.gradient_accumulation_steps)
    total_updates = updates_per_epoch * tcfg.max_epochs
    # A prepared scheduler steps once per process per update, hence the factor.
    scheduler = get_scheduler(
        cfg.optim.scheduler,
        optimizer,
        num_warmup_steps=int(cfg.optim.warmup_ratio * total_updates) * accelerator.num_processes,
        num_training_steps=total_updates * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)

    weights = class_weights(
        [int(x) for x in train_ds["labels"]], len(labels), cfg.loss.class_weighting
    )
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=weights.to(accelerator.device) if weights is not None else None,
        label_smoothing=cfg.loss.label_smoothing,
        reduction="none" if weighted else "mean",
    )

    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        log.info("resumed from %s after epoch %d", ckpt, state.epoch)
        old_best = ckpt.parent.parent / BEST
        if accelerator.is_main_process and old_best.resolve() != (out_dir / BEST).resolve():
            shutil.copytree(old_best, out_dir / BEST, dirs_exist_ok=True)
        accelerator.wait_for_everyone()

    config = OmegaConf.to_container(cfg, resolve=True)
    if wandb_kwargs:
        accelerator.init_trackers(
            cfg.logger.wandb.project, config=config, init_kwargs={"wandb": wandb_kwargs}
        )
    run = wandb_run(accelerator)
    if run is not None:
        run.define_metric(tcfg.monitor, summary="max")
        run.define_metric("train/loss", summary="min")

    # Per-epoch validation: headline figures only; slices are reported once, at the end.
    epoch_eval_kw = {**eval_kwargs(data, cfg.eval, labels), "slice_names": []}
    val_items = data.splits["val"]
    try:
        log.info(
            "training %s on %d items (%d classes), %d updates/epoch, %d processes on %s",
            cfg.model.name,
            len(train_ds),
            len(labels),
            updates_per_epoch,
            accelerator.num_processes,
            accelerator.device,
        )
        epochs_this_run = 0
        model.train()
        while state.epoch < tcfg.max_epochs:
            train_loader.set_epoch(state.epoch)
            t0, seen, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
            progress = progress_bar(accelerator, batches, f"epoch {state.epoch + 1}")
            for step, batch in enumerate(train_loader):
                if step >= batches:
                    break
                idx = batch.pop("idx")
                targets = batch.pop("labels")
                row_weights = batch.pop("weight", None)
                with accelerator.accumulate(model):
                    logits = model(**batch).logits
                    loss = loss_fn(logits.float(), targets)
                    if row_weights is not None:  # suspect labels count less (label_issues)
                        loss = (loss * row_weights).sum() / row_weights.sum()
                    if teacher_logits is not None:
                        loss = distillation_loss(
                            logits.float(),
                            teacher_logits[idx.to(teacher_logits.device)],
                            loss,
                            cfg.distill.temperature,
                            cfg.distill.alpha,
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tcfg.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                seen += targets.shape[0] * accelerator.num_processes
                loss_sum += loss.item()
                loss_n += 1
                if accelerator.sync_gradients:
                    state.global_step += 1
                    accelerator.log(
                        {
                            "train/loss": loss.item(),
                            "train/lr": scheduler.get_last_lr()[0],
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

            logits, _, _ = predict_logits(model, val_loader, accelerator, tcfg.limit_eval_batches)
            items = val_items[: len(logits)]
            val_report = evaluate_predictions(items, softmax(logits), labels, **epoch_eval_kw)
            epoch_metrics = {
                **summary_metrics(val_report, "val/"),
                "train/epoch_loss": loss_sum / max(loss_n, 1),
                "train/epoch_seconds": seconds,
                "train/samples_per_second": seen / seconds if seconds else 0.0,
            }
            state.epoch += 1
            epochs_this_run += 1
            current = epoch_metrics[tcfg.monitor]
            improved = current > state.best_metric
            if improved:
                state.best_metric, state.best_epoch, state.bad_epochs = current, state.epoch, 0
                save_pretrained(accelerator, model, tokenizer, out_dir / BEST)
            else:
                state.bad_epochs += 1
            state.history.append({"epoch": state.epoch, **epoch_metrics})
            accelerator.log({**epoch_metrics, "epoch": state.epoch}, step=state.global_step)
            log.info(
                "epoch %d: loss %.4f, %s %.4f%s, %.1f s (%.0f samples/s)",
                state.epoch,
                epoch_metrics["train/epoch_loss"],
                tcfg.monitor,
                current,
                " (best)" if improved else "",
                seconds,
                epoch_metrics["train/samples_per_second"],
            )
            save_checkpoint(accelerator, state, out_dir)
            if on_epoch is not None:
                on_epoch(state.epoch, epoch_metrics)

            if state.bad_epochs >= tcfg.early_stopping_patience:
                log.info(
                    "early stopping: no gain in %s for %d epochs", tcfg.monitor, state.bad_epochs
                )
                break
            if tcfg.stop_after_epochs and epochs_this_run >= tcfg.stop_after_epochs:
                log.warning(
                    "stopping after %d epochs as configured; resume with resume=%s",
                    epochs_this_run,
                    out_dir,
                )
                return {}

        metrics = finish_run(
            cfg,
            accelerator,
            data,
            labels,
            val_loader,
            test_loader,
            state,
            out_dir,
            run,
            fresh_loader,
            decision,
        )
        if soft_info:
            metrics["distill/soft_labels_used"] = float(bool(soft_info.get("used")))
        return metrics
    finally:
        accelerator.end_training()


def run(cfg: DictConfig) -> float | None:
    """`mltagger train` (and `distill`): train, then hand cfg.optimized_metric to Hydra."""
    return train(cfg).get(cfg.optimized_metric)
