"""Turn items into approved tags with a model folder: the decision rule the product applies.

`Predictor(folder)` opens a model folder once with the right backend: ONNX Runtime when the folder
holds `model.onnx` (an export: `make export`), which never imports torch, else the HF weights with
torch. `predict(items)` batches, applies the temperature and the review threshold, and returns one
record per item whose `tag` is always an approved tag (the fallback tag when confidence is below
the threshold), and `reason` says which path gave it: `classifier` or `low_confidence`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.errors import UserError
from mltagger.models.gate import TextGate
from mltagger.models.modelio import (
    GATE_FILE,
    InferenceConfig,
    ModelNotAvailable,
    read_model_metadata,
)
from mltagger.models.rule import (
    apply_threshold,
    gate_mask,
    reason,
    softmax,
)
from mltagger.models.secondary import SecondaryHead, tags_field

ONNX_FILE = "model.onnx"
# Second output of an export: the mean-pooled, L2-normalised hidden state of one encoder layer.
EMBEDDING_OUTPUT = "embedding"


def embedding_layer(inference: InferenceConfig, model_config: Any) -> int:
    """Which hidden state (0 = embeddings, n = last layer) gives the model's sentence embedding.

    The service no longer screens duplicates with it (the lexical screen, mltagger.screen, is
    independent of the classifier); `mltagger dedup-eval --compare-embeddings` still compares it
    with that screen. The middle layer by default: fine-tuning pulls the items of one tag together
    in the last layer, which makes it a poor measure of "same text".
    """
    layer = inference.extra.get("embedding_layer")
    return int(layer) if layer is not None else int(model_config.num_hidden_layers) // 2


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under the attention mask, L2-normalised (cosine = dot product).

    It comes out of the same forward pass as the logits, so it costs no second model.
    """
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
    norm = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)


class BasePredictor:
    """The decision rule over any backend that turns texts into logits."""

    backend = "base"

    def __init__(self, folder: str | Path, batch_size: int = 64) -> None:
        self.folder = Path(folder)
        self.labels, self.inference = read_model_metadata(self.folder)
        self.batch_size = batch_size
        # The out-of-scope gate, when the folder's rule uses one (checked by read_model_metadata).
        self.gate = None
        if self.inference.gate_threshold is not None:
            try:
                self.gate = TextGate.load(self.folder)
            except (ValueError, KeyError, TypeError) as err:  # a damaged file: say which
                raise ModelNotAvailable(
                    f"{self.folder / GATE_FILE} is not a gate file ({type(err).__name__}: {err})"
                    "; copy it again from the run's model folder"
                ) from None
        self.secondary = self._secondary_head()

    def _secondary_head(self) -> SecondaryHead | None:
        """The folder's secondary-tag head (None without one); its classes must be the model's."""
        try:
            head = SecondaryHead.load(self.folder)
        except (ValueError, KeyError, TypeError) as err:
            raise ModelNotAvailable(
                f"{self.folder}: secondary.json is not a secondary-tag head ({err}); refit it "
                "with `mltagger secondary`"
            ) from None
        if head is not None and head.labels != list(self.labels):
            raise ModelNotAvailable(
                f"{self.folder}: secondary.json scores {head.labels}, the model's classes are "
                f"{list(self.labels)}; refit it with `mltagger secondary`"
            )
        return head

    #: Whether encode() also returns the sentence embedding used for near-duplicate screening.
    has_embeddings = True

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and L2-normalised mean-pooled sentence embeddings, from one forward pass."""
        raise NotImplementedError

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.encode(texts)[1]
        if emb is None:
            raise UserError(
                f"{self.folder} gives no sentence embeddings (an export made before they were "
                "added): re-export it with make export"
            )
        return emb

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=np.float64), self.inference.temperature)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.probabilities(self.logits(texts))

    def predict(self, items: Sequence[dict]) -> list[dict]:
        """Items need `text` (as made by mltagger.data.text.item_text) and optionally `id`."""
        return self.decide(items, self.predict_proba([it["text"] for it in items]))

    def in_scope(self, items: Sequence[dict]) -> np.ndarray | None:
        """The gate's in-scope probability of each item (None when the rule has no gate)."""
        if self.gate is None:
            return None
        return self.gate.in_scope(it["text"] for it in items)

    def stopped(self, items: Sequence[dict]) -> np.ndarray | None:
        """Which items the folder's gate stops (None without a gate): what every evaluation of
        this folder passes on, so its figures are the ones the service gives."""
        if self.gate is None or self.inference.gate_threshold is None:
            return None
        return gate_mask(self.in_scope(items), self.inference.gate_threshold, len(items))

    def stopped_splits(
        self, val: Sequence[dict], test: Sequence[dict]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """`stopped` for val and test, as `evaluate_val_test` takes it (None without a gate)."""
        first = self.stopped(val)
        return None if first is None else (first, self.stopped(test))

    def decide(self, items: Sequence[dict], probs: np.ndarray) -> list[dict]:
        """The product's decision rule on probabilities already computed for `items`: the gate
        first (an out-of-scope item gets the fallback tag, `out_of_scope`), then the thresholds.
        An item the gate stops reports the gate's confidence that it is out of scope."""
        p_in = self.in_scope(items)
        gated = gate_mask(p_in, self.inference.gate_threshold, len(items))
        tags, conf, review = apply_threshold(
            probs,
            self.labels,
            self.inference.decision_threshold(),
            self.inference.fallback_tag,
            gated,
        )
        if p_in is not None:
            conf = np.where(gated, 1.0 - p_in, conf)
        second: list[list[tuple[str, float]]] = [[] for _ in items]
        if self.secondary is not None:
            scores = self.secondary.scores([it["text"] for it in items], probs)
            second = self.secondary.secondary(tags, review, scores)
        return [
            {
                "id": it.get("id"),
                "tag": tag,
                "confidence": round(float(c), 6),
                "tags": tags_field(tag, c, second[i]),
                "needs_review": bool(r),
                "reason": reason(r, o),
                "scores": {t: round(float(p), 6) for t, p in zip(self.labels, row, strict=True)},
                "model_version": self.inference.model_version,
                **({"in_scope": round(float(p_in[i]), 6)} if p_in is not None else {}),
            }
            for i, (it, tag, c, r, o, row) in enumerate(
                zip(items, tags, conf, review, gated, probs, strict=True)
            )
        ]

    def predict_iter(self, items: Sequence[dict], progress: bool = True) -> Iterable[dict]:
        """predict() in chunks with a progress bar on long inputs."""

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


class TorchPredictor(BasePredictor):
    """HF weights + tokenizer with torch (the training output)."""

    backend = "torch"

    def __init__(
        self, folder: str | Path, batch_size: int = 64, threads: int | None = None
    ) -> None:
        super().__init__(folder, batch_size)
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.folder).eval()
        self._torch = torch
        self.embedding_layer = embedding_layer(self.inference, self.model.config)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        logits, embs = [], []
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    truncation=True,
                    max_length=self.inference.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                out = self.model(**enc, output_hidden_states=True)
                logits.append(out.logits.float().numpy())
                hidden = out.hidden_states[self.embedding_layer].float().numpy()
                embs.append(mean_pool(hidden, enc["attention_mask"].numpy()))
        if not logits:
            return np.zeros((0, len(self.labels))), np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(logits), np.concatenate(embs)


def folder_weights_mb(folder: str | Path) -> float:
    """Size of a model folder's weights on disk (model.onnx, or the safetensors/bin files)."""
    folder = Path(folder)
    if (folder / ONNX_FILE).is_file():
        files = [folder / ONNX_FILE]
    else:
        files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    return sum(p.stat().st_size for p in files) / 2**20


def _pad_token(folder: Path) -> str:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            pad = json.loads(path.read_text()).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if pad:
                return str(pad)
    return "[PAD]"


class OnnxPredictor(BasePredictor):
    """An exported folder (model.onnx + tokenizer.json) with ONNX Runtime; torch is never imported.

    Tokenisation uses the `tokenizers` library directly (the same tokenizer.json the HF tokenizer
    reads), with dynamic padding per batch like training.
    """

    backend = "onnx"

    def __init__(
        self,
        folder: str | Path,
        batch_size: int = 64,
        threads: int | None = None,
        spinning: bool = True,
    ) -> None:
        super().__init__(folder, batch_size)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tok_file = self.folder / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"{self.folder} has {ONNX_FILE} but no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.enable_truncation(max_length=self.inference.max_length)
        pad = _pad_token(self.folder)
        pad_id = self.tokenizer.token_to_id(pad)
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        if not spinning:
            # ONNX Runtime's threads busy-wait after each run by default, which starves CPU
            # work that follows in the same process: measured on 2 cores, one item's forward
            # pass + a duplicate search over 100k vectors took 17.1 ms spinning, 9.5 ms not.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.has_embeddings = EMBEDDING_OUTPUT in [o.name for o in self.session.get_outputs()]
        self.embedding_layer = self.inference.extra.get("embedding_layer")

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        logits, embs = [], []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer.encode_batch(list(texts[start : start + self.batch_size]))
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            outs = self.session.run(None, {k: feeds[k] for k in self.input_names})
            logits.append(outs[0])
            if self.has_embeddings:
                embs.append(np.asarray(outs[1], dtype=np.float32))
        if not logits:
            return np.zeros((0, len(self.labels))), np.zeros((0, 0), dtype=np.float32)
        return (
            np.concatenate(logits).astype(np.float64),
            np.concatenate(embs) if self.has_embeddings else None,
        )


def Predictor(
    folder: str | Path,
    batch_size: int = 64,
    threads: int | None = None,
    spinning: bool = True,
) -> BasePredictor:
    """The right backend for a model folder: ONNX Runtime for exports, torch otherwise.

    A function named like a class, so callers read `Predictor(folder)` whatever the backend.
    `spinning` (ONNX only): let idle runtime threads busy-wait, fastest for inference alone.
    """
    folder = Path(folder)
    if (folder / ONNX_FILE).is_file():
        return OnnxPredictor(folder, batch_size, threads, spinning)
    return TorchPredictor(folder, batch_size, threads)
