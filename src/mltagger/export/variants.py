"""The export's candidates beyond fp32: each built from the fp32 folder into a model folder of its
own (`build_variant`), then measured the same way (`measure_speeds`, `batch_difference`).

Names (conf/export.yaml `quantization.variants`):

| name | graph |
|---|---|
| `fused` | fp32, ONNX Runtime's transformer fusions |
| `int8` | dynamic int8, every MatMul and Gather |
| `int8-keep<k>` | dynamic int8, the k most sensitive blocks (measured on val) in fp32 |
| `int8-static` | static int8 (QDQ), activation ranges from training texts (min/max) |
| `int8-static-pct` | the same, ranges at the 99.999th percentile |
| `int8-static-keep<k>` | static int8, the k most sensitive MatMuls (measured on val) in fp32 |
| `fp16` | fp16 weights and activations |
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltagger.core.errors import ConfigError
from mltagger.export import quantize as q
from mltagger.export.onnx import copy_folder_files
from mltagger.models.predict import ONNX_FILE, OnnxPredictor
from mltagger.models.timing import interleaved

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
    the encoder's shape (for the fusions), a scratch folder (calibration cache, sensitivity runs)
    and the quantisation settings."""

    calibration_texts: list[str]
    val_texts: list[str]
    val_reference: np.ndarray
    num_heads: int
    hidden_size: int
    scratch: Path
    per_channel: bool = True
    reduce_range: bool = True
    static_reduce_range: bool = False
    calibration_batch: int = 16
    sensitivity: dict = field(default_factory=dict)


def _feeds(
    predictor: OnnxPredictor, texts: list[str], batch: int, pad_to: int | None = None
) -> list[dict]:
    """Tokenised batches as the graph takes them; `pad_to`: every batch padded to that many
    tokens (the histogram calibrators stack their batches, so the shapes must agree)."""
    feeds = []
    pad_id = (predictor.tokenizer.padding or {}).get("pad_id", 0)
    for start in range(0, len(texts), batch):
        enc = predictor.tokenizer.encode_batch(texts[start : start + batch])
        full = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        if pad_to is not None:
            extra = pad_to - full["input_ids"].shape[1]
            for key, value in full.items():
                fill = pad_id if key == "input_ids" else 0
                full[key] = np.pad(value, ((0, 0), (0, extra)), constant_values=fill)
        feeds.append({k: full[k] for k in predictor.input_names})
    return feeds


def _scorer(fp32_dir: Path, inputs: VariantInputs, scratch: Path) -> Callable[[Path], np.ndarray]:
    """A function answering the val texts with a graph (in a copy of the fp32 folder)."""
    copy_folder_files(fp32_dir, scratch)

    def score(graph: Path) -> np.ndarray:
        shutil.copy2(graph, scratch / ONNX_FILE)
        return OnnxPredictor(scratch, batch_size=64).predict_proba(inputs.val_texts)

    return score


def _keep(name: str, fp32_dir: Path, inputs: VariantInputs, scratch: Path) -> list[str]:
    """The nodes a keep variant leaves fp32: the k most sensitive units, measured once on val
    (dynamic: per block, 7 units; static: per MatMul, 36 on MiniLM-L6, each quantised alone
    with the calibrated ranges read from the cache)."""
    src = fp32_dir / ONNX_FILE
    static = name.startswith("int8-static-keep")
    k = int(name.rsplit("keep", 1)[1])
    kind = "static" if static else "dynamic"
    if kind not in inputs.sensitivity:
        scratch.mkdir(parents=True, exist_ok=True)
        if static:
            by_block = q.quantizable_nodes(src, ("MatMul",)).values()
            units = {n: [n] for names in by_block for n in names}
        else:
            units = q.quantizable_nodes(src)
        inputs.sensitivity[kind] = q.sensitivity(
            units,
            lambda path, exclude: _quantize(kind, src, path, exclude, fp32_dir, inputs),
            scratch,
            _scorer(fp32_dir, inputs, scratch / "folder"),
            inputs.val_reference,
        )
        ranked = q.most_sensitive(inputs.sensitivity[kind], 5)
        log.info("%s int8 on val, the most damaging units first: %s", kind, ranked)
    chosen = q.most_sensitive(inputs.sensitivity[kind], k)
    return chosen if static else q.nodes_of(src, chosen)


def _quantize(
    kind: str, src: Path, dst: Path, exclude: Sequence[str], fp32_dir: Path, inputs: VariantInputs
) -> None:
    if kind == "dynamic":
        q.dynamic_int8(
            src,
            dst,
            exclude=exclude,
            per_channel=inputs.per_channel,
            reduce_range=inputs.reduce_range,
        )
        return
    method = "percentile" if kind == "static-pct" else "minmax"
    cache = inputs.scratch / f"calibration-{method}.json"
    settings = {
        "method": method,
        "per_channel": inputs.per_channel,
        "reduce_range": inputs.static_reduce_range,
        "cache": cache,
    }
    if not cache.is_file():  # calibrate once, every quantised tensor's range
        fp32 = OnnxPredictor(fp32_dir)
        pad_to = fp32.inference.max_length if method == "percentile" else None
        feeds = _feeds(fp32, inputs.calibration_texts, inputs.calibration_batch, pad_to)
        inputs.scratch.mkdir(parents=True, exist_ok=True)
        q.static_int8(src, inputs.scratch / "calibrating.onnx", feeds, **settings)
    q.static_int8(src, dst, [], exclude=exclude, **settings)


def build_variant(name: str, fp32_dir: Path, out_dir: Path, inputs: VariantInputs) -> Path:
    """The model folder of one variant (tokenizer and metadata copied from fp32)."""
    copy_folder_files(fp32_dir, out_dir)
    src, dst = fp32_dir / ONNX_FILE, out_dir / ONNX_FILE
    keep = []
    if any(name.startswith(p) for p in KEEP_PREFIXES):
        keep = _keep(name, fp32_dir, inputs, inputs.scratch / "sensitivity")
    if name == "fused":
        q.fused(src, dst, inputs.num_heads, inputs.hidden_size)
    elif name == "fp16":
        q.float16(src, dst)
    elif name == "int8" or name.startswith("int8-keep"):
        _quantize("dynamic", src, dst, keep, fp32_dir, inputs)
    else:
        kind = "static-pct" if name == "int8-static-pct" else "static"
        _quantize(kind, src, dst, keep, fp32_dir, inputs)
    return out_dir


def measure_speeds(
    folders: dict[str, Path], texts: Sequence[str], threads: int | None, rounds: int = 3
) -> dict[str, dict]:
    """Single-item latency and batch-32 throughput of every export, timed together in
    interleaved rounds (`mltagger.models.timing`, what `make bench` uses too), so the export can
    choose on speed."""
    calls = {
        name: OnnxPredictor(folder, batch_size=32, threads=threads).predict_proba
        for name, folder in folders.items()
    }
    return interleaved(calls, list(texts), rounds)


def batch_difference(folder: Path, texts: Sequence[str]) -> float:
    """Largest probability difference between answering each text alone and all of them in one
    batch (padded to the longest): what micro-batching changes for a request."""
    predictor = OnnxPredictor(folder, batch_size=len(texts))
    alone = np.concatenate([predictor.predict_proba([t]) for t in texts])
    together = predictor.predict_proba(list(texts))
    return float(np.abs(alone - together).max())
