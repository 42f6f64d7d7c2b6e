"""Duplicate screening: is a new item a copy of one already stored, or of one earlier in its batch?

Two stages, cheapest first:

1. exact: sha256 of the normalised text (case, accents, punctuation and whitespace folded,
   `mltagger.data.dedup_key`), looked up in the store's index of hashes;
2. near: cosine similarity of sentence embeddings against every stored item. The embedding is the
   classifier encoder's mean-pooled last hidden state, a second output of the same forward pass
   that tags the item, so screening adds no model and no inference; the search is one
   matrix-vector product over an in-memory matrix (cost per item measured by
   `scripts/dedup_eval.py` at 1k and 100k stored items).

`build_eval_pairs` makes a labelled evaluation set from real items: edited, truncated, reworded
and reposted copies (true duplicates) and distinct pairs, the hard ones being items of the same
tag with the most similar wording. `scripts/dedup_eval.py` reports precision and recall of the
screen on it and chooses the threshold on a separate half.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mltagger.data import dedup_key

EXACT = "exact"
NEAR = "near"


def content_hash(title: str, description: str) -> str:
    """The exact-duplicate key: equal for texts that differ only in case/punctuation/spacing."""
    return hashlib.sha256(dedup_key(f"{title} {description}").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Duplicate:
    """What an item duplicates: a stored item (`item_id`) or an earlier item of its batch
    (`batch_index`), found by hash (`exact`) or by embedding similarity (`near`)."""

    kind: str
    similarity: float
    item_id: int | None = None
    batch_index: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class EmbeddingIndex:
    """Unit vectors of stored items in one growing float32 matrix; exact nearest neighbour.

    Exact search is a deliberate choice at this scale: 100k x 384 floats is 146 MB and one query
    a few milliseconds, with no approximation to tune or explain. Beyond a few million items an
    ANN index (FAISS, pgvector) would take its place behind the same two methods.
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._ids = np.zeros(max(capacity, 1), dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        need = self._n + len(ids)
        if need > len(self._ids):
            cap = max(need, 2 * len(self._ids))
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: self._n] = self._vectors[: self._n]
            self._vectors = grown
            self._ids = np.concatenate([self._ids[: self._n], np.zeros(cap - self._n, np.int64)])
        self._vectors[self._n : need] = vectors
        self._ids[self._n : need] = np.asarray(ids, dtype=np.int64)
        self._n = need

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine similarities) of each query's closest stored vector; id -1 when empty."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self._n == 0:
            return np.full(len(queries), -1, dtype=np.int64), np.full(len(queries), -1.0)
        sims = queries @ self._vectors[: self._n].T
        best = sims.argmax(axis=1)
        return self._ids[best], sims[np.arange(len(queries)), best].astype(np.float64)


def screen(
    hashes: Sequence[str],
    embeddings: np.ndarray | None,
    stored_hashes: Callable[[Sequence[str]], dict[str, int]],
    index: EmbeddingIndex | None,
    threshold: float,
) -> list[Duplicate | None]:
    """The duplicate (if any) of each item of a batch, against the store and earlier batch items.

    A stored match wins over a batch match, exact over near. `stored_hashes` maps the hashes it
    knows to their item ids (one query for the whole batch).
    """
    known = stored_hashes(list(hashes))
    result: list[Duplicate | None] = [None] * len(hashes)
    first_in_batch: dict[str, int] = {}
    for j, h in enumerate(hashes):
        if h in known:
            result[j] = Duplicate(EXACT, 1.0, item_id=known[h])
        elif h in first_in_batch:
            result[j] = Duplicate(EXACT, 1.0, batch_index=first_in_batch[h])
        else:
            first_in_batch[h] = j
    if embeddings is None or index is None:
        return result
    emb = np.asarray(embeddings, dtype=np.float32)
    ids, sims = index.nearest(emb)
    within = emb @ emb.T if len(emb) > 1 else np.zeros((len(emb), len(emb)), dtype=np.float32)
    for j in range(len(hashes)):
        if result[j] is not None:
            continue
        if ids[j] >= 0 and sims[j] >= threshold:
            result[j] = Duplicate(NEAR, round(float(sims[j]), 4), item_id=int(ids[j]))
            continue
        if j:
            i = int(within[j, :j].argmax())
            if within[j, i] >= threshold:
                result[j] = Duplicate(NEAR, round(float(within[j, i]), 4), batch_index=i)
    return result


# --------------------------------------------------------------------------------------------
# Evaluation set: true duplicates made from real items, and distinct pairs
# --------------------------------------------------------------------------------------------

# Rewordings a person reposting an item might make; applied as whole words.
_SYNONYMS = {
    "using": "with",
    "with": "using",
    "model": "network",
    "models": "networks",
    "network": "model",
    "networks": "models",
    "learning": "training",
    "simple": "basic",
    "implementation": "code",
    "tutorial": "guide",
    "guide": "tutorial",
    "paper": "article",
    "dataset": "data set",
    "images": "pictures",
    "image": "picture",
    "build": "create",
    "train": "fit",
    "fast": "quick",
    "large": "big",
    "new": "novel",
    "method": "approach",
    "approach": "method",
    "library": "package",
    "framework": "toolkit",
    "based": "built",
    "how": "ways",
    "a": "one",
    "the": "this",
}
_WORD = re.compile(r"\w+|\W+")
REPOST_PREFIXES = ("[P] ", "Project: ", "New: ", "Show ML: ", "Repost - ")
REPOST_SUFFIXES = (" (code included)", " — updated", " [2nd edition]", " (with notebook)")
KINDS = ("format", "typos", "truncated", "reworded", "reposted")


def _typos(text: str, rng: random.Random, rate: float = 0.06) -> str:
    words = text.split(" ")
    for k, w in enumerate(words):
        if len(w) > 3 and rng.random() < rate:
            i = rng.randrange(len(w) - 1)
            op = rng.choice(("swap", "drop", "double"))
            if op == "swap":
                w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
            elif op == "drop":
                w = w[:i] + w[i + 1 :]
            else:
                w = w[:i] + w[i] + w[i:]
            words[k] = w
    return " ".join(words)


def _reword(text: str, rng: random.Random, rate: float = 0.5) -> str:
    out = []
    for tok in _WORD.findall(text):
        low = tok.lower()
        if low in _SYNONYMS and rng.random() < rate:
            new = _SYNONYMS[low]
            out.append(new.capitalize() if tok[:1].isupper() else new)
        else:
            out.append(tok)
    return "".join(out)


def make_duplicate(item: dict, kind: str, rng: random.Random) -> dict:
    """An edited copy of `item` of the given kind (title and description)."""
    title, desc = item["title"], item["description"]
    if kind == "format":  # only case, punctuation and spacing: the exact stage must catch it
        title = title.upper() if rng.random() < 0.5 else title.lower()
        desc = "  " + desc.replace(", ", " , ").replace(". ", "... ") + " !"
    elif kind == "typos":
        title, desc = _typos(title, rng, 0.1), _typos(desc, rng)
    elif kind == "truncated":
        words = desc.split()
        keep = max(1, int(len(words) * rng.uniform(0.5, 0.75)))
        desc = " ".join(words[:keep]) + ("..." if keep < len(words) else "")
    elif kind == "reworded":
        title, desc = _reword(title, rng), _reword(desc, rng)
    elif kind == "reposted":
        title = rng.choice(REPOST_PREFIXES) + title + rng.choice(REPOST_SUFFIXES)
    else:
        raise ValueError(f"unknown duplicate kind {kind!r}; choose from {KINDS}")
    return {"title": title, "description": desc}


def build_eval_pairs(items: Sequence[dict], seed: int = 0) -> list[dict]:
    """Labelled pairs from real items: one edited copy per item (kinds in rotation) plus two
    distinct pairs per item, one random and one hard (same tag, most similar TF-IDF wording,
    excluding items the data module already groups as near-duplicates of each other).

    Each pair: {a: {title, description}, b: {...}, duplicate: bool, kind}.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mltagger.data import near_duplicate_groups

    rng = random.Random(seed)
    items = list(items)
    group_of: dict = {}
    for g, ids in enumerate(near_duplicate_groups(items)):
        for i in ids:
            group_of[i] = g
    keys = [dedup_key(it["text"]) for it in items]
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(keys)
    sims = (tfidf @ tfidf.T).toarray()

    def distinct(i: int, j: int) -> bool:
        a, b = items[i], items[j]
        same_group = group_of.get(a["id"], -1) == group_of.get(b["id"], -2)
        return i != j and not same_group and keys[i] != keys[j]

    def side(it: dict) -> dict:
        return {"title": it["title"], "description": it["description"]}

    pairs = []
    for i, it in enumerate(items):
        kind = KINDS[i % len(KINDS)]
        pairs.append(
            {"a": side(it), "b": make_duplicate(it, kind, rng), "duplicate": True, "kind": kind}
        )
        j = rng.randrange(len(items))
        if distinct(i, j):
            pairs.append({"a": side(it), "b": side(items[j]), "duplicate": False, "kind": "random"})
        same_tag = [
            k
            for k in np.argsort(-sims[i])
            if items[k].get("tag") == it.get("tag") and distinct(i, k)
        ]
        if same_tag:
            k = int(same_tag[0])
            pairs.append(
                {"a": side(it), "b": side(items[k]), "duplicate": False, "kind": "hard_negative"}
            )
    return pairs


def pair_scores(pairs: Sequence[dict], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """The screen's score per pair: 1.0 when the hashes match, else embedding cosine."""
    from mltagger.data import clean_text, join_text

    def text(side: dict) -> str:
        return join_text(clean_text(side["title"]), clean_text(side["description"]))

    a = embed([text(p["a"]) for p in pairs])
    b = embed([text(p["b"]) for p in pairs])
    cos = (a * b).sum(axis=1)
    exact = np.array(
        [
            content_hash(p["a"]["title"], p["a"]["description"])
            == content_hash(p["b"]["title"], p["b"]["description"])
            for p in pairs
        ]
    )
    return np.where(exact, 1.0, cos)


def precision_recall(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """Precision/recall of `score >= threshold` as the duplicate call."""
    pred = scores >= threshold
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "threshold": float(threshold),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def choose_threshold(scores: np.ndarray, truth: np.ndarray, min_precision: float) -> float:
    """The lowest threshold (most recall) whose precision reaches `min_precision`."""
    for t in np.unique(np.round(scores, 4)):
        if precision_recall(scores, truth, float(t))["precision"] >= min_precision:
            return float(t)
    return 1.0


# --------------------------------------------------------------------------------------------
# Calibration: the threshold stored with a model folder
# --------------------------------------------------------------------------------------------

SCREEN_FILE = "dedup.json"


def calibrate_screen(predictor, data, min_precision: float = 0.97, seed: int = 0) -> dict:
    """Choose the near-duplicate threshold on pairs made from the val split; report it on pairs
    made from the test split (per kind too), so the figure is not the one it was chosen on."""
    pairs = {
        split: build_eval_pairs(data.splits[split], seed=seed + k)
        for k, split in enumerate(("val", "test"))
    }
    scores = {s: pair_scores(p, predictor.embed) for s, p in pairs.items()}
    truth = {s: np.array([q["duplicate"] for q in p]) for s, p in pairs.items()}
    threshold = choose_threshold(scores["val"], truth["val"], min_precision)
    test_pairs, test_scores = pairs["test"], scores["test"]
    per_kind = {}
    for kind in sorted({q["kind"] for q in test_pairs}):
        mask = np.array([q["kind"] == kind for q in test_pairs])
        per_kind[kind] = {
            "pairs": int(mask.sum()),
            "called_duplicate": float((test_scores[mask] >= threshold).mean()),
        }
    return {
        "threshold": threshold,
        "min_precision": min_precision,
        "embedding_layer": predictor.embedding_layer,
        "model_version": predictor.inference.model_version,
        "val": precision_recall(scores["val"], truth["val"], threshold),
        "test": precision_recall(test_scores, truth["test"], threshold),
        "test_by_kind": per_kind,
        "num_pairs": {s: len(p) for s, p in pairs.items()},
    }


def write_screen_calibration(folder, calibration: dict) -> None:
    import json
    from pathlib import Path

    (Path(folder) / SCREEN_FILE).write_text(json.dumps(calibration, indent=1) + "\n")


def read_screen_threshold(folder) -> float | None:
    """The calibrated near-duplicate threshold of a model folder, or None when it has none."""
    import json
    from pathlib import Path

    path = Path(folder) / SCREEN_FILE
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else None


def embedding_id(predictor) -> str:
    """Which vectors a stored embedding is comparable with: the model and its layer."""
    return f"{predictor.inference.model_version}@layer{predictor.embedding_layer}"


def fill_store(store, base: np.ndarray, size: int, model: str, noise: float, seed: int = 0):
    """Add `size` placeholder items whose embeddings are real ones (rows of `base`) plus noise,
    so the screen can be measured against a full store; returns the vectors, in id order."""
    rng = np.random.default_rng(seed)
    vectors = base[rng.integers(0, len(base), size)] + rng.normal(0, noise, (size, base.shape[1]))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    for start in range(0, size, 5000):
        store.add_items(
            [
                {
                    "title": f"placeholder item {k}",
                    "description": "",
                    "content_hash": content_hash(f"placeholder item {k}", ""),
                    "tag": "other",
                    "tagged_by": "model",
                    "needs_review": False,
                    "source": "benchmark",
                    "embedding": vectors[k],
                    "embedding_model": model,
                }
                for k in range(start, min(size, start + 5000))
            ]
        )
    return vectors
