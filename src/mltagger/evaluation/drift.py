"""Does the stream still look like the data the model learned from?

A model folder carries a reference profile (`reference_profile.npz` + `.json`), made when the
model is trained or exported (or by `mltagger profile`): the model's sentence embeddings, answers
and confidences on held-out validation items, their lengths and their share of words never seen
in training, and the training vocabulary. `drift_tests` compares a window of stream items with
it, six tests, each a p-value:

- `embedding`: MMD² with an RBF kernel (median-distance bandwidth), permutation p-value; new
  topics move the text itself.
- `tags`: chi-square of the answered tags against the reference's; a shift in what the stream is
  about, or in what the model says.
- `confidence`: two-sample Kolmogorov–Smirnov; an unsure model on unfamiliar text.
- `review_rate`: exact binomial test; the same, as the people in the loop feel it.
- `length`: Kolmogorov–Smirnov on log characters; a new source or a broken scraper.
- `vocabulary`: Kolmogorov–Smirnov on the share of unseen words; new jargon, or spam.

p-values are Bonferroni-adjusted over the six; the window alarms when any adjusted p-value is
below `alpha` (0.01 by default). The tests are scipy's plus a few lines of numpy for MMD:
alibi-detect 0.13 pins numpy and transformers below what this project needs, and evidently
brings a web framework and a telemetry client for the same tests.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltagger.core.errors import UserError

PROFILE_NPZ = "reference_profile.npz"
PROFILE_JSON = "reference_profile.json"
TESTS = ("embedding", "tags", "confidence", "review_rate", "length", "vocabulary")
_WORD = re.compile(r"[a-z][a-z0-9+#-]{1,}")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def unknown_share(text: str, vocabulary: set[str]) -> float:
    """Share of a text's words that training never saw (0 for a text without words)."""
    ws = words(text)
    return sum(w not in vocabulary for w in ws) / len(ws) if ws else 0.0


@dataclass
class Profile:
    embeddings: np.ndarray  # (n, d) float32, L2-normalised
    confidences: np.ndarray  # (n,)
    lengths: np.ndarray  # (n,) characters
    unknown: np.ndarray  # (n,) share of unseen words
    tags: dict[str, int]  # answered tag -> count
    review_rate: float
    vocabulary: set[str] = field(default_factory=set)
    model_version: str = ""

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        np.savez_compressed(
            folder / PROFILE_NPZ,
            embeddings=self.embeddings.astype(np.float16),
            # float64: the window's confidences are compared value for value (KS), and a float32
            # copy of 0.901 is not 0.901
            confidences=self.confidences.astype(np.float64),
            lengths=self.lengths.astype(np.int32),
            unknown=self.unknown.astype(np.float32),
        )
        meta = {
            "model_version": self.model_version,
            "items": len(self.confidences),
            "tags": self.tags,
            "review_rate": self.review_rate,
            "vocabulary": sorted(self.vocabulary),
        }
        (folder / PROFILE_JSON).write_text(json.dumps(meta) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Profile:
        folder = Path(folder)
        if not (folder / PROFILE_NPZ).is_file() or not (folder / PROFILE_JSON).is_file():
            raise FileNotFoundError(
                f"{folder} has no reference profile: make one with `mltagger profile "
                f"model_dir={folder}` (training and export write it)"
            )
        arrays = np.load(folder / PROFILE_NPZ)
        meta = json.loads((folder / PROFILE_JSON).read_text())
        return cls(
            embeddings=arrays["embeddings"].astype(np.float32),
            confidences=arrays["confidences"].astype(np.float64),
            lengths=arrays["lengths"],
            unknown=arrays["unknown"],
            tags=meta["tags"],
            review_rate=float(meta["review_rate"]),
            vocabulary=set(meta["vocabulary"]),
            model_version=meta.get("model_version", ""),
        )


def build_profile(
    predictor, items: Sequence[dict], training_texts: Sequence[str], batch: int = 64
) -> Profile:
    """The reference of a model: its answers on held-out items (`text` each) and the training
    vocabulary. Held-out, not training items: a model is surer of what it was trained on."""
    vocabulary = {w for t in training_texts for w in words(t)}
    texts = [it["text"] for it in items]
    embs, preds = [], []
    for start in range(0, len(texts), batch):
        chunk = items[start : start + batch]
        logits, emb = predictor.encode(texts[start : start + batch])
        if emb is None:
            raise UserError(f"{predictor.folder} gives no sentence embeddings: re-export it")
        embs.append(np.asarray(emb, dtype=np.float32))
        preds += predictor.decide(chunk, predictor.probabilities(logits))
    return Profile(
        embeddings=np.concatenate(embs),
        confidences=np.array([p["confidence"] for p in preds], dtype=np.float64),
        lengths=np.array([len(t) for t in texts]),
        unknown=np.array([unknown_share(t, vocabulary) for t in texts], dtype=np.float32),
        tags=dict(Counter(p["tag"] for p in preds)),
        review_rate=float(np.mean([p["needs_review"] for p in preds])),
        vocabulary=vocabulary,
        model_version=predictor.inference.model_version,
    )


def mmd_test(
    ref: np.ndarray, win: np.ndarray, permutations: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """(MMD², permutation p-value) of the window against the reference.

    The smallest p-value a permutation test can give is 1 / (permutations + 1), and it is then
    multiplied by the six tests (Bonferroni): 2000 permutations let it reach 0.003, under the
    0.01 alarm level. All permutations are scored in one matrix product."""
    pooled = np.concatenate([ref, win]).astype(np.float64)
    sq = np.sum(pooled * pooled, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    median = float(np.median(d2[np.triu_indices(len(pooled), 1)]))
    k = np.exp(-d2 / max(median, 1e-12))
    n, total = len(ref), len(pooled)
    rng = np.random.default_rng(seed)
    # Row 0 is the observed split; the others are permutations. a: +1/n for reference items,
    # -1/m for window items, so a K aᵀ is the biased MMD² of that split.
    labels = np.zeros((permutations + 1, total))
    labels[0, :n] = 1.0
    for i in range(1, permutations + 1):
        labels[i, rng.permutation(total)[:n]] = 1.0
    a = labels / n - (1.0 - labels) / (total - n)
    stats = np.einsum("ij,ij->i", a @ k, a)
    return float(stats[0]), float(np.sum(stats[1:] >= stats[0] - 1e-12) + 1) / (permutations + 1)


def _tags_test(ref: dict[str, int], win: Sequence[str]) -> float:
    from scipy.stats import chisquare

    labels = sorted(set(ref) | set(win))
    total = sum(ref.values())
    # Additive smoothing: a tag the reference never answered must not give an infinite statistic.
    expected_p = np.array([(ref.get(t, 0) + 0.5) / (total + 0.5 * len(labels)) for t in labels])
    observed = np.array([sum(w == t for w in win) for t in labels], dtype=float)
    expected = expected_p * len(win)
    # Cells expected under 5 items are pooled, as the chi-square approximation asks.
    small = expected < 5
    if small.any() and (~small).sum() >= 1:
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    if len(observed) < 2:
        return 1.0
    return float(chisquare(observed, expected).pvalue)


def drift_tests(
    profile: Profile,
    texts: Sequence[str],
    embeddings: np.ndarray,
    preds: Sequence[dict],
    alpha: float = 0.01,
    permutations: int = 2000,
    seed: int = 0,
) -> dict:
    """The six tests on one window (its texts, the model's embeddings and answers)."""
    from scipy.stats import binomtest, ks_2samp

    n = len(texts)
    if n == 0:
        raise UserError("an empty window has nothing to test")
    conf = np.array([p["confidence"] for p in preds], dtype=float)
    review = int(sum(bool(p["needs_review"]) for p in preds))
    unknown = np.array([unknown_share(t, profile.vocabulary) for t in texts])
    lengths = np.log1p(np.array([len(t) for t in texts], dtype=float))
    mmd, p_emb = mmd_test(profile.embeddings, np.asarray(embeddings), permutations, seed)
    raw = {
        "embedding": p_emb,
        "tags": _tags_test(profile.tags, [p["tag"] for p in preds]),
        "confidence": float(ks_2samp(profile.confidences, conf).pvalue),
        "review_rate": float(binomtest(review, n, min(max(profile.review_rate, 1e-6), 1)).pvalue),
        "length": float(ks_2samp(np.log1p(profile.lengths.astype(float)), lengths).pvalue),
        "vocabulary": float(ks_2samp(profile.unknown, unknown).pvalue),
    }
    adjusted = {k: min(1.0, v * len(raw)) for k, v in raw.items()}
    return {
        "items": n,
        "alpha": alpha,
        "pvalues": adjusted,
        "raw_pvalues": raw,
        "alarm": any(v < alpha for v in adjusted.values()),
        "fired": sorted(k for k, v in adjusted.items() if v < alpha),
        "stats": {
            "mmd2": mmd,
            "review_rate": review / n,
            "reference_review_rate": profile.review_rate,
            "mean_confidence": float(conf.mean()),
            "reference_mean_confidence": float(profile.confidences.mean()),
            "mean_unknown_share": float(unknown.mean()),
            "reference_mean_unknown_share": float(profile.unknown.mean()),
        },
    }
