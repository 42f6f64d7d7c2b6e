"""Tokenised splits, class weights and batched prediction under Accelerate: the parts of the loop
that training, distillation and cross-validation share.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mltagger.core.errors import ConfigError, DataError
from mltagger.data.prepare import to_hf_dataset


def class_weights(labels: list[int], num_labels: int, mode: str) -> torch.Tensor | None:
    """Loss weights against class imbalance (the data is 40% NLP, 4% time-series).

    balanced: n / (K * count_k), so every class carries the same total weight; sqrt: its square
    root, which helps rare tags without making the model over-predict them.
    """
    if mode in (None, "none"):
        return None
    counts = np.bincount(labels, minlength=num_labels).astype(float)
    if (counts == 0).any():
        raise DataError("a class has no training items; cannot weight the loss by frequency")
    weights = len(labels) / (num_labels * counts)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ConfigError(f"loss.class_weighting must be none, balanced or sqrt, got {mode!r}")
    return torch.tensor(weights, dtype=torch.float32)


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


def progress_bar(accelerator, total: int, desc: str):
    if not accelerator.is_local_main_process:
        return None

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
