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
   length) is searched in the stored items' `ScreenIndex` (inner product: exact up to
   `EXACT_MAX` items, a FAISS HNSW graph beyond); the `k` nearest stored items above `floor`
   are candidates, and so are earlier items of the same batch.
2. **Score.** For each candidate pair, eight exact lexical similarities (`FEATURES`) are fed to a
   logistic model fitted by `make dedup-eval` on split `a` of the benchmark; the highest
   probability is the item's duplicate score, compared with the calibrated threshold.

All of it is numpy, FAISS and the standard library: no model forward pass.

Over 400 lines on purpose: the sketch, the features, the pair model and the index that stores
the sketches are one screen under one `VERSION` (a change to any of them invalidates stored
sketches or the calibration), and the index (`ScreenIndex`: exact then HNSW, save/load, packed
texts) is most of the length.
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
from tqdm.auto import tqdm

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


def sketch_counts(profiles: Sequence[Profile | Text]) -> np.ndarray:
    """The sketches before they are scaled to unit length: float32 (n, SKETCH_DIM) of small
    whole numbers (each bucket's sum of +1/-1). Kept apart from `sketch` so that a cache of
    many sketches can store them as int8 and rebuild the unit sketches bit for bit
    (`unit_sketches`). Each distinct 4-byte window adds +1 or -1 to one bucket, both chosen by
    a fixed multiplicative hash (stable across processes and machines, unlike `hash`). One numpy
    pass over the whole batch (a Python loop per text cost more than the search)."""
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
    return out


def _to_unit(out: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def unit_sketches(counts: np.ndarray) -> np.ndarray:
    """`sketch_counts` (any dtype, e.g. a cache's int8) scaled to unit length: float32, equal
    bit for bit to `sketch` of the same texts; a row of zeros stays zero."""
    return _to_unit(np.asarray(counts).astype(np.float32).reshape(-1, SKETCH_DIM))


def sketch(profiles: Sequence[Profile | Text]) -> np.ndarray:
    """Unit float32 sketches (n, SKETCH_DIM) of each text's distinct 4-byte windows
    (`sketch_counts`, scaled to unit length). The inner product of two sketches estimates the
    cosine of their 4-gram sets, which is what candidates are ranked by."""
    return _to_unit(sketch_counts(profiles))


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


# Up to this many stored items the index is exact (faiss IndexFlatIP): every candidate is the
# true nearest, nothing is built, and a single query costs <= 0.4 ms. Beyond it the vectors leave
# the CPU cache: exact search costs 1.2-1.5 ms per query at 20k and 3.3-5.5 ms at 50k, the HNSW
# graph 0.15-0.5 ms (measured, docs/dedup.md "At a million items").
EXACT_MAX = 10_000
# HNSW settings, chosen by recall against exact search at 300k and 1M items (docs/dedup.md): at
# 300k, efConstruction 200 (a better graph, 1.85x the build time) found 0.998 of the candidates
# at efSearch 64 where 80 found 0.994; M 48 found fewer than M 32 (0.989) at more cost. At 1M,
# efConstruction 200 and efSearch 128 found 0.994 (80 needed efSearch 256 for 0.990-0.992).
HNSW_M = 32
EF_CONSTRUCTION = 200
# efSearch by store size (None: no upper bound), the smallest that kept candidate recall >= 0.99
# in the measurements; an explicit `ef_search` overrides it.
EF_SEARCH_BY_SIZE: tuple[tuple[int | None, int], ...] = ((300_000, 64), (None, 128))
EF_SEARCH = None  # automatic, by EF_SEARCH_BY_SIZE


def auto_ef_search(items: int) -> int:
    """The efSearch `EF_SEARCH_BY_SIZE` gives a store of `items` items."""
    for upto, ef in EF_SEARCH_BY_SIZE:
        if upto is None or items <= upto:
            return ef
    return EF_SEARCH_BY_SIZE[-1][1]


# How the graph stores the vectors: "float16" (faiss IndexHNSWSQ, QT_fp16: half the vectors'
# memory, 842 MB in place of 1.33 GB at 1M items; similarities within ~1e-3; recall within 0.005
# of float32 at every efSearch measured) or "float32" (IndexHNSWFlat, exact similarities).
STORAGE = "float16"


class _Column:
    """A growing 1-d numpy array (capacity doubles): appends cost amortised O(1) and the
    memory is the values themselves, with none of a Python list's per-object overhead."""

    def __init__(self, dtype: type) -> None:
        self._data = np.zeros(1024, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : need] = values
        self.n = need

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.n]

    @classmethod
    def of(cls, values: np.ndarray) -> _Column:
        col = cls(values.dtype.type)
        col.extend(values)
        return col

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)


class _Texts:
    """Stored titles and descriptions, packed as UTF-8 in one buffer with two offsets per item.
    Measured at 1M registry items: a dict of (title, description) tuples costs 307 MB, this 90 MB
    (the text itself plus 12 bytes an item); only candidates above the floor are decoded."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = _Column(np.int64)  # where each item's bytes end in the blob
        self._split = _Column(np.int32)  # the title's byte length; -1: description is None

    def extend(self, texts: Sequence[tuple[str, str | None]]) -> None:
        ends, split = [], []
        end = len(self._blob)
        for title, description in texts:
            t = title.encode()
            d = b"" if description is None else description.encode()
            self._blob += t
            self._blob += d
            end += len(t) + len(d)
            ends.append(end)
            split.append(-1 if description is None else len(t))
        self._ends.extend(np.asarray(ends, dtype=np.int64))
        self._split.extend(np.asarray(split, dtype=np.int32))

    def get(self, pos: int) -> tuple[str, str | None]:
        start = int(self._ends.values[pos - 1]) if pos else 0
        end, split = int(self._ends.values[pos]), int(self._split.values[pos])
        if split < 0:
            return self._blob[start:end].decode(), None
        return (
            self._blob[start : start + split].decode(),
            self._blob[start + split : end].decode(),
        )

    @property
    def nbytes(self) -> int:
        return len(self._blob) + self._ends.nbytes + self._split.nbytes

    def save(self, folder: Path) -> None:
        (folder / "texts.bin").write_bytes(self._blob)
        np.save(folder / "text_ends.npy", self._ends.values)
        np.save(folder / "text_split.npy", self._split.values)

    @classmethod
    def load(cls, folder: Path) -> _Texts:
        texts = cls()
        texts._blob = bytearray((folder / "texts.bin").read_bytes())
        texts._ends = _Column.of(np.load(folder / "text_ends.npy"))
        texts._split = _Column.of(np.load(folder / "text_split.npy"))
        return texts


class ScreenIndex:
    """Stored items' sketches for the candidate search (inner product), with their titles and
    descriptions for the exact rescoring.

    Two phases, one interface. Up to `exact_max` items the sketches sit in a faiss
    `IndexFlatIP` (exact search). The add that takes the store past `exact_max` converts it
    once: an HNSW graph (no training, takes items as they come; `IndexHNSWSQ` with float16
    vectors by default, `IndexHNSWFlat` with `storage="float32"`) is built from the flat index's
    vectors, the flat index is dropped, and every later item is inserted into the graph. FAISS
    holds the only copy of the vectors; positions map to the caller's ids through one int64
    array. `save` and `load` keep it across restarts.

    The graph is a function of the items' order alone: items are inserted one at a time, on
    one thread, whatever the batches they came in (faiss inserts a batch of several by level,
    in an order that depends on the batch, and in parallel in an order that depends on thread
    timing). So the service, which rebuilds the index from the store (in id order) on every
    start, gets the same graph, and the same candidates, as the index it had before the
    restart, and as any other process that reads the same store.
    """

    def __init__(
        self,
        dim: int = SKETCH_DIM,
        m: int = HNSW_M,
        ef_search: int | None = EF_SEARCH,
        threads: int = 2,
        *,
        exact_max: int = EXACT_MAX,
        ef_construction: int = EF_CONSTRUCTION,
        storage: str = STORAGE,
    ) -> None:
        import faiss

        if storage not in ("float32", "float16"):
            raise ValueError(f"storage: float32 or float16, not {storage!r}")
        self.storage = storage
        self.dim, self.m, self.exact_max = dim, m, int(exact_max)
        self._ef_search = None if ef_search is None else int(ef_search)
        self.ef_construction = int(ef_construction)
        self.threads = max(1, min(threads, os.cpu_count() or 1))
        self._flat: faiss.IndexFlatIP | None = faiss.IndexFlatIP(dim)
        self._hnsw: faiss.IndexHNSWFlat | None = None
        self._ids = _Column(np.int64)  # position -> caller's id
        self._texts = _Texts()
        self._increasing = True  # ids arrived in increasing order: id -> position by bisection
        self._where: dict[int, int] | None = None  # id -> position otherwise
        self._max_id: int | None = None

    def __len__(self) -> int:
        return self._ids.n

    @property
    def kind(self) -> str:
        """`exact` (IndexFlatIP) up to `exact_max` items, `hnsw` beyond."""
        return "exact" if self._hnsw is None else "hnsw"

    @property
    def ef_search(self) -> int:
        """Candidates the graph search keeps while it walks (HNSW only): higher finds more of
        the true nearest and costs more. Set (an int) it stays; unset (None) it follows the
        store's size (`auto_ef_search`)."""
        return self._ef_search if self._ef_search is not None else auto_ef_search(len(self))

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = None if value is None else int(value)
        self._sync_ef()

    def _sync_ef(self) -> None:
        if self._hnsw is not None:
            self._hnsw.hnsw.efSearch = self.ef_search

    @property
    def max_id(self) -> int | None:
        """The highest id indexed (None when empty): where a reader of the store resumes."""
        return self._max_id

    def add(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        texts: Sequence[tuple[str, str | None]],
        progress: bool | None = None,
    ) -> None:
        """Index items in the order given (`texts`: their titles and descriptions). `progress`
        shows a bar while HNSW insertions run (default: for 50,000 or more)."""
        if not len(ids):
            return
        if len(texts) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        new_ids = np.asarray(ids, dtype=np.int64)
        first = self._ids.n
        if self._increasing and (
            np.any(np.diff(new_ids) <= 0) or (first and new_ids[0] <= self._ids.values[-1])
        ):
            self._increasing = False
            self._where = {int(i): p for p, i in enumerate(self._ids.values)}
        if self._where is not None:
            self._where.update((int(i), first + p) for p, i in enumerate(new_ids))
        self._ids.extend(new_ids)
        self._texts.extend(texts)
        top = int(new_ids.max())
        self._max_id = top if self._max_id is None else max(self._max_id, top)
        if self._flat is not None and first + len(ids) <= self.exact_max:
            self._flat.add(vectors)
            return
        if self._flat is not None:  # this add crosses exact_max: convert once
            held = self._flat.reconstruct_n(0, self._flat.ntotal) if first else vectors[:0]
            vectors = np.concatenate([held, vectors])
            self._hnsw = self._new_graph()
            self._flat = None
        self._insert(vectors, progress)
        self._sync_ef()

    def _new_graph(self):
        import faiss

        if self.storage == "float16":
            graph = faiss.IndexHNSWSQ(
                self.dim, faiss.ScalarQuantizer.QT_fp16, self.m, faiss.METRIC_INNER_PRODUCT
            )
        else:
            graph = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        graph.hnsw.efSearch = self.ef_search
        return graph

    def _insert(self, vectors: np.ndarray, progress: bool | None) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        show = len(vectors) >= 50_000 if progress is None else progress
        graph = self._hnsw
        for start in tqdm(
            range(len(vectors)), desc="screen index (HNSW)", unit="item", disable=not show
        ):
            graph.add(vectors[start : start + 1])

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sketch similarities) of each query's k nearest; id -1 where fewer are stored."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not self._ids.n:
            n = len(vectors)
            return np.full((n, k), -1, np.int64), np.full((n, k), -1.0, np.float32)
        import faiss

        # One query searches on one thread (OpenMP threads waiting for work cost more than the
        # search on a busy 2-core machine); a batch shares `threads` (measured: 0.43 -> 0.20 ms
        # per query at 100k items, batches of 32, 2 threads).
        faiss.omp_set_num_threads(1 if len(vectors) < 8 else self.threads)
        index = self._flat if self._hnsw is None else self._hnsw
        sims, pos = index.search(vectors, k)
        ids = np.where(pos >= 0, self._ids.values[np.maximum(pos, 0)], -1)
        return ids, sims

    def text(self, item_id: int) -> tuple[str, str | None]:
        """The stored title and description of `item_id` (KeyError if it is not indexed)."""
        item_id = int(item_id)
        if self._where is not None:
            return self._texts.get(self._where[item_id])
        ids = self._ids.values
        pos = int(np.searchsorted(ids, item_id))
        if pos == len(ids) or ids[pos] != item_id:
            raise KeyError(item_id)
        return self._texts.get(pos)

    def _settings(self) -> dict:
        return {
            "version": VERSION,
            "dim": self.dim,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "exact_max": self.exact_max,
            "storage": self.storage,
        }

    def save(self, folder: str | Path) -> None:
        """Write the index to `folder` (FAISS index, ids, packed texts, settings). Since the graph
        depends only on the order of the items, loading it and adding the items stored after
        `max_id` gives the index a full rebuild would give, without the rebuild's minutes."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._flat if self._hnsw is None else self._hnsw, str(folder / "index"))
        np.save(folder / "ids.npy", self._ids.values)
        self._texts.save(folder)
        meta = {**self._settings(), "kind": self.kind, "items": len(self)}
        (folder / "meta.json").write_text(json.dumps(meta) + "\n")

    @classmethod
    def load(
        cls,
        folder: str | Path,
        ef_search: int | None = EF_SEARCH,
        threads: int = 2,
        **settings,
    ) -> ScreenIndex:
        """An index `save` wrote. Raises ScreenError when it was written with other settings
        or another screen version than asked for (`settings`: the keywords of `__init__`):
        the caller then rebuilds from the store."""
        import faiss

        folder = Path(folder)
        index = cls(ef_search=ef_search, threads=threads, **settings)
        meta = json.loads((folder / "meta.json").read_text())
        wanted = index._settings()
        if {k: meta.get(k) for k in wanted} != wanted:
            raise ScreenError(f"screen index at {folder} was written with {meta}, not {wanted}")
        stored = faiss.read_index(str(folder / "index"))
        if meta["kind"] == "hnsw":
            index._hnsw, index._flat = stored, None
            graph = stored.hnsw
            # FAISS draws each new item's level from a generator it does not save: replay one
            # draw per stored item, so the next items get the levels a full rebuild gives them
            for _ in range(stored.ntotal):
                graph.random_level()
        else:
            index._flat = stored
        ids = np.load(folder / "ids.npy")
        index._ids = _Column.of(ids)
        index._texts = _Texts.load(folder)
        if len(ids) != meta["items"] or stored.ntotal != len(ids):
            raise ScreenError(f"screen index at {folder} is incomplete")
        if len(ids):
            index._max_id = int(ids.max())
        if np.any(np.diff(ids) <= 0):
            index._increasing = False
            index._where = {int(i): p for p, i in enumerate(ids)}
        index._sync_ef()
        return index

    def memory(self) -> dict[str, int]:
        """Bytes held, by part: the vectors (in FAISS), the graph's links, the id array and
        the packed texts (the id -> position dict, kept only for ids out of order, is not
        counted)."""
        n = self._ids.n
        graph = 0
        if self._hnsw is not None:
            h = self._hnsw.hnsw
            graph = 4 * h.neighbors.size() + 4 * h.levels.size() + 8 * h.offsets.size()
        per_value = 2 if self._hnsw is not None and self.storage == "float16" else 4
        return {
            "vectors": per_value * self.dim * n,
            "graph": int(graph),
            "ids": self._ids.nbytes,
            "texts": self._texts.nbytes,
        }


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
