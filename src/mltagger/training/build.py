"""The steps of the recipe before the first epoch: the Accelerator and seed, the data, the
loaders, the model and what it distils from, the optimiser and schedule, the loss, the resumed
checkpoint and the W&B tracker.

Each step fills in its part of the `TrainingRun` and takes the config section it reads. Their
order is the recipe's (`mltagger.training.loop.train`) and matters: the seed is set once, so
every later draw (the classifier head's initialisation, the shuffling) happens in this order.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mltagger.core.errors import ConfigError, DataError
from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import write_run_info
from mltagger.core.tracking import wandb_settings
from mltagger.data.negatives import load_checked_negatives
from mltagger.data.prepare import PreparedData, prepare_data
from mltagger.data.validation import verify_checksum
from mltagger.models.modelio import resolve_model_path
from mltagger.training.batches import class_weights, tokenize_split
from mltagger.training.checkpoints import BEST, find_checkpoint
from mltagger.training.decision import decision_rule
from mltagger.training.distill import find_teacher_dir, shrink, teacher_train_logits
from mltagger.training.gate import fit_run_gate
from mltagger.training.run_state import Loaders, TrainingRun, UpdatePlan
from mltagger.training.teacher import load_soft_labels
from mltagger.training.tracking import wandb_run

log = logging.getLogger(__name__)

# Parameters that get no weight decay (biases and layer norms), as in BERT's recipe.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def check_device(trainer_cfg: DictConfig) -> None:
    """trainer=gpu needs a CUDA device this process can see, else Accelerate would fail (or
    quietly run on the CPU). A question about the machine, not the config: the config rules
    (config_rules) pass trainer=gpu anywhere, this refuses it here, before anything slow."""
    if trainer_cfg.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer=gpu but no CUDA device is visible; use trainer=cpu")


def start_run(cfg: DictConfig) -> TrainingRun:
    """The Accelerator (one CPU, one GPU or several: the same code), then the seed."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    check_device(cfg.trainer)
    out_dir = Path(cfg.paths.output_dir)
    tcfg = cfg.trainer
    checkpoint = find_checkpoint(cfg.resume) if cfg.resume else None
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
    return TrainingRun(
        accelerator=accelerator, out_dir=out_dir, checkpoint=checkpoint, wandb_kwargs=wandb_kwargs
    )


def gate_negatives(cfg: DictConfig) -> list[dict] | None:
    """The out-of-scope gate's negatives when the data config names them (`gate_negatives`),
    checked as `mltagger validate --negatives` checks them; None when it names none."""
    neg_cfg = cfg.data.get("gate_negatives")
    if not neg_cfg:
        return None
    path = resolve_path(neg_cfg.path, cfg.paths.root_dir)
    verify_checksum(path, neg_cfg.get("sha256"))
    return load_checked_negatives(path, cfg.data, cfg.paths.root_dir)


def load_data(run: TrainingRun, cfg: DictConfig, data: PreparedData | None) -> None:
    """The splits (or the given ones), the model's classes and the decision rule.

    Data and model files are resolved before anything slow, so a mistake fails in seconds; the
    decision rule is settled here too, so out-of-fold predictions of another recipe stop the run
    now, not after the epochs.
    """
    run.teacher_dir = find_teacher_dir(cfg)
    run.model_path = resolve_model_path(cfg.model.name_or_path)
    if data is None:
        data = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=run.out_dir)
    run.data, run.labels = data, data.label_names()
    run.decision = decision_rule(cfg, data, run.labels)
    run.gate_negatives = gate_negatives(cfg)
    # The gate learns from texts alone (no encoder): fitted now, so the shipped rule's figures
    # on val, test and fresh are the gated ones.
    run.gate = (
        fit_run_gate(data.splits["train"], run.gate_negatives, data.fallback_tag, cfg.seed)
        if run.gate_negatives is not None
        else None
    )
    accelerator = run.accelerator
    if accelerator.is_main_process:
        write_run_info(
            run.out_dir,
            cfg,
            data.manifest(),
            {
                "model_path": run.model_path,
                "num_processes": accelerator.num_processes,
                "device": str(accelerator.device),
                "mixed_precision": cfg.trainer.mixed_precision,
            },
        )


def build_loaders(run: TrainingRun, model_cfg: DictConfig, trainer_cfg: DictConfig) -> None:
    """Tokenised train, val, test (and fresh) splits behind dynamically padded loaders."""
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, DataCollatorWithPadding

    data, labels = run.data, run.labels
    run.tokenizer = AutoTokenizer.from_pretrained(run.model_path)
    with run.accelerator.main_process_first():
        run.weighted = any("weight" in it for it in data.splits["train"])
        train_ds, val_ds, test_ds = (
            tokenize_split(
                data.splits[s],
                labels,
                run.tokenizer,
                model_cfg.max_length,
                run.weighted and s == "train",
            )
            for s in ("train", "val", "test")
        )
    collator = DataCollatorWithPadding(
        run.tokenizer, pad_to_multiple_of=8 if trainer_cfg.mixed_precision != "no" else None
    )
    loader_kw = {"collate_fn": collator, "num_workers": trainer_cfg.num_workers}
    eval_size = model_cfg.eval_batch_size
    run.loaders = Loaders(
        train=DataLoader(train_ds, batch_size=model_cfg.batch_size, shuffle=True, **loader_kw),
        val=DataLoader(val_ds, batch_size=eval_size, **loader_kw),
        test=DataLoader(test_ds, batch_size=eval_size, **loader_kw),
    )
    if data.fresh:
        # Fresh gold tags may name a tag the model has no class for; the loader needs none.
        fresh_items = [{**it, "tag": labels[0]} for it in data.fresh]
        fresh_ds = tokenize_split(fresh_items, labels, run.tokenizer, model_cfg.max_length)
        run.loaders.fresh = DataLoader(fresh_ds, batch_size=eval_size, **loader_kw)
    run.train_targets = [int(x) for x in train_ds["labels"]]


def build_model(run: TrainingRun, model_cfg: DictConfig, distill_cfg: DictConfig | None) -> None:
    """The encoder with a fresh classification head for this data's classes; when distilling
    from a teacher folder, only the encoder layers distill.keep_layers names are kept."""
    from transformers import AutoModelForSequenceClassification

    labels = run.labels
    run.model = AutoModelForSequenceClassification.from_pretrained(
        run.model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)},
        hidden_dropout_prob=model_cfg.dropout,
        attention_probs_dropout_prob=model_cfg.dropout,
        # A checkpoint with another head (e.g. an earlier mltagger model) gets a fresh one.
        ignore_mismatched_sizes=True,
    )
    if run.teacher_dir is not None and distill_cfg.get("keep_layers"):
        run.model = shrink(run.model, distill_cfg.keep_layers)


def load_teacher_signal(run: TrainingRun, cfg: DictConfig) -> None:
    """What the student distils from: a teacher folder's logits on the train split, or a shipped
    teacher's soft labels (make teacher); nothing when the config names neither."""
    if run.teacher_dir is not None:
        run.teacher_logits = teacher_train_logits(
            run.teacher_dir,
            run.data.splits["train"],
            run.labels,
            cfg,
            run.accelerator,
            collator_kw={"num_workers": cfg.trainer.num_workers},
        )
    elif cfg.get("distill") and cfg.distill.get("soft_labels"):
        _load_soft_labels(run, cfg.distill, cfg.paths.root_dir)


def _load_soft_labels(run: TrainingRun, distill_cfg: DictConfig, root_dir: str) -> None:
    """A shipped teacher's probabilities: distillation without running the teacher. Labels
    made for other data or classes stop the run (DataError): a silent fallback to gold labels
    would ship a different recipe under the same name. The run folder says what it learnt from
    (soft_labels.json, next to its config)."""
    soft, run.soft_info = load_soft_labels(
        resolve_path(distill_cfg.soft_labels, root_dir),
        run.data,
        run.labels,
        run.data.splits["train"],
    )
    if run.accelerator.is_main_process:
        (run.out_dir / "soft_labels.json").write_text(json.dumps(run.soft_info, indent=1) + "\n")
    if soft is None:
        raise DataError(
            f"distill.soft_labels={distill_cfg.soft_labels} does not fit this run: "
            f"{run.soft_info['reason']}; rebuild them for this data with `make teacher`, or "
            "train without a teacher: distill.soft_labels=null"
        )
    run.teacher_logits = torch.log(torch.tensor(soft, dtype=torch.float32).clamp_min(1e-6))
    log.info(
        "soft labels of teacher %s for %d train items (alpha %.2f, T %.1f)",
        (run.soft_info.get("teacher") or {}).get("name"),
        len(soft),
        distill_cfg.alpha,
        distill_cfg.temperature,
    )


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's two groups: weight decay on the weights, none on biases and layer norms."""
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]


def plan_updates(
    loader_batches: int, limit: int | None, accumulation: int, max_epochs: int
) -> UpdatePlan:
    """Batches per epoch (at most `limit`), and the optimiser updates they make per epoch and
    in all: one update per `accumulation` batches, a last partial group counting as one."""
    batches = min(loader_batches, limit) if limit else loader_batches
    per_epoch = math.ceil(batches / accumulation)
    return UpdatePlan(batches, per_epoch, per_epoch * max_epochs)


def build_optimiser(run: TrainingRun, optim_cfg: DictConfig, trainer_cfg: DictConfig) -> None:
    """AdamW and the learning-rate schedule, with the model and loaders prepared for the
    devices; the loop's counters are registered so each checkpoint saves them."""
    from transformers import get_scheduler

    accelerator, loaders = run.accelerator, run.loaders
    optimizer = torch.optim.AdamW(
        parameter_groups(run.model, optim_cfg.weight_decay),
        lr=optim_cfg.lr,
        betas=tuple(optim_cfg.betas),
        eps=optim_cfg.eps,
    )
    run.model, optimizer, loaders.train, loaders.val, loaders.test = accelerator.prepare(
        run.model, optimizer, loaders.train, loaders.val, loaders.test
    )
    if loaders.fresh is not None:
        loaders.fresh = accelerator.prepare(loaders.fresh)
    # Step counts after prepare: sharding across processes changes the loader length.
    run.plan = plan_updates(
        len(loaders.train),
        trainer_cfg.limit_train_batches,
        trainer_cfg.gradient_accumulation_steps,
        trainer_cfg.max_epochs,
    )
    # A prepared scheduler steps once per process per update, hence the factor.
    processes = accelerator.num_processes
    scheduler = get_scheduler(
        optim_cfg.scheduler,
        optimizer,
        num_warmup_steps=int(optim_cfg.warmup_ratio * run.plan.total_updates) * processes,
        num_training_steps=run.plan.total_updates * processes,
    )
    run.optimizer, run.scheduler = optimizer, accelerator.prepare(scheduler)
    accelerator.register_for_checkpointing(run.state)


def build_loss(run: TrainingRun, loss_cfg: DictConfig) -> None:
    """Cross-entropy with the configured class weighting; per row when some train rows carry
    a loss weight (the loop then averages with those weights)."""
    weights = class_weights(run.train_targets, len(run.labels), loss_cfg.class_weighting)
    run.loss_fn = torch.nn.CrossEntropyLoss(
        weight=weights.to(run.accelerator.device) if weights is not None else None,
        label_smoothing=loss_cfg.label_smoothing,
        reduction="none" if run.weighted else "mean",
    )


def resume(run: TrainingRun) -> None:
    """Model, optimiser, schedule, sampler and counters back from the checkpoint, if any, and
    the best model so far copied into this run's folder."""
    if run.checkpoint is None:
        return
    accelerator = run.accelerator
    accelerator.load_state(str(run.checkpoint))
    log.info("resumed from %s after epoch %d", run.checkpoint, run.state.epoch)
    old_best = run.checkpoint.parent.parent / BEST
    if accelerator.is_main_process and old_best.resolve() != (run.out_dir / BEST).resolve():
        shutil.copytree(old_best, run.out_dir / BEST, dirs_exist_ok=True)
    accelerator.wait_for_everyone()


def start_trackers(run: TrainingRun, cfg: DictConfig) -> None:
    """The W&B run (offline unless configured otherwise) with the resolved config, when on."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if run.wandb_kwargs:
        run.accelerator.init_trackers(
            cfg.logger.wandb.project, config=config, init_kwargs={"wandb": run.wandb_kwargs}
        )
    run.tracker = wandb_run(run.accelerator)
    if run.tracker is not None:
        run.tracker.define_metric(cfg.trainer.monitor, summary="max")
        run.tracker.define_metric("train/loss", summary="min")
