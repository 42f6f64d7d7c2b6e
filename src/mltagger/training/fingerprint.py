"""The fingerprint of a training config and its data: CV out-of-fold files and the decision rule
they feed are reused only when both match."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mltagger.core.paths import resolve_path
from mltagger.data.prepare import PreparedData
from mltagger.data.validation import sha256_file


def _sha_or_none(path, cfg) -> str | None:
    if not path:
        return None

    full = resolve_path(path, cfg.paths.root_dir)
    return sha256_file(full) if Path(full).is_file() else None


def _without_oof(noise):
    return None if noise is None else {k: v for k, v in noise.items() if k != "oof"}


def config_fingerprint(cfg: DictConfig, data: PreparedData) -> str:
    """What makes two trainings the same model recipe: model, optimiser, loss, epochs, data.

    Out-of-fold predictions (and the thresholds chosen on them) belong to one recipe; training
    compares fingerprints before using them for another run.
    """
    keep = {
        "model": {k: v for k, v in cfg.model.items() if k not in ("eval_batch_size",)},
        "optim": cfg.optim,
        "loss": cfg.loss,
        "trainer": {
            k: cfg.trainer.get(k)
            for k in ("max_epochs", "early_stopping_patience", "monitor", "limit_train_batches")
        },
        "temperature_scaling": cfg.get("temperature_scaling"),
        # label_noise.oof only picks the probabilities `make label-issues` judges with (folds
        # rebuild the layer from TF-IDF); counting it would make the oof.json it names a
        # file of another recipe.
        "label_noise": _without_oof(cfg.data.get("label_noise")),
        "data_sha256": data.data_sha256,
        # Per-source loss weights, caps and train-only roles change what is trained on.
        "sources": [
            {k: s[k] for k in ("name", "split", "weight", "max_per_tag") if k in s}
            for s in data.sources
        ],
        # A shipped teacher's soft labels change the loss (teacher folders are not CV'd).
        "distill": {
            "soft_labels_sha256": _sha_or_none(cfg.distill.get("soft_labels"), cfg)
            if cfg.get("distill")
            else None,
            "alpha": cfg.distill.get("alpha") if cfg.get("distill") else None,
            "temperature": cfg.distill.get("temperature") if cfg.get("distill") else None,
        },
        # Labels a person corrected change what is trained on and what is scored.
        "reviewed_labels_sha256": (data.reviewed_labels or {}).get("sha256"),
    }
    blob = json.dumps(OmegaConf.to_container(OmegaConf.create(keep), resolve=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
