"""Turn items into approved tags with a model folder: the decision rule the product applies.

`Predictor.load(folder)` reads the weights, tokenizer and inference.json once; `predict(items)`
batches, applies the temperature and the review threshold, and returns one record per item whose
`tag` is always an approved tag (the fallback tag when confidence is below the threshold), and
`reason` says which path gave it: `classifier` or `low_confidence`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mltagger.evaluate import REASON_CLASSIFIER, REASON_LOW_CONFIDENCE, apply_threshold
from mltagger.modelio import read_model_metadata


class Predictor:
    """A loaded model folder (torch backend)."""

    def __init__(self, folder: str | Path, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.folder = Path(folder)
        self.labels, self.inference = read_model_metadata(self.folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.folder).eval()
        self.batch_size = batch_size
        self._torch = torch

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    truncation=True,
                    max_length=self.inference.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(self.model(**enc).logits.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        z = self.logits(texts) / self.inference.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, items: Sequence[dict]) -> list[dict]:
        """Items need `text` (as made by mltagger.data) and optionally `id`."""
        probs = self.predict_proba([it["text"] for it in items])
        tags, conf, review = apply_threshold(
            probs, self.labels, self.inference.threshold, self.inference.fallback_tag
        )
        return [
            {
                "id": it.get("id"),
                "tag": tag,
                "confidence": round(float(c), 6),
                "needs_review": bool(r),
                # `other` can be the classifier's answer or the low-confidence fallback.
                "reason": REASON_LOW_CONFIDENCE if r else REASON_CLASSIFIER,
                "scores": {t: round(float(p), 6) for t, p in zip(self.labels, row, strict=True)},
                "model_version": self.inference.model_version,
            }
            for it, tag, c, r, row in zip(items, tags, conf, review, probs, strict=True)
        ]

    def predict_iter(self, items: Sequence[dict], progress: bool = True) -> Iterable[dict]:
        """predict() in chunks with a progress bar on long inputs."""
        from tqdm.auto import tqdm

        chunk = self.batch_size * 4
        bar = tqdm(
            total=len(items),
            desc="predict",
            unit="item",
            disable=not progress or len(items) <= chunk,
        )
        for start in range(0, len(items), chunk):
            batch = items[start : start + chunk]
            yield from self.predict(batch)
            bar.update(len(batch))
        bar.close()
