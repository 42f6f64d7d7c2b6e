"""The duplicate screen's own encoder and index: lexical, independent of the classifier.

Why lexical: a copy people make (a repost, a typo fix, a cut description, a reworded title) keeps
most of its characters; a genuinely new item on the same topic shares words but not strings. A
classifier's hidden layer is trained to put same-tag items together, and a sentence encoder to
put same-meaning items together, so both bring a new item close to its neighbours in a big store
of the same topics (measured in docs/dedup.md). The screen therefore has its own representation,
its own version (`VERSION`) and its own calibration (`data/dedup/screen.json`): promoting a new
classifier changes nothing here and never re-embeds the store.

Two steps per item:

1. **Candidates.** A 256-dimension signed-hash sketch of the text's distinct 4-grams (unit
   length) is searched in a FAISS HNSW index (inner product); the `k` nearest stored items
   above `floor` are candidates, and so are earlier items of the same batch.
2. **Score.** For each candidate pair, eight exact lexical similarities (`FEATURES`) are fed to a
   logistic model fitted by `make dedup-eval` on split `a` of the benchmark; the highest
   probability is the item's duplicate score, compared with the calibrated threshold.

All of it is numpy, FAISS and the standard library: no model forward pass.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mltagger.data.duplicates import dedup_key

# Bump when the sketch or the features change: stored sketches of another version are rebuilt.
VERSION = "lexical-1"
SKETCH_DIM = 256
FEATURES = (
    "char4_cosine",  # char 4-gram sets of the whole normalised text
    "word_cosine",  # word 1-2 gram sets, whole text
    "title_cosine",  # char 4-gram sets of the titles
    "description_cosine",  # char 4-gram sets of the descriptions (0 when either is empty)
    "char4_overlap",  # |A & B| / min(|A|, |B|) of char 4-gram sets: a cut copy is contained
    "char4_jaccard",  # |A & B| / |A | B|
    "length_ratio",  # shorter / longer normalised text
    "same_title",  # normalised titles equal
)
CALIBRATION_FILE = "data/dedup/screen.json"


class ScreenError(ValueError):
    """The screen cannot run as configured (missing or mismatched calibration)."""


def _grams4(text: str) -> frozenset[str]:
    padded = f" {text} "
    return frozenset({padded[i : i + 4] for i in range(len(padded) - 3)})


def _cosine(a: frozenset, b: frozenset) -> float:
    """Cosine of two binary vectors given as sets."""
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


@dataclass(frozen=True)
class Profile:
    """What the features need from one item, computed once per item: sets, so that every
    similarity is a C-level set intersection (the screen's cost budget is a fraction of a
    millisecond per item)."""

    title_key: str
    text: str
    title: frozenset[str]
    description: frozenset[str]
    full: frozenset[str]
    words: frozenset[str]


def normalised(title: str, description: str | None) -> str:
    """The text the sketch and the features read: `dedup_key` of title, then description."""
    return f"{dedup_key(title)} {dedup_key(description or '')}".strip()


@dataclass(frozen=True)
class Text:
    """Just the normalised text: all `sketch` needs."""

    text: str


class LazyProfiles:
    """Profiles of a batch's items, each made the first time a candidate needs it: most new
    items have no candidate above the floor and never need theirs."""

    def __init__(self, items: Sequence[dict]) -> None:
        self._items = items
        self._cache: dict[int, Profile] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, j: int) -> Profile:
        if j not in self._cache:
            it = self._items[j]
            self._cache[j] = profile(it["title"], it["description"])
        return self._cache[j]


def profile(title: str, description: str | None) -> Profile:
    t, d = dedup_key(title), dedup_key(description or "")
    full = f"{t} {d}".strip()
    tokens = full.split()
    words = frozenset(tokens) | frozenset(map(" ".join, pairwise(tokens)))
    title4 = _grams4(t)
    desc4 = _grams4(d) if d else frozenset()
    # the whole text's grams: the title's and the description's (the few grams that would span
    # the join are left out; nothing depends on them)
    return Profile(t, full, title4, desc4, title4 | desc4, words)


def pair_features(a: Profile, b: Profile) -> np.ndarray:
    """The eight similarities of `FEATURES` for one pair (symmetric)."""
    inter = len(a.full & b.full)
    small = min(len(a.full), len(b.full)) or 1
    union = len(a.full) + len(b.full) - inter or 1
    la, lb = len(a.text), len(b.text)
    return np.array(
        [
            inter / math.sqrt(len(a.full) * len(b.full) or 1),
            _cosine(a.words, b.words),
            _cosine(a.title, b.title),
            _cosine(a.description, b.description),
            inter / small,
            inter / union,
            min(la, lb) / (max(la, lb) or 1),
            float(a.title_key == b.title_key and bool(a.title_key)),
        ],
        dtype=np.float64,
    )


_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads 4-byte windows over buckets


def sketch(profiles: Sequence[Profile | Text]) -> np.ndarray:
    """Unit float32 sketches (n, SKETCH_DIM) of each text's distinct 4-byte windows: each window
    adds +1 or -1 to one bucket, both chosen by a fixed multiplicative hash (stable across
    processes and machines, unlike `hash`). The inner product of two sketches estimates the
    cosine of their 4-gram sets, which is what candidates are ranked by. One numpy pass over the
    whole batch (a Python loop per text cost more than the search)."""
    n = len(profiles)
    out = np.zeros((n, SKETCH_DIM), dtype=np.float32)
    if not n:
        return out
    texts = [f" {p.text} ".encode() for p in profiles]
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    raw = np.frombuffer(b"".join(texts), dtype=np.uint8).astype(np.uint64)
    if len(raw) < 4:
        return out
    row = np.repeat(np.arange(n, dtype=np.uint64), lengths)
    ends = np.repeat(np.cumsum(lengths), lengths)
    start = np.arange(len(raw) - 3)
    inside = start + 4 <= ends[: len(start)]  # the window does not run into the next text
    ids = raw[:-3] << np.uint64(24) | raw[1:-2] << np.uint64(16) | raw[2:-1] << np.uint64(8)
    ids |= raw[3:]
    keys = np.unique((row[: len(start)] << np.uint64(32) | ids)[inside])
    rows, ids = (keys >> np.uint64(32)).astype(np.int64), keys & np.uint64(0xFFFFFFFF)
    h = ids * _MULT
    sign = np.where((h >> np.uint64(20)) & np.uint64(1), 1.0, -1.0)
    bucket = (h >> np.uint64(64 - int(math.log2(SKETCH_DIM)))).astype(np.int64)
    flat = np.bincount(rows * SKETCH_DIM + bucket, weights=sign, minlength=n * SKETCH_DIM)
    out[:] = flat.reshape(n, SKETCH_DIM)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


@dataclass(frozen=True)
class PairModel:
    """Logistic regression over `FEATURES`, with the decision threshold and candidate settings
    chosen by `make dedup-eval` on split `a` of the benchmark."""

    weights: np.ndarray
    bias: float
    threshold: float
    k: int = 5
    floor: float = 0.3
    version: str = VERSION

    def probability(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "features": list(FEATURES),
            "weights": [float(w) for w in self.weights],
            "bias": float(self.bias),
            "threshold": float(self.threshold),
            "k": self.k,
            "floor": self.floor,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PairModel:
        if d.get("version") != VERSION or list(d.get("features", [])) != list(FEATURES):
            raise ScreenError(
                f"screen calibration is for {d.get('version')!r}, this mltagger screens with "
                f"{VERSION!r}: run `make dedup-eval DEDUP_ARGS=--write`"
            )
        return cls(
            np.asarray(d["weights"], dtype=np.float64),
            float(d["bias"]),
            float(d["threshold"]),
            int(d.get("k", 5)),
            float(d.get("floor", 0.3)),
        )


def load_model(path: str | Path) -> PairModel:
    path = Path(path)
    if not path.is_file():
        raise ScreenError(
            f"no screen calibration at {path}: run `make dedup-eval DEDUP_ARGS=--write`, or set "
            "dedup.enabled=false"
        )
    return PairModel.from_dict(json.loads(path.read_text())["model"])


class ScreenIndex:
    """Stored items' sketches in a FAISS HNSW graph (inner product), with their titles and
    descriptions for the exact rescoring. HNSW needs no training and takes items one batch at a
    time, as they are stored; a query costs a fraction of a millisecond at 100k items."""

    def __init__(
        self, dim: int = SKETCH_DIM, m: int = 32, ef_search: int = 64, threads: int = 2
    ) -> None:
        import faiss

        self.dim = dim
        self.threads = max(1, min(threads, os.cpu_count() or 1))
        hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.hnsw.efSearch = ef_search
        self._hnsw = hnsw
        self._index = faiss.IndexIDMap(hnsw)
        self._texts: dict[int, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def add(
        self, ids: Sequence[int], vectors: np.ndarray, texts: Sequence[tuple[str, str]]
    ) -> None:
        if not len(ids):
            return
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        # One thread: HNSW built in parallel depends on the threads' timing, so the same store
        # would give another graph (other candidates) on every start and every benchmark run.
        faiss.omp_set_num_threads(1)
        self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        self._texts.update(zip((int(i) for i in ids), texts, strict=True))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sketch similarities) of each query's k nearest; id -1 where fewer are stored."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not self._texts:
            n = len(vectors)
            return np.full((n, k), -1, np.int64), np.full((n, k), -1.0, np.float32)
        import faiss

        # One query searches on one thread (OpenMP threads waiting for work cost more than the
        # search on a busy 2-core machine); a batch shares `threads` (measured: 0.43 -> 0.20 ms
        # per query at 100k items, batches of 32, 2 threads).
        faiss.omp_set_num_threads(1 if len(vectors) < 8 else self.threads)
        sims, ids = self._index.search(vectors, k)
        return ids, sims

    def text(self, item_id: int) -> tuple[str, str]:
        return self._texts[int(item_id)]


@dataclass(frozen=True)
class Candidate:
    """One stored item (`item_id`) or earlier batch item (`batch_index`) near a query."""

    sketch_similarity: float
    features: np.ndarray
    item_id: int | None = None
    batch_index: int | None = None


def candidates(
    profiles: Sequence[Profile],
    sketches: np.ndarray,
    index: ScreenIndex | None,
    k: int,
    floor: float,
    within_batch: bool = True,
) -> list[list[Candidate]]:
    """Each query's candidates with their pair features: its k nearest stored items and k
    nearest earlier batch items whose sketch similarity reaches `floor`."""
    n = len(profiles)
    out: list[list[Candidate]] = [[] for _ in range(n)]
    if index is not None and len(index):
        ids, sims = index.search(sketches, k)
        cache: dict[int, Profile] = {}
        # only pairs at or above the floor are scored (and only their items profiled)
        for j, slot in zip(*np.nonzero((ids >= 0) & (sims >= floor)), strict=True):
            item_id = int(ids[j, slot])
            other = cache.get(item_id)
            if other is None:
                other = cache[item_id] = profile(*index.text(item_id))
            out[j].append(
                Candidate(float(sims[j, slot]), pair_features(profiles[j], other), item_id=item_id)
            )
    if within_batch and n > 1:
        within = sketches @ sketches.T
        for j, i in zip(*np.nonzero(np.tril(within >= floor, k=-1)), strict=True):
            out[j].append(
                Candidate(
                    float(within[j, i]), pair_features(profiles[j], profiles[i]), batch_index=int(i)
                )
            )
        for j in range(n):  # keep the k nearest earlier batch items, as for stored ones
            batch = sorted(
                (c for c in out[j] if c.batch_index is not None), key=lambda c: -c.sketch_similarity
            )
            if len(batch) > k:
                drop = {id(c) for c in batch[k:]}
                out[j] = [c for c in out[j] if id(c) not in drop]
    return out


def best(model: PairModel, cands: Sequence[Candidate]) -> tuple[Candidate | None, float]:
    """The candidate with the highest duplicate probability, and that probability (0 if none).
    A stored item wins a tie over a batch item."""
    if not cands:
        return None, 0.0
    probs = model.probability(np.stack([c.features for c in cands]))
    top = int(np.argmax(probs))
    return cands[top], float(probs[top])
