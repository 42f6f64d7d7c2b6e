"""The ways to make the fp32 ONNX export smaller and faster, each a function from the fp32 graph
to a new graph (`mltagger.export.candidates` evaluates them side by side):

- `fused`: ONNX Runtime's transformer optimiser (attention, LayerNorm and GELU fused into single
  kernels), still fp32: the same numbers up to float rounding, fewer kernel launches;
- `dynamic_int8`: dynamic int8, every MatMul and Gather;
- `dynamic_int8(exclude=...)`, `static_int8(exclude=...)`: int8 with the sensitive parts left in
  fp32. Which parts are sensitive is measured, not guessed (`sensitivity`): each block (dynamic)
  or each MatMul (static) alone is quantised and the damage to the val probabilities recorded;
  the most damaging ones are kept in fp32;
- `static_int8`: int8 weights *and* activations, with activation ranges calibrated once on
  training texts (QDQ format). Unlike dynamic int8, whose activation scale is computed per batch
  over the whole tensor (so an item's scores depend on the other items of its batch and on their
  padding), a static graph answers an item the same alone or micro-batched;
- `float16`: fp16 weights and activations (ONNX Runtime's converter), for CPUs with fp16
  arithmetic.

Blocks are named from the exported graph's node names (`embeddings`, `layer.<i>`, `pooler`,
`classifier`): the Hugging Face BERT-style modules the encoder is made of.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_LAYER = re.compile(r"layer\.(\d+)[./]")
# The ops ONNX Runtime's quantisers rewrite: everything else stays fp32 in every variant.
QUANTIZED_OPS = ("MatMul", "Gather")


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantisers log one INFO line per tensor, and advice as warnings: keep the job's log
    readable (their errors still show)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def block_of(node_name: str) -> str | None:
    """The encoder block a graph node belongs to (None: not one of the named blocks)."""
    match = _LAYER.search(node_name)
    if match:
        return f"layer.{match.group(1)}"
    for block in ("embeddings", "pooler", "classifier"):
        if block in node_name:
            return block
    return None


def quantizable_nodes(model_path: Path, ops: Sequence[str] = QUANTIZED_OPS) -> dict[str, list[str]]:
    """The names of the nodes int8 would rewrite (`ops` with a weight), by block."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    blocks: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in ops or not any(i in weights for i in node.input):
            continue
        block = block_of(node.name) or "other"
        blocks.setdefault(block, []).append(node.name)
    return blocks


def dynamic_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Dynamic int8 (weights int8, activations quantised per run), `exclude` nodes kept fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=list(exclude),
        )
    return out_path


def sensitivity(
    units: dict[str, list[str]],
    build: Callable[[Path, list[str]], None],
    scratch: Path,
    score: Callable[[Path], np.ndarray],
    reference: np.ndarray,
) -> dict[str, dict[str, float]]:
    """For each unit (a block, or one node), its damage when it alone is quantised: the mean
    absolute probability change against `reference` (fp32 on the same items, val) and the share
    of items whose top class changes. `build(path, exclude)` writes a quantised graph with the
    `exclude` nodes left fp32; `score(path)` answers the items with it."""
    every = [n for names in units.values() for n in names]
    out = {}
    for unit, names in units.items():
        path = scratch / "one-unit.onnx"
        own = set(names)
        build(path, [n for n in every if n not in own])
        probs = score(path)
        out[unit] = {
            "flips": float(np.mean(probs.argmax(1) != reference.argmax(1))),
            "mean_abs_diff": float(np.abs(probs - reference).mean()),
            "nodes": len(names),
        }
        path.unlink(missing_ok=True)
    return out


def most_sensitive(sensitivity: dict[str, dict[str, float]], k: int) -> list[str]:
    """The k units whose quantisation hurts most: by mean absolute probability change, which a
    val set of ~200 items measures far more finely than the few top-class flips it sees."""
    return sorted(sensitivity, key=lambda u: -sensitivity[u]["mean_abs_diff"])[:k]


def nodes_of(model_path: Path, blocks: Sequence[str]) -> list[str]:
    """The quantisable nodes of the named blocks (what `dynamic_int8(exclude=...)` takes)."""
    by_block = quantizable_nodes(model_path)
    return [n for b in blocks for n in by_block.get(b, [])]


class _Calibration:
    """Batches of tokenised training texts for ONNX Runtime's calibrator."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # the calibrator reads the data once
        pass


def static_int8(
    fp32_path: Path,
    out_path: Path,
    feeds: list[dict[str, np.ndarray]],
    *,
    exclude: Sequence[str] = (),
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
    cache: Path | None = None,
) -> Path:
    """Static int8 in QDQ format: weights int8 per channel, activations uint8 with ranges from
    the calibration `feeds` (`minmax`, or `percentile`: the 99.999th percentile, which ignores
    rare outliers that would stretch the scale of every other value). `cache`: a file of the
    calibrated ranges, written by the first call and read by the next ones (the ranges are the
    fp32 graph's, whatever nodes a call leaves unquantised)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Only the MatMuls with a weight: the attention's activation-by-activation products
    # (queries by keys, probabilities by values) stay fp32, as dynamic int8 leaves them.
    weighted = quantizable_nodes(fp32_path, ("MatMul",)).values()
    nodes = [name for names in weighted for name in names if name not in set(exclude)]
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method {method!r}: expected one of {list(methods)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_name("prepared.onnx")
    with _quiet():
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Calibration(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=methods[method],
            calibration_cache_path=cache,
            extra_options={"CalibPercentile": 99.999} if method == "percentile" else None,
        )
    prepared.unlink(missing_ok=True)
    return out_path


def fused(fp32_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer optimiser on the fp32 graph (BERT fusions), still fp32."""
    from onnxruntime.transformers.optimizer import optimize_model

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        model = optimize_model(
            str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size
        )
        model.save_model_to_file(str(out_path))
    return out_path


def float16(fp32_path: Path, out_path: Path) -> Path:
    """fp16 weights and activations; inputs and outputs stay in their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
    return out_path
