"""The export's candidates beyond fp32: each built from the fp32 folder into a model folder of its
own (`build_variants`), then measured the same way (`measure_speed`, `batch_difference`).

Names (conf/export.yaml `quantization.variants`):

| name | graph |
|---|---|
| `fused` | fp32, ONNX Runtime's transformer fusions |
| `int8` | dynamic int8, every MatMul and Gather |
| `int8-keep<k>` | dynamic int8, the k most sensitive blocks (measured on val) in fp32 |
| `int8-static` | static int8 (QDQ), activation ranges from training texts (min/max) |
| `int8-static-pct` | the same, ranges at the 99.999th percentile |
| `int8-static-keep<k>` | static int8, the k most sensitive blocks (measured on val) in fp32 |
| `fp16` | fp16 weights and activations |
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltagger.core.errors import ConfigError
from mltagger.export import quantize as q
from mltagger.export.onnx import copy_folder_files
from mltagger.models.predict import ONNX_FILE, OnnxPredictor

log = logging.getLogger(__name__)

BASE_VARIANTS = ("fused", "int8", "int8-static", "int8-static-pct", "fp16")
KEEP_PREFIXES = ("int8-keep", "int8-static-keep")


def check_variants(names: Sequence[str]) -> list[str]:
    """The variant names, each known (one line naming the first unknown one)."""
    for name in names:
        prefix = next((p for p in KEEP_PREFIXES if name.startswith(p)), None)
        if name in BASE_VARIANTS or (prefix and name[len(prefix) :].isdigit()):
            continue
        raise ConfigError(
            f"quantization.variants: {name!r} is not a variant; choose from "
            f"{list(BASE_VARIANTS)} or int8-keep<k> / int8-static-keep<k> (k blocks kept fp32)"
        )
    return list(names)


@dataclass
class VariantInputs:
    """What the builders need besides the fp32 folder: calibration texts (training split), the
    val texts and fp32's val probabilities (the sensitivity of each block is measured on val),
    the encoder's shape (for the fusions) and the quantisation settings."""

    calibration_texts: list[str]
    val_texts: list[str]
    val_reference: np.ndarray
    num_heads: int
    hidden_size: int
    per_channel: bool = True
    reduce_range: bool = True
    calibration_batch: int = 16
    sensitivity: dict | None = field(default=None)


def _feeds(predictor: OnnxPredictor, texts: list[str], batch: int) -> list[dict]:
    feeds = []
    for start in range(0, len(texts), batch):
        enc = predictor.tokenizer.encode_batch(texts[start : start + batch])
        full = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        feeds.append({k: full[k] for k in predictor.input_names})
    return feeds


def _sensitivity(fp32_dir: Path, inputs: VariantInputs, scratch: Path) -> dict:
    """Each block's damage when quantised alone (dynamic int8), on val, computed once."""
    if inputs.sensitivity is None:

        def score(graph: Path) -> np.ndarray:
            shutil.copy2(graph, scratch / ONNX_FILE)
            return OnnxPredictor(scratch, batch_size=64).predict_proba(inputs.val_texts)

        copy_folder_files(fp32_dir, scratch)
        inputs.sensitivity = q.block_sensitivity(
            fp32_dir / ONNX_FILE,
            scratch,
            score,
            inputs.val_reference,
            per_channel=inputs.per_channel,
            reduce_range=inputs.reduce_range,
        )
        ranked = q.most_sensitive(inputs.sensitivity, len(inputs.sensitivity))
        log.info("int8 sensitivity on val, most damaging first: %s", ranked)
    return inputs.sensitivity


def build_variant(name: str, fp32_dir: Path, out_dir: Path, inputs: VariantInputs) -> Path:
    """The model folder of one variant (tokenizer and metadata copied from fp32)."""
    copy_folder_files(fp32_dir, out_dir)
    src, dst = fp32_dir / ONNX_FILE, out_dir / ONNX_FILE
    settings = {"per_channel": inputs.per_channel, "reduce_range": inputs.reduce_range}
    keep: list[str] = []
    for prefix in KEEP_PREFIXES:
        if name.startswith(prefix):
            sens = _sensitivity(fp32_dir, inputs, out_dir.parent / ".sensitivity")
            keep = q.nodes_of(src, q.most_sensitive(sens, int(name[len(prefix) :])))
    if name == "fused":
        q.fused(src, dst, inputs.num_heads, inputs.hidden_size)
    elif name == "fp16":
        q.float16(src, dst)
    elif name == "int8" or name.startswith("int8-keep"):
        q.dynamic_int8(src, dst, exclude=keep, **settings)
    else:  # static
        feeds = _feeds(OnnxPredictor(fp32_dir), inputs.calibration_texts, inputs.calibration_batch)
        method = "percentile" if name == "int8-static-pct" else "minmax"
        q.static_int8(src, dst, feeds, exclude=keep, method=method, **settings)
    return out_dir


def measure_speed(folder: Path, texts: Sequence[str], threads: int, warmup: int = 20) -> dict:
    """Single-item latency (p50/p99 over `texts`, one per call, tokenisation included) and
    batch-32 throughput: what `make bench` measures, here in the export's own process so that
    every candidate is timed under the same load."""
    predictor = OnnxPredictor(folder, batch_size=32, threads=threads)
    for text in texts[:warmup]:
        predictor.encode([text])
    times = []
    for text in texts:
        t0 = time.perf_counter()
        predictor.predict_proba([text])
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    predictor.predict_proba(list(texts))
    batch_s = time.perf_counter() - t0
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "batch32_items_per_s": len(texts) / batch_s,
    }


def batch_difference(folder: Path, texts: Sequence[str]) -> float:
    """Largest probability difference between answering each text alone and all of them in one
    batch (padded to the longest): what micro-batching changes for a request."""
    predictor = OnnxPredictor(folder, batch_size=len(texts))
    alone = np.concatenate([predictor.predict_proba([t]) for t in texts])
    together = predictor.predict_proba(list(texts))
    return float(np.abs(alone - together).max())
