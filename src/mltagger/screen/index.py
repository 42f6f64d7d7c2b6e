"""The stored items' index for the duplicate screen's candidate search: their sketches in FAISS
(inner product: exact up to `EXACT_MAX` items, an HNSW graph beyond) with their titles and
descriptions packed for the exact rescoring, saved and loaded across restarts.

Over 300 lines on purpose: the two phases (flat, then graph), the packed texts, the id mapping and
save/load are one structure whose invariants (one copy of each vector, a graph that depends only
on the items' order) are read together.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mltagger.screen.sketch import SKETCH_DIM, VERSION, ScreenError

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
    def of(cls, values: np.ndarray, copy: bool = True) -> _Column:
        """A column of `values`: a copy, or (copy False: a read-only memory map) the array."""
        col = cls(values.dtype.type)
        if copy:
            col.extend(values)
        else:
            col._data, col.n = values, len(values)
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
    def load(cls, folder: Path, mapped: bool = False) -> _Texts:
        """`save`'s files: read, or mapped read-only (one copy for every process mapping them)."""
        texts, mode = cls(), "r" if mapped else None
        blob = folder / "texts.bin"
        if mapped and blob.stat().st_size:
            with blob.open("rb") as fh:
                texts._blob = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # type: ignore[assignment]
        else:
            texts._blob = bytearray(blob.read_bytes())
        texts._ends = _Column.of(np.load(folder / "text_ends.npy", mmap_mode=mode), not mapped)
        texts._split = _Column.of(np.load(folder / "text_split.npy", mmap_mode=mode), not mapped)
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
        self.read_only = False  # loaded mapped: FAISS aborts the process on an add, so refuse it

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
        if self.read_only:
            raise ScreenError("a memory-mapped screen index is read-only: add to a delta")
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
        *,
        mapped: bool = False,
        **settings,
    ) -> ScreenIndex:
        """An index `save` wrote. Raises ScreenError when it was written with other settings
        or another screen version than asked for (`settings`: the keywords of `__init__`):
        the caller then rebuilds from the store. `mapped`: the vectors, graph links, ids and
        texts stay in the files, mapped read-only (FAISS `IO_FLAG_MMAP_IFC`), so processes
        that map one saved index share one copy in memory; such an index takes no adds."""
        import faiss

        folder = Path(folder)
        index = cls(ef_search=ef_search, threads=threads, **settings)
        meta = json.loads((folder / "meta.json").read_text())
        wanted = index._settings()
        if {k: meta.get(k) for k in wanted} != wanted:
            raise ScreenError(f"screen index at {folder} was written with {meta}, not {wanted}")
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mapped else 0
        stored = faiss.read_index(str(folder / "index"), flags)
        if meta["kind"] == "hnsw":
            index._hnsw, index._flat = stored, None
            graph = stored.hnsw
            # FAISS draws each new item's level from a generator it does not save: replay one
            # draw per stored item, so the next items get the levels a full rebuild gives them
            for _ in range(0 if mapped else stored.ntotal):
                graph.random_level()
        else:
            index._flat = stored
        ids = np.load(folder / "ids.npy", mmap_mode="r" if mapped else None)
        index._ids = _Column.of(ids, copy=not mapped)
        index._texts = _Texts.load(folder, mapped)
        index.read_only = mapped
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
