"""The duplicate screen's second step: candidate pairs and the pair model that scores them.

For each item, the `k` nearest stored items in the `ScreenIndex` whose sketch similarity reaches
the model's `floor` are candidates, and so are earlier items of the same batch (`candidates`).
For each candidate pair, eight exact lexical similarities (`FEATURES`) are fed to a logistic
model (`PairModel`) fitted by `make dedup-eval` on split `a` of the benchmark
(`mltagger.screen.fitting`); the highest probability is the item's duplicate score (`best`),
compared with the calibrated threshold. The features and the model live together because a
change to either invalidates the calibration in `CALIBRATION_FILE`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mltagger.screen.index import ScreenIndex
from mltagger.screen.sketch import VERSION, Profile, ScreenError, profile

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


def _cosine(a: frozenset, b: frozenset) -> float:
    """Cosine of two binary vectors given as sets."""
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


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
