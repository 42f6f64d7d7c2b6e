"""Knowledge distillation: a shallower student learns from the fine-tuned teacher's soft labels.

Used by the training loop when `distill.teacher` is set (`make distill`): the student is the
teacher with only some of its transformer layers kept (DistilBERT-style initialisation from a
subset of the teacher's layers, head included), or any encoder named by `model.name_or_path`,
and the loss mixes the teacher's temperature-softened probabilities with the gold labels:

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, gold)

T^2 keeps the soft term's gradients on the scale of the hard term as T grows (Hinton et al.).
Everything else - evaluation, checkpoints, threshold, model folder, W&B - is the normal loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mltagger.core.errors import ConfigError, UserError
from mltagger.core.paths import resolve_path
from mltagger.models.modelio import read_model_metadata
from mltagger.training.batches import predict_logits, tokenize_split

log = logging.getLogger(__name__)


def encoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer layers of a BERT-family classifier."""
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"cannot find encoder layers in {type(model).__name__}: layer selection needs a "
            "BERT-family model (base_model.encoder.layer); use distill.keep_layers=null with a "
            "smaller encoder as the student instead"
        )
    return layers


def shrink(model, keep_layers: Sequence[int]):
    """Keep only `keep_layers` (indices into the teacher's layers) of a classifier, in place."""
    layers = encoder_layers(model)
    n = len(layers)
    keep = [int(i) for i in keep_layers]
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
        raise ConfigError(
            f"distill.keep_layers={list(keep_layers)} must be increasing indices in [0, {n})"
        )
    base = getattr(model, model.base_model_prefix)
    base.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
    log.info("student keeps teacher layers %s of %d", keep, n)
    return model


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    hard_loss: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss (per batch, mean)."""
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard_loss


def find_teacher_dir(cfg) -> Path | None:
    """The teacher's model folder when distilling (checked before any slow work), else None."""
    teacher = cfg.get("distill", {}).get("teacher") if cfg.get("distill") else None
    if not teacher:
        return None

    folder = resolve_path(teacher, cfg.paths.root_dir)
    if not folder.exists():
        raise FileNotFoundError(
            f"distill.teacher={teacher}: no such model folder; train a teacher first (make train) "
            "or point distill.teacher at one"
        )
    read_model_metadata(folder)  # a real model folder, with labels and inference settings
    return folder.resolve()


def teacher_train_logits(teacher_dir: Path, items, labels, cfg, accelerator, collator_kw):
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

    teacher_labels, _ = read_model_metadata(teacher_dir)
    if list(teacher_labels) != list(labels):
        raise UserError(
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
