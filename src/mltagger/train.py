"""Fine-tune an encoder under Accelerate: the same loop on a laptop CPU, one GPU or many.

Read top to bottom: Accelerator -> seed -> data -> tokenise -> loaders -> model -> optimizer ->
prepare -> schedule -> trackers -> epochs (train, evaluate on val, keep the best, checkpoint,
stop early) -> best model on val and test with the full report -> model folder -> W&B.

`python -m mltagger.train` (make train) is the entry point; `train(cfg)` returns the flat metrics
so a sweep can read `cfg.optimized_metric`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mltagger.data import PreparedData, prepare_data, to_hf_dataset
from mltagger.distill import distillation_loss
from mltagger.evaluate import (
    Metric,
    eval_kwargs,
    evaluate_predictions,
    evaluate_val_test,
    summary_metrics,
)
from mltagger.modelio import (
    InferenceConfig,
    point_latest,
    resolve_model_path,
    write_model_metadata,
)
from mltagger.run import write_run_info

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST = "best"


class TrainState:
    """Loop counters that must survive a resume; saved with accelerator.save_state."""

    def __init__(self) -> None:
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def class_weights(labels: list[int], num_labels: int, mode: str) -> torch.Tensor | None:
    """Loss weights against class imbalance (the data is 40% NLP, 4% time-series).

    balanced: n / (K * count_k), so every class carries the same total weight; sqrt: its square
    root, which helps rare tags without making the model over-predict them.
    """
    if mode in (None, "none"):
        return None
    counts = np.bincount(labels, minlength=num_labels).astype(float)
    if (counts == 0).any():
        raise ValueError("a class has no training items; cannot weight the loss by frequency")
    weights = len(labels) / (num_labels * counts)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"loss.class_weighting must be none, balanced or sqrt, got {mode!r}")
    return torch.tensor(weights, dtype=torch.float32)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out data.

    One scalar: the ranking (and accuracy) is unchanged, only the confidences move, so the review
    threshold chosen on calibrated probabilities means what it says.
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def fit_vector_scaling(
    logits: np.ndarray, labels: np.ndarray, l2: float = 1e-2, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale w and bias b minimising the NLL of softmax(logits * w + b) on held-out data.

    Vector scaling (Guo et al., ICML 2017) can fix a class the model is systematically over- or
    under-confident about, which one temperature cannot; it has 2K parameters instead of 1, so it
    needs more held-out items (a small L2 pull toward w = 1, b = 0 keeps it stable). `make cv`
    compares both on held-out folds.
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    k = x.shape[1]
    w = torch.ones(k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x * w + b, y)
        loss = loss + l2 * (((w - 1) ** 2).sum() + (b**2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def tokenize_split(
    items: list[dict], labels: list[str], tokenizer, max_length: int, with_weights: bool = False
):
    """A datasets.Dataset of input ids (no padding: the collator pads each batch) with `idx`.

    with_weights keeps the per-row loss weight (down-weighted suspect labels) for training.
    """
    ds = to_hf_dataset(items, labels)
    ds = ds.add_column("idx", list(range(len(ds))))
    drop = ["id", "text", "title", "description", "tag"]
    if not with_weights:
        drop.append("weight")
    ds = ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=drop,
        desc="tokenise",
    )
    return ds.rename_column("label", "labels")


@torch.no_grad()
def predict_logits(model, loader, accelerator, limit: int | None = None) -> tuple[np.ndarray, ...]:
    """Logits, labels and dataset positions of every item, gathered from all processes.

    gather_for_metrics drops the samples repeated to even out the last batch across processes;
    sorting by `idx` then restores dataset order whatever the sharding was.
    """
    model.eval()
    all_logits, all_labels, all_idx = [], [], []
    for step, batch in enumerate(loader):
        if limit is not None and step >= limit:
            break
        idx, labels = batch.pop("idx"), batch.pop("labels")
        logits = model(**batch).logits.float()
        logits, labels, idx = accelerator.gather_for_metrics((logits, labels, idx))
        all_logits.append(logits.cpu().numpy())
        all_labels.append(labels.cpu().numpy())
        all_idx.append(idx.cpu().numpy())
    model.train()
    idx = np.concatenate(all_idx)
    order = np.argsort(idx, kind="stable")
    return np.concatenate(all_logits)[order], np.concatenate(all_labels)[order], idx[order]


def _teacher_dir(cfg) -> Path | None:
    """The teacher's model folder when distilling (checked before any slow work), else None."""
    teacher = cfg.get("distill", {}).get("teacher") if cfg.get("distill") else None
    if not teacher:
        return None
    from mltagger.modelio import read_model_metadata
    from mltagger.paths import resolve_path

    folder = resolve_path(teacher, cfg.paths.root_dir)
    if not folder.exists():
        raise FileNotFoundError(
            f"distill.teacher={teacher}: no such model folder; train a teacher first (make train) "
            "or point distill.teacher at one"
        )
    read_model_metadata(folder)  # a real model folder, with labels and inference settings
    return folder.resolve()


def _teacher_train_logits(teacher_dir: Path, items, labels, cfg, accelerator, collator_kw):
    """The teacher's logits on the train split, indexed like the train dataset (`idx`).

    Computed once: the teacher is frozen and in eval mode, so every epoch would recompute the
    same numbers. Uses the teacher's own tokenizer, so the student may tokenise differently.
    """
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    from mltagger.modelio import read_model_metadata

    teacher_labels, _ = read_model_metadata(teacher_dir)
    if list(teacher_labels) != list(labels):
        raise ValueError(
            f"teacher classes {teacher_labels} differ from this data's classes {labels}: "
            "distil on the data the teacher was trained on"
        )
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    ds = tokenize_split(items, labels, tokenizer, cfg.model.max_length)
    loader = DataLoader(
        ds,
        batch_size=cfg.model.eval_batch_size,
        collate_fn=DataCollatorWithPadding(tokenizer),
        num_workers=collator_kw.get("num_workers", 0),
    )
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    teacher, loader = accelerator.prepare(teacher, loader)
    logits, _, _ = predict_logits(teacher, loader, accelerator)
    del teacher
    log.info("teacher %s: logits for %d train items", teacher_dir, len(logits))
    return torch.as_tensor(logits, device=accelerator.device)


def find_checkpoint(resume: str) -> Path:
    """A checkpoint folder from `resume`: the folder itself, or a run folder's newest epoch."""
    path = Path(resume).expanduser()
    if (path / CHECKPOINTS).is_dir():
        path = path / CHECKPOINTS
    if path.name == CHECKPOINTS:
        epochs = sorted(path.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
        if not epochs:
            raise FileNotFoundError(f"resume={resume}: no epoch_* checkpoint in {path}")
        path = epochs[-1]
    if not (path / "train_state.json").is_file():
        raise FileNotFoundError(f"resume={resume}: {path} is not a checkpoint of this loop")
    return path


def wandb_settings(cfg: DictConfig) -> dict | None:
    """init kwargs for W&B, or None with logger=none. No key -> offline, never a prompt."""
    wcfg = cfg.logger.get("wandb") if cfg.get("logger") else None
    if not wcfg:
        return None
    mode = wcfg.mode or os.environ.get("WANDB_MODE")
    if not mode:
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return {
        "entity": wcfg.entity,
        "group": wcfg.group,
        "job_type": wcfg.job_type,
        "tags": list(wcfg.tags or []),
        "mode": mode,
        "dir": str(cfg.paths.output_dir),
        "name": Path(cfg.paths.output_dir).name,
    }


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would only fail (with a traceback) minutes into training."""
    tcfg = cfg.trainer
    numbers = {
        "trainer.max_epochs": (tcfg.max_epochs, int, 1),
        "trainer.gradient_accumulation_steps": (tcfg.gradient_accumulation_steps, int, 1),
        "trainer.early_stopping_patience": (tcfg.early_stopping_patience, int, 1),
        "model.batch_size": (cfg.model.batch_size, int, 1),
        "model.eval_batch_size": (cfg.model.eval_batch_size, int, 1),
        "model.max_length": (cfg.model.max_length, int, 8),
        "model.dropout": (cfg.model.dropout, float, 0),
        "optim.lr": (cfg.optim.lr, float, 0),
        "optim.weight_decay": (cfg.optim.weight_decay, float, 0),
        "optim.warmup_ratio": (cfg.optim.warmup_ratio, float, 0),
        "loss.label_smoothing": (cfg.loss.label_smoothing, float, 0),
    }
    for key, (value, kind, low) in numbers.items():
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok_type = isinstance(value, int) and not isinstance(value, bool)
        if not ok_type or value < low:
            raise ValueError(
                f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'} >= {low}"
            )
    known = {f"val/{k}" for k in Metric.ALL}
    if tcfg.monitor not in known:
        raise ValueError(
            f"trainer.monitor={tcfg.monitor!r} is not a metric; use one of {sorted(known)}"
        )
    if tcfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"trainer.mixed_precision={tcfg.mixed_precision!r}: use no, bf16 or fp16")
    if cfg.get("distill") and (cfg.distill.get("teacher") or cfg.distill.get("soft_labels")):
        from mltagger.distill import check_distill_config

        check_distill_config(cfg)
    if tcfg.accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("trainer=gpu but no CUDA device is visible; use trainer=cpu")


def train(cfg: DictConfig, on_epoch=None, data: PreparedData | None = None) -> dict[str, float]:
    """Fine-tune, evaluate and save; returns flat metrics (val/…, test/…, fresh/…).

    on_epoch(epoch, metrics) is called after each epoch's validation (a sweep reports to Optuna
    there, and may raise to prune the trial). `data` replaces the splits the data config would
    give (make cv hands each fold in this way; everything else runs as in make train).
    """
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
    check_config(cfg)
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
    teacher_dir = _teacher_dir(cfg)
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
        from mltagger.distill import shrink

        if cfg.distill.get("keep_layers"):
            model = shrink(model, cfg.distill.keep_layers)
        teacher_logits = _teacher_train_logits(
            teacher_dir, data.splits["train"], labels, cfg, accelerator, collator_kw=loader_kw
        )
    soft_info: dict = {}
    if teacher_dir is None and cfg.get("distill") and cfg.distill.get("soft_labels"):
        from mltagger.paths import resolve_path
        from mltagger.teacher import load_soft_labels

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
    run = _wandb_run(accelerator)
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
            progress = _progress(accelerator, batches, f"epoch {state.epoch + 1}")
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
                _save_hf(accelerator, model, tokenizer, out_dir / BEST)
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
            _checkpoint(accelerator, state, out_dir)
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

        metrics = _finish(
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


def _finish(
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

    from mltagger import plots

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
        metrics.update(_behaviour(model_dir, out_dir))
        (out_dir / "metrics.json").write_text(
            json.dumps({"summary": metrics, "history": state.history}, indent=1) + "\n"
        )
    if cfg.update_latest:
        point_latest(model_dir, Path(cfg.paths.models_dir))
    _log_to_wandb(run, cfg, data, out_dir, model_dir, val_report, test_report, metrics)
    print(headline(cfg.model.name, metrics, decision))
    print(f"Run folder: {out_dir}\nModel folder: {model_dir}")
    return metrics


def headline(name: str, metrics: dict, decision: dict) -> str:
    """The lines `make train` ends with: test and fresh side by side, per-tag and global rule."""

    def f(key: str) -> str:
        v = metrics.get(key)
        return "  —  " if v is None else f"{v:.3f}"

    from mltagger.evaluate import HEADLINE_ROWS

    rows = HEADLINE_ROWS
    lines = [
        f"\n{name}: decision rule {decision['rule_used']} ({decision['why']})",
        f"  {'':40s} {'test':>7s} {'fresh':>7s}   (global val threshold: test  fresh)",
    ]
    for label, key in rows:
        lines.append(
            f"  {label:40s} {f('test/' + key):>7s} {f('fresh/' + key):>7s}"
            f"   {f('test_global/' + key):>27s} {f('fresh_global/' + key):>6s}"
        )
    return "\n".join(lines)


def decision_rule(cfg, data: PreparedData, labels) -> dict:
    """The thresholds to ship: per-tag from this recipe's out-of-fold predictions, or global.

    Returns {rule_used, why, thresholds (dict or None = choose one on val), ...}.
    """
    from mltagger.cv import config_fingerprint
    from mltagger.evaluate import choose_tag_thresholds
    from mltagger.paths import resolve_path

    ecfg = cfg.eval
    mode = ecfg.get("decision", "global")
    if mode not in ("auto", "per_tag", "global"):
        raise ValueError(f"eval.decision={mode!r}: use auto, per_tag or global")
    if mode == "global":
        return {"rule_used": "global", "why": "eval.decision=global", "thresholds": None}
    path = resolve_path(ecfg.oof, cfg.paths.root_dir) if ecfg.get("oof") else None
    fingerprint = config_fingerprint(cfg, data)
    problem = None
    if path is None or not path.is_file():
        problem = f"no out-of-fold predictions at eval.oof={ecfg.get('oof')}"
    else:
        oof = json.loads(path.read_text())
        if oof.get("fingerprint") != fingerprint:
            problem = (
                f"{path.name} holds out-of-fold predictions of another recipe (fingerprint "
                f"{oof.get('fingerprint')}, this run {fingerprint})"
            )
        elif list(oof.get("labels", [])) != list(labels):
            problem = f"{path.name} has classes {oof.get('labels')}, this run {labels}"
    if problem:
        hint = "run `make cv` with the same overrides and point eval.oof at its oof.json"
        if mode == "per_tag":
            raise ValueError(f"eval.decision=per_tag: {problem}; {hint}")
        log.warning(
            "per-tag thresholds not used: %s; falling back to one val threshold (%s)", problem, hint
        )
        return {"rule_used": "global", "why": f"auto: {problem}", "thresholds": None}
    # Rows of weak train-only sources (`weak`) are there for the label-issue search only.
    rows = [r for r in oof["oof"] if not r.get("weak")]
    probs = np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float)
    chosen = choose_tag_thresholds(
        probs,
        [r["gold"] for r in rows],
        labels,
        float(ecfg.get("tag_precision_target", ecfg.precision_target)),
        rule=str(ecfg.get("tag_rule", "pooled")),
        prior_strength=float(ecfg.get("prior_strength", 20.0)),
    )
    return {
        "rule_used": "per_tag",
        "why": f"{len(rows)} out-of-fold predictions of this recipe ({path.name})",
        "thresholds": chosen["thresholds"],
        "tag_rule": chosen["rule"],
        "precision_target": chosen["precision_target"],
        "prior": chosen["prior"],
        "oof_file": str(ecfg.oof),
        "fingerprint": fingerprint,
        "per_tag_detail": chosen["per_tag"],
    }


def evaluate_fresh(data, labels, probs, eval_cfg, threshold, out_dir, title) -> dict:
    """The fresh set's report under the shipped rule (written to <run>/fresh/ with out_dir)."""
    from mltagger.evaluate import predictions_records, write_report

    kw = eval_kwargs(data, eval_cfg, labels)
    report = evaluate_predictions(data.fresh, probs, labels, threshold=threshold, **kw)
    report["fresh"] = data.fresh_manifest
    if out_dir is not None:
        write_report(
            report,
            Path(out_dir) / "fresh",
            f"{title} — fresh 2023–2026 set",
            predictions_records(data.fresh, probs, labels, threshold, data.fallback_tag),
        )
    return report


def _behaviour(model_dir: Path, out_dir: Path) -> dict[str, float]:
    """The behavioural suite on the saved model: behavior.json, a section of test/report.md, and
    `behavior/<family>` pass rates for the run's metrics."""
    from mltagger.behavior import format_suite, run_suite, write_suite
    from mltagger.predict import TorchPredictor

    suite = run_suite(TorchPredictor(model_dir))
    write_suite(suite, out_dir / "behavior.json")
    report = out_dir / "test" / "report.md"
    if report.is_file():
        with report.open("a") as fh:
            fh.write("\n## Behavioural tests (mltagger.behavior)\n\n" + format_suite(suite) + "\n")
    log.info("behavioural tests:\n%s", format_suite(suite))
    return {f"behavior/{name}": fam["pass_rate"] for name, fam in suite.items()}


def _progress(accelerator, total: int, desc: str):
    if not accelerator.is_local_main_process:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _save_hf(accelerator, model, tokenizer, folder: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    accelerator.wait_for_everyone()


def _checkpoint(accelerator, state: TrainState, out_dir: Path) -> None:
    """Save this epoch's full state and drop the previous one (optimizer states are large)."""
    folder = out_dir / CHECKPOINTS / f"epoch_{state.epoch}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "train_state.json").write_text(json.dumps(state.state_dict(), indent=1))
        for old in (out_dir / CHECKPOINTS).glob("epoch_*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def model_card(
    cfg,
    data: PreparedData,
    labels,
    val_report,
    test_report,
    temperature,
    state: TrainState,
    fresh_report: dict | None = None,
) -> str:
    """A short model card: what it was trained on, how well it does per tag and slice, limits."""
    from mltagger.evaluate import _scope_md, fmt, per_class_table

    at = test_report["coverage"]["at_threshold"] or {}
    weak = sorted(
        ((n, s) for n, s in test_report["slices"].items() if s.get(Metric.ACCURACY) is not None),
        key=lambda x: x[1][Metric.ACCURACY],
    )[:3]
    weak_lines = [
        f"- `{n}` (n={s[Metric.NUM_SAMPLES]}{', noisy' if s['noisy'] else ''}): "
        f"accuracy {s[Metric.ACCURACY]:.3f}"
        for n, s in weak
    ]
    counts = data.manifest()["counts"]
    sources = ", ".join(f"`{src['path']}`" for src in data.sources)
    return "\n".join(
        [
            f"# mltagger model: {cfg.model.name}",
            "",
            f"Fine-tuned from `{cfg.model.name_or_path}` for {state.best_epoch} epochs (best of "
            f"{state.epoch}) on {sources} "
            f"(data sha256 `{data.data_sha256}`)"
            + (
                f"; suspect weak labels: {data.label_noise['action']} "
                f"({data.label_noise['affected']} train rows)."
                if data.label_noise
                else "."
            ),
            f"Classes: {', '.join(labels)}. Answers are always one of: {', '.join(data.tags)}.",
            "",
            "## Intended use",
            "",
            "Tag machine-learning content (title + description) on the platform. Items whose "
            "calibrated confidence is below "
            + (
                "their predicted tag's threshold ("
                + ", ".join(
                    f"{t}: {v:.3f}" for t, v in test_report["coverage"]["threshold"].items()
                )
                + "; chosen per tag on out-of-fold predictions)"
                if isinstance(test_report["coverage"]["threshold"], dict)
                else fmt(at.get(Metric.THRESHOLD))
            )
            + " get "
            f"`{data.fallback_tag}` with needs_review and go to a person"
            + (
                "."
                if test_report["coverage"]["threshold"] is not None
                else " (the precision target was not reachable on val: every item goes to review)."
            ),
            "",
            "## Test figures",
            "",
            f"{test_report[Metric.NUM_SAMPLES]} test items. Weighted F1 "
            f"{test_report['overall'][Metric.F1_WEIGHTED]:.3f}; at the review threshold (chosen on "
            f"val for precision {cfg.eval.precision_target}): auto-tag precision "
            f"{fmt(at.get(Metric.AUTO_PRECISION))}, coverage {fmt(at.get(Metric.COVERAGE))}."
            f" Temperature {temperature:.3f}; ECE {test_report['calibration'][Metric.ECE]:.3f}.",
            "",
            per_class_table(test_report),
            "",
            *_scope_md(test_report.get("scope")),
            "Weakest slices:",
            *weak_lines,
            "",
            *_fresh_card(fresh_report),
            "## Limits",
            "",
            f"- Trained on {sum(counts['train'].values())} items; small tags have few test items "
            f"({', '.join(f'{t}: {n}' for t, n in counts['test'].items())}), so their figures are "
            "noisy.",
            "- English text only."
            + (
                " Out-of-scope content is a trained class (`other`); the table above says how "
                "often it still gets a topic."
                if "other" in labels
                else " Content outside the trained classes is answered with the closest class "
                "unless its confidence falls below the threshold."
            ),
            "",
        ]
    )


def _fresh_card(report: dict | None) -> list[str]:
    """The model card's fresh-set section: 2023-2026 content the training data never had."""
    from mltagger.evaluate import _scope_md, fmt, per_class_table

    if report is None:
        return []
    at = report["coverage"]["at_threshold"] or {}
    return [
        "## Fresh figures (2023–2026 items, never trained on)",
        "",
        f"{report[Metric.NUM_SAMPLES]} items ({report.get('fresh', {}).get('path', '')}). "
        f"Weighted F1 {fmt(report['overall'].get(Metric.F1_WEIGHTED))}; auto-tag precision "
        f"{fmt(at.get(Metric.AUTO_PRECISION))} at coverage {fmt(at.get(Metric.COVERAGE))}.",
        "",
        per_class_table(report),
        "",
        *_scope_md(report.get("scope")),
    ]


def _wandb_run(accelerator):
    """The wandb Run on the main process when W&B tracking is on, else None."""
    if not accelerator.is_main_process or not accelerator.log_with:
        return None
    return accelerator.get_tracker("wandb", unwrap=True)


def _log_to_wandb(
    run,
    cfg,
    data: PreparedData,
    out_dir: Path,
    model_dir: Path,
    val_report,
    test_report,
    metrics: dict,
) -> None:
    """Summary, per-tag / per-slice / mistakes tables, plots and the dataset -> model artifacts."""
    if run is None:
        return
    import wandb

    run.summary.update(metrics)
    tables = {}
    fresh_path = out_dir / "fresh" / "metrics.json"
    fresh_report = json.loads(fresh_path.read_text()) if fresh_path.is_file() else None
    for split, report in (("val", val_report), ("test", test_report), ("fresh", fresh_report)):
        if report is None:
            continue
        auto = (report["coverage"]["at_threshold"] or {}).get("per_class_auto", {})
        thr = report["coverage"]["threshold"]
        tables[f"{split}/per_tag"] = wandb.Table(
            columns=[
                "tag",
                "precision",
                "recall",
                "f1",
                "support",
                "threshold",
                "auto_tagged",
                "auto_precision",
                "auto_precision_ci95_low",
                "auto_precision_ci95_high",
            ],
            data=[
                [
                    t,
                    v["precision"],
                    v["recall"],
                    v["f1"],
                    v["num_samples"],
                    thr.get(t) if isinstance(thr, dict) else thr,
                    auto.get(t, {}).get("num_auto"),
                    auto.get(t, {}).get("precision"),
                    (auto.get(t, {}).get("precision_ci95") or [None, None])[0],
                    (auto.get(t, {}).get("precision_ci95") or [None, None])[1],
                ]
                for t, v in report["per_class"].items()
            ],
        )
        tables[f"{split}/per_slice"] = wandb.Table(
            columns=[
                "slice",
                "num_samples",
                "noisy",
                "accuracy",
                "f1_weighted",
                "auto_precision",
                "coverage",
            ],
            data=[
                [
                    n,
                    s[Metric.NUM_SAMPLES],
                    s["noisy"],
                    s.get(Metric.ACCURACY),
                    s.get(Metric.F1_WEIGHTED),
                    (s.get("at_threshold") or {}).get(Metric.AUTO_PRECISION),
                    (s.get("at_threshold") or {}).get(Metric.COVERAGE),
                ]
                for n, s in report["slices"].items()
            ],
        )
    records = [
        json.loads(line)
        for line in (out_dir / "test" / "predictions.jsonl").read_text().splitlines()
    ]
    tables["test/mistakes"] = wandb.Table(
        columns=["id", "text", "gold", "predicted", "confidence", "needs_review"],
        data=[
            [r["id"], r["text"], r["gold"], r["predicted"], r["confidence"], r["needs_review"]]
            for r in records
            if r["gold"] != r["predicted"]
        ],
    )
    images = {
        f"{split}/{name}": wandb.Image(str(out_dir / split / f"{name}.png"))
        for split in ("val", "test", "fresh")
        for name in ("confusion_matrix", "precision_coverage", "reliability")
        if (out_dir / split / f"{name}.png").is_file()
    }
    images["training_curves"] = wandb.Image(str(out_dir / "training_curves.png"))
    run.log({**tables, **images})

    from mltagger.paths import resolve_path
    from mltagger.run import git_commit

    meta = {"data_sha256": data.data_sha256, "git": git_commit()}
    dataset = wandb.Artifact(f"data-{cfg.data.name}", type="dataset", metadata=meta)
    for src in cfg.data.sources:
        dataset.add_file(str(resolve_path(src.path, cfg.paths.root_dir)))
    dataset.add_file(str(out_dir / "split.json"))
    # Online, the dataset is an input of the run (lineage dataset -> run -> model); offline
    # runs cannot use artifacts, so it is logged as an output and synced as such.
    if run.settings.mode == "offline":
        run.log_artifact(dataset)
    else:
        run.use_artifact(dataset)
    # The run's evaluation as files, so notebooks and reports can open a W&B run like a run
    # folder (mltagger.analysis.load_run("wandb:entity/project/run_id")).
    evaluation = wandb.Artifact(f"evaluation-{run.id}", type="evaluation", metadata=meta)
    for name in ("metrics.json", "run_info.json", "config.yaml", "training_curves.png"):
        if (out_dir / name).is_file():
            evaluation.add_file(str(out_dir / name), name=name)
    for split in ("test", "fresh"):
        for path in sorted((out_dir / split).glob("*")):
            if path.is_file():
                evaluation.add_file(str(path), name=f"{split}/{path.name}")
    if (out_dir / "decision.json").is_file():
        evaluation.add_file(str(out_dir / "decision.json"), name="decision.json")
    run.log_artifact(evaluation)
    if cfg.logger.wandb.log_model:
        model_art = wandb.Artifact(
            f"model-{cfg.model.name}", type="model", metadata={**meta, **metrics}
        )
        model_art.add_dir(str(model_dir))
        run.log_artifact(model_art, aliases=["latest"])


def main() -> None:
    """Entry point (make train); returns cfg.optimized_metric to Hydra (and to sweeps)."""
    from mltagger.cli import hydra_entry

    hydra_entry("train", lambda cfg: train(cfg).get(cfg.optimized_metric))


if __name__ == "__main__":
    main()
