"""ONNX export of a trained model folder, with the parity check (ONNX logits against PyTorch
logits) that every exported candidate must pass before it is compared on quality and latency
(`candidates`); the smaller and faster graphs built from it are in `quantize` and `variants`.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from mltagger.core.errors import UserError
from mltagger.models.modelio import (
    GATE_FILE,
    PER_TAG_FILE,
    read_model_metadata,
    write_model_metadata,
)
from mltagger.models.predict import (
    EMBEDDING_OUTPUT,
    ONNX_FILE,
    embedding_layer,
)
from mltagger.models.secondary import SECONDARY_FILE

# Files of a model folder the ONNX copy keeps (weights are replaced by model.onnx).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
)


class ExportError(UserError):
    """An export that must not ship (e.g. parity below the bound); a user-facing message."""


def export_onnx(model_dir: Path, out_dir: Path, opset: int = 17) -> Path:
    """fp32 ONNX graph of a model folder's classifier, inputs with dynamic batch/sequence axes.

    Outputs: `logits`, and `embedding` (the sentence embedding of
    `mltagger.models.predict.embedding_layer`); the layer is recorded in inference.json.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # The eager attention path traces to plain ONNX ops on every opset we target.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(["an example title. and its description"], return_tensors="pt")
    labels, inference = read_model_metadata(model_dir)
    layer = embedding_layer(inference, model.config)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class LogitsAndEmbedding(torch.nn.Module):
        """Two outputs from one pass: class logits, and the mean-pooled hidden state of the
        embedding layer (L2-normalised; see `embedding_layer`)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            feeds = dict(zip(names, inputs, strict=True))
            out = self.inner(**feeds, output_hidden_states=True)
            hidden = out.hidden_states[layer]
            mask = feeds["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return out.logits, torch.nn.functional.normalize(pooled, dim=-1)

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_FILE
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    axes[EMBEDDING_OUTPUT] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            LogitsAndEmbedding(model),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits", EMBEDDING_OUTPUT],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    if (out_dir / "inference.json").is_file():
        _, out_inference = read_model_metadata(out_dir)
        extra = {**out_inference.extra, "embedding_layer": layer}
        write_model_metadata(out_dir, labels, replace(out_inference, extra=extra))
    return path


def copy_folder_files(src: Path, dst: Path) -> None:
    """Tokenizer, config, labels, inference settings, card, the out-of-scope gate, the per-tag
    promise and the secondary-tag head: everything but the weights."""
    dst.mkdir(parents=True, exist_ok=True)
    files = ("labels.json", "inference.json", "card.md", GATE_FILE, PER_TAG_FILE, SECONDARY_FILE)
    for name in (*TOKENIZER_FILES, *files):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How far an export's probabilities are from the torch model's on the same texts."""
    diff = np.abs(np.asarray(reference) - np.asarray(candidate))
    agree = np.asarray(reference).argmax(axis=1) == np.asarray(candidate).argmax(axis=1)
    return {
        "max_prob_diff": float(diff.max()) if diff.size else 0.0,
        "mean_prob_diff": float(diff.mean()) if diff.size else 0.0,
        "label_agreement": float(agree.mean()) if agree.size else 1.0,
        "num_samples": len(agree),
    }
