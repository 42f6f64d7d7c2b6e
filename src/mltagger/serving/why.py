"""Why an item got its tag, as the service answers it (`GET /items/{id}/why`, the review page):
the words whose removal lowers the tag's probability most (occlusion on the serving model,
`models.explain`, one batch per item) and the three nearest labelled training items.

What it explains: the serving model, always. An item stored by an older model is explained with
the model serving now, and the answer says so (`stored_by` differs from `model_version`); the
store keeps no old model to explain it with. The explained tag is the serving model's top tag on
the item's text (before the review threshold), which can differ from the item's tag now.

The nearest training items come from the data the model was trained on: the model folder names
its training run (`inference.json` extra.run_dir), whose config.yaml gives the data config; its
train split is rebuilt (`data.prepare`) and embedded once per model version and worker with the
serving model's own sentence embedding (the export's second output), in a background thread.
When the run's config is not on this machine, or the data rebuilt is not the data the model
saw (its sha256), the answer has no neighbours or says so (`neighbours_note`): never silently
other items. Answers are cached per (item id, model version); an answer without neighbours
because the index was still being built is not.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mltagger.core.errors import MltaggerError
from mltagger.data.prepare import prepare_data
from mltagger.data.text import item_text
from mltagger.models.explain import WORD, find_words, occlusion, visible_chars
from mltagger.serving.limits import RateLimiter

log = logging.getLogger("mltagger.serve")

TOP_WORDS = 8
NEIGHBOURS = 3
CACHE_SIZE = 2048
# How long the API waits for the training index (about 30 s to build on 2 cores; the page never
# waits): longer, the answer comes without neighbours and says they are being indexed.
WAIT_S = 45.0


@dataclass
class TrainingIndex:
    """The model's labelled training items with their embeddings (rows L2-normalised)."""

    ids: list = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    note: str | None = None  # why it is empty or not the model's own data

    def nearest(self, vector: np.ndarray | None, k: int = NEIGHBOURS) -> list[dict]:
        if vector is None or not len(self.ids):
            return []
        sims = self.vectors @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-sims, kind="stable")[:k]
        return [
            {
                "id": self.ids[i],
                "title": self.titles[i],
                "tag": self.tags[i],
                "similarity": round(float(sims[i]), 4),
            }
            for i in top
        ]


def build_index(predictor, root_dir: str | Path | None = None) -> TrainingIndex:
    """The train split of the data config the model's training run recorded, embedded."""
    extra = predictor.inference.extra or {}
    run_dir = extra.get("run_dir")
    config = Path(run_dir) / "config.yaml" if run_dir else None
    if config is None or not config.is_file():
        return TrainingIndex(
            note="no nearest training items: the model folder names no "
            "training run whose config.yaml is on this machine (extra.run_dir)"
        )
    if not predictor.has_embeddings:
        return TrainingIndex(note="no nearest training items: the model gives no embeddings")
    try:
        data = prepare_data(OmegaConf.load(config).data, root_dir)
    except MltaggerError as err:
        return TrainingIndex(note=f"no nearest training items: its training data: {err}")
    train = data.splits["train"]
    note = None
    wanted = extra.get("data_sha256")
    if wanted and wanted != data.data_sha256:
        note = (
            f"the training data on this machine (sha256 {data.data_sha256[:12]}) is not the "
            f"data the model saw ({str(wanted)[:12]}): neighbours come from it as it is now"
        )
    vectors = predictor.embed([it["text"] for it in train]) if train else None
    return TrainingIndex(
        [it.get("id") for it in train],
        [it["title"] for it in train],
        [it["tag"] for it in train],
        vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32),
        note,
    )


class Explainer:
    """One worker's explanations: the cache, the per-key rate limit, the training indexes."""

    def __init__(self, per_minute: float, burst: int, root_dir: str | Path | None = None) -> None:
        self.limiter = RateLimiter(per_minute, burst)
        self.root_dir = root_dir
        self._cache: OrderedDict[tuple[int, str], dict] = OrderedDict()
        self._indexes: dict[str, TrainingIndex] = {}
        self._building: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def index(self, predictor, wait: float | None) -> TrainingIndex | None:
        """The model's training index; None while it is built (started on the first call)."""
        version = predictor.inference.model_version
        with self._lock:
            if version in self._indexes:
                return self._indexes[version]
            done = self._building.get(version)
            if done is None:
                done = self._building[version] = threading.Event()
                threading.Thread(target=self._build, args=(predictor, done), daemon=True).start()
        done.wait(wait)
        return self._indexes.get(version)

    def _build(self, predictor, done: threading.Event) -> None:
        version = predictor.inference.model_version
        try:
            index = build_index(predictor, self.root_dir)
        except Exception as err:  # a thread's error would vanish: keep it in the answer
            log.exception("building the training index of %s", version)
            index = TrainingIndex(note=f"no nearest training items: {type(err).__name__}: {err}")
        self._indexes[version] = index
        done.set()

    def why(self, predictor, item: dict, wait: float | None = WAIT_S) -> dict:
        """The explanation of a stored item (as the API returns it), cached when complete."""
        version = predictor.inference.model_version
        key = (int(item["id"]), version)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        answer, complete = self._explain(predictor, item, wait)
        if complete:
            with self._lock:
                self._cache[key] = answer
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return answer

    def _explain(self, predictor, item: dict, wait: float | None) -> tuple[dict, bool]:
        text = item_text(item["title"], item.get("description"))
        tokenizer = getattr(predictor, "tokenizer", None)  # none: every word is visible
        seen = (
            None
            if tokenizer is None
            else visible_chars(tokenizer, text, predictor.inference.max_length)
        )
        words = find_words(text, seen)
        embedding: list = []

        def score(texts):
            logits, emb = predictor.encode(texts)
            embedding.append(None if emb is None else emb[0])
            return predictor.probabilities(logits)

        exp = occlusion(score, words)
        index = self.index(predictor, wait)
        version, stored = predictor.inference.model_version, item.get("model_version")
        note = None if index is None else index.note
        answer = {
            "id": int(item["id"]),
            "model_version": version,
            "stored_by": stored,
            "note": None
            if stored in (None, version)
            else f"stored by model {stored}; explained with the model serving now, {version}",
            "tag": predictor.labels[exp.target],
            "probability": round(exp.probability, 6),
            "item_tag": item.get("tag"),
            "words": [{"word": w, "importance": round(v, 6)} for w, v in exp.top(TOP_WORDS)],
            "words_tried": len(words.names),
            "neighbours": None if index is None else index.nearest(embedding[0]),
            "neighbours_note": note
            if index is not None
            else "the model's training items are being indexed: ask again shortly",
        }
        return answer, index is not None


def highlight(text: str, words: set[str]) -> list[tuple[str, bool]]:
    """`text` in pieces, each marked whether it is one of `words` (the page's highlighting)."""
    out: list[tuple[str, bool]] = []
    last = 0
    for m in WORD.finditer(text):
        if m.group().lower() in words:
            out += [(text[last : m.start()], False), (m.group(), True)]
            last = m.end()
    out.append((text[last:], False))
    return [p for p in out if p[0]]
