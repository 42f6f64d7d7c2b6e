"""The duplicate screen's index at store scale: latency, memory, build time and recall of the
approximate index against exact search (`mltagger dedup-eval --scale ...`). A benchmark, not a
test: the 1M store takes minutes to sketch (cached) and tens of minutes to index.

    make dedup-eval DEDUP_ARGS="--scale 10k,100k,1M --registry /work/.library/env/packages"

Sizes up to 100k use the benchmark's own store (`data/dedup/registry.tsv.gz`, shipped); larger
ones read the registry package lists from `--registry` (the environment's folder of them, which
a clone does not ship; `mltagger.screen.scale_data` says what fills the store). The store's items
and their sketches are cached in `--cache` (int8 bucket counts: exact, a quarter of float32).

For each size, the index is grown as the service grows it (batches of 1,000, in order; sizes are
nested, so one index is grown through all of them, and since the graph depends only on the
order of the items, the time to reach a size is the time a start takes to rebuild it). Then:

- **recall** against exact inner-product search (faiss `IndexFlatIP`, chunk by chunk) of the
  benchmark's queries: the ~1,600 true copies of stored items (edited kinds and relistings) and
  the ~930 genuinely new items. *Candidate recall*: of the (query, stored item) pairs among the
  exact k nearest whose sketch similarity reaches the calibrated floor, the share the index
  returns. *Duplicate recall*: of those pairs the calibrated pair model calls duplicates
  (probability >= threshold, `data/dedup/screen.json`), the share the index returns. *Changed
  verdicts*: queries whose screen verdict (duplicate or not) differs from exact search's.
- **latency** of the screen alone (sketch, index search, features and pair model of the
  candidates; not the store's hash/link query), one item per call and in batches of 32; and of
  the index search alone. Medians over calls.
- **memory**: the index's own bytes by part (vectors, graph, ids, packed texts) and the growth of
  the process's resident memory while building.
- an **efSearch sweep** of recall and search time on the built graph, and the **crossover** of
  exact and HNSW search time at 1k-50k items (why `EXACT_MAX`).

Writes `scale.json` and `scale.png` (latency and recall against store size) in the run folder.

Over 400 lines because it is one benchmark end to end: the store's sketch cache, the exact
reference, the recall arithmetic (unit-tested), the timings, the memory figures and the output
belong together and are read together.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.errors import DataError, UserError
from mltagger.core.paths import resolve_path
from mltagger.screen.bench_data import load_bench
from mltagger.screen.index import EF_SEARCH_BY_SIZE, ScreenIndex
from mltagger.screen.pairs import (
    CALIBRATION_FILE,
    PairModel,
    best,
    candidates,
    load_model,
    pair_features,
)
from mltagger.screen.scale_data import load_scale_store
from mltagger.screen.sketch import (
    SKETCH_DIM,
    VERSION,
    LazyProfiles,
    Text,
    normalised,
    profile,
    sketch,
    sketch_counts,
    unit_sketches,
)

DEFAULT_CACHE = "runs/dedup_scale_cache"
ARRIVAL_BATCH = 1000
CROSSOVER_SIZES = (1000, 2000, 5000, 10000, 20000, 50000)


def parse_scale(text: str) -> list[int]:
    """ "10k,100k,1M" -> [10000, 100000, 1000000] (k and M suffixes, plain numbers too)."""
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", part)
        if not m:
            raise UserError(f"--scale: {part!r} is not a size like 10k, 100k or 1M")
        mult = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
        sizes.append(int(float(m.group(1)) * mult))
    if not sizes or min(sizes) < 1:
        raise UserError("--scale: one or more sizes of at least 1 item")
    return sorted(set(sizes))


def store_counts(items: list[dict], cache: Path, key: str) -> np.ndarray:
    """The store's sketches as int8 bucket counts (`sketch_counts`), cached in `cache`."""
    path = cache / f"sketch-{VERSION}-{len(items)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    counts = np.empty((len(items), SKETCH_DIM), dtype=np.int8)
    for start in tqdm(range(0, len(items), 5000), desc="sketch store", unit="5k items"):
        chunk = items[start : start + 5000]
        c = sketch_counts([Text(normalised(it["title"], it["description"])) for it in chunk])
        if np.abs(c).max() > 127:  # never seen: bucket sums stay below 20 on these texts
            raise DataError("a sketch bucket outgrew int8: the cache format cannot hold it")
        counts[start : start + len(chunk)] = c
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, counts)
    tmp.replace(path)
    return counts


def exact_top_k(
    queries: np.ndarray, counts: np.ndarray, n: int, k: int, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, similarities) of each query's k nearest among the first n stored sketches,
    by exact inner product, a chunk at a time (no second full copy of the store's vectors)."""
    import faiss

    faiss.omp_set_num_threads(2)
    nq = len(queries)
    top_s = np.full((nq, k), -np.inf, dtype=np.float32)
    top_p = np.full((nq, k), -1, dtype=np.int64)
    for start in range(0, n, chunk):
        flat = faiss.IndexFlatIP(SKETCH_DIM)
        flat.add(unit_sketches(counts[start : min(n, start + chunk)]))
        s, p = flat.search(queries, k)
        s = np.concatenate([top_s, s], axis=1)
        p = np.concatenate([top_p, np.where(p >= 0, p + start, -1)], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        top_s, top_p = np.take_along_axis(s, order, 1), np.take_along_axis(p, order, 1)
    return top_p, top_s


class PairScores:
    """The pair model's probability for (query, stored item) pairs, each computed once."""

    def __init__(self, model: PairModel, qprofiles: list, items: list[dict]) -> None:
        self.model, self.qp, self.items = model, qprofiles, items
        self._stored: dict[int, object] = {}
        self._prob: dict[tuple[int, int], float] = {}

    def __call__(self, j: int, item: int) -> float:
        key = (j, item)
        if key not in self._prob:
            other = self._stored.get(item)
            if other is None:
                it = self.items[item]
                other = self._stored[item] = profile(it["title"], it["description"])
            feats = pair_features(self.qp[j], other)
            self._prob[key] = float(self.model.probability(feats[None])[0])
        return self._prob[key]


def recall_figures(
    ref: tuple[np.ndarray, np.ndarray],
    got: tuple[np.ndarray, np.ndarray],
    groups: np.ndarray,
    scores: PairScores,
    model: PairModel,
) -> dict:
    """Candidate recall, duplicate recall and changed verdicts of `got` against `ref`, overall
    and per query group (see the module doc)."""
    out: dict = {}
    for group in ["all", *sorted(set(groups))]:
        cand = [0, 0]
        dup = [0, 0]
        verdict = [0, 0]  # queries exact search calls duplicates: kept by the index, all
        changed = 0
        queries = np.flatnonzero(groups == group) if group != "all" else range(len(groups))
        for j in queries:
            r = {
                int(i)
                for i, s in zip(ref[0][j], ref[1][j], strict=True)
                if i >= 0 and s >= model.floor
            }
            a = {
                int(i)
                for i, s in zip(got[0][j], got[1][j], strict=True)
                if i >= 0 and s >= model.floor
            }
            cand[0] += len(r & a)
            cand[1] += len(r)
            r_dup = {i for i in r if scores(j, i) >= model.threshold}
            dup[0] += len(r_dup & a)
            dup[1] += len(r_dup)
            a_dup = any(scores(j, i) >= model.threshold for i in a)
            changed += bool(r_dup) != a_dup
            verdict[0] += bool(r_dup) and a_dup
            verdict[1] += bool(r_dup)
        out[group] = {
            "queries": len(queries),
            "candidate_pairs": cand[1],
            "candidate_recall": cand[0] / cand[1] if cand[1] else 1.0,
            "duplicate_pairs": dup[1],
            "duplicate_recall": dup[0] / dup[1] if dup[1] else 1.0,
            "changed_verdicts": int(changed),
            "duplicate_queries": verdict[1],
            "verdict_recall": verdict[0] / verdict[1] if verdict[1] else 1.0,
        }
    return out


def median_ms_per_item(fn, chunks) -> float:
    """Median over calls of (time of one call / items in it): robust to a stray pause."""
    per = []
    for c in chunks:
        t0 = time.perf_counter()
        fn(c)
        per.append((time.perf_counter() - t0) * 1e3 / len(c))
    return float(np.median(per))


def screen_ms(index: ScreenIndex, model: PairModel, picks: list[dict], batch: int) -> float:
    """Median ms per item of the screen alone, as `mltagger.screen.screening.screen_batch` runs
    its near stage: sketch, index search, candidates' features, pair model."""

    def run(items: list[dict]) -> None:
        sk = sketch([Text(normalised(it["title"], it["description"])) for it in items])
        for c in candidates(LazyProfiles(items), sk, index, model.k, model.floor):
            best(model, c)

    chunks = [picks[i : i + batch] for i in range(0, len(picks), batch)]
    run(chunks[0])  # warm up
    return median_ms_per_item(run, chunks)


def search_ms(index: ScreenIndex, vectors: np.ndarray, k: int, batch: int) -> float:
    """Median ms per query of the index search alone."""
    chunks = [vectors[i : i + batch] for i in range(0, len(vectors), batch)]
    index.search(chunks[0], k)
    return median_ms_per_item(lambda c: index.search(c, k), chunks)


def rss_bytes() -> int:
    """The process's resident memory now (Linux /proc; elsewhere its peak, from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tuple_dict_bytes(items: list[dict]) -> int:
    """What the former `{id: (title, description)}` dict costs for these items (fresh string
    objects, as rows read from the store are), by tracemalloc."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = {
        i: (it["title"].encode().decode(), (it["description"] or "").encode().decode())
        for i, it in enumerate(items)
    }
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del d
    return int(used)


def crossover(counts: np.ndarray, qs: np.ndarray, settings: dict) -> list[dict]:
    """Single-query search time of exact search and of the HNSW graph at small sizes."""
    import faiss

    n = min(len(counts), max(CROSSOVER_SIZES))
    vectors = unit_sketches(counts[:n])
    graph = ScreenIndex(**{**settings, "exact_max": 0})
    rows, done = [], 0
    for size in (s for s in CROSSOVER_SIZES if s <= n):
        graph.add(list(range(done, size)), vectors[done:size], [("", "")] * (size - done))
        done = size
        flat = faiss.IndexFlatIP(SKETCH_DIM)
        flat.add(vectors[:size])
        faiss.omp_set_num_threads(1)
        exact = median_ms_per_item(
            lambda c, flat=flat: flat.search(c, 5), [qs[i : i + 1] for i in range(200)]
        )
        rows.append(
            {"stored": size, "exact_ms": exact, "hnsw_ms": search_ms(graph, qs[:200], 5, 1)}
        )
        print(
            f"crossover {size}: exact {exact:.3f} ms, hnsw {rows[-1]['hnsw_ms']:.3f} ms", flush=True
        )
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["sizes"]
    x = [r["stored"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].plot(x, [r["screen_ms_single"] for r in rows], "o-", label="screen, 1 item per call")
    axes[0].plot(x, [r["screen_ms_batch32"] for r in rows], "o-", label="screen, batches of 32")
    axes[0].plot(x, [r["search_ms_single"] for r in rows], "s--", label="index search alone, 1")
    axes[0].axhline(2.0, color="grey", ls=":", label="target 2 ms per item")
    axes[0].set(xscale="log", xlabel="stored items", ylabel="ms per item (median)")
    axes[0].set_title("latency of the screen against store size")
    axes[0].legend(fontsize=8)
    for key, label in (
        ("candidate_recall", "candidate recall@k above the floor"),
        ("duplicate_recall", "recall of duplicate pairs at the threshold"),
    ):
        axes[1].plot(x, [r["recall"]["all"][key] for r in rows], "o-", label=label)
    axes[1].axhline(0.99, color="grey", ls=":", label="target 0.99")
    axes[1].set(xscale="log", xlabel="stored items", ylabel="share found by the index")
    axes[1].set_title("recall against exact search")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_scale(
    sizes: list[int],
    registry: str | None,
    cache: str | None,
    out: Path,
    ef_sweep: list[int],
    repeats: int = 10,
    settings: dict | None = None,
    crossover_run: bool = True,
) -> dict:
    """The whole scale benchmark (see the module doc); returns what it writes to scale.json."""
    settings = dict(settings or {})
    cache_dir = Path(cache) if cache else resolve_path(DEFAULT_CACHE)
    bench = load_bench()
    model = load_model(resolve_path(CALIBRATION_FILE))
    largest = max(sizes)
    items, info, key = load_scale_store(
        bench, largest, Path(registry) if registry else None, cache_dir
    )
    counts = store_counts(items, cache_dir, key)
    queries = list(bench.copies) + list(bench.queries)
    groups = np.array(["copies"] * len(bench.copies) + ["new"] * len(bench.queries))
    qp = [profile(q["title"], q["description"]) for q in queries]
    qs = sketch(qp)
    rng = np.random.default_rng(0)
    picks = [queries[i] for i in rng.choice(len(queries), 32 * repeats, replace=False)]
    scores = PairScores(model, qp, items)
    print(
        f"store: {len(items)} items ({info}); {len(bench.copies)} true copies and "
        f"{len(bench.queries)} new items as queries; cache {cache_dir}",
        flush=True,
    )
    result: dict = {
        "command": None,
        "store": info,
        "queries": {"copies": len(bench.copies), "new": len(bench.queries)},
        "model": {"k": model.k, "floor": model.floor, "threshold": model.threshold},
        "sizes": [],
        "ef_sweep": [],
    }
    if crossover_run:
        result["crossover"] = crossover(counts, qs, settings)
    index = ScreenIndex(**settings)
    result["settings"] = {
        "exact_max": index.exact_max,
        "m": index.m,
        "ef_construction": index.ef_construction,
        "ef_search": index._ef_search or f"by size {EF_SEARCH_BY_SIZE}",
        "storage": index.storage,
        "search_threads_for_batches": index.threads,
        "build_threads": 1,
    }
    rss0, built, build_s = rss_bytes(), 0, 0.0
    for size in sizes:
        bar = tqdm(total=size - built, desc=f"index to {size}", unit="item", disable=size < 50_000)
        for start in range(built, size, ARRIVAL_BATCH):
            stop = min(size, start + ARRIVAL_BATCH)
            vectors = unit_sketches(counts[start:stop])
            texts = [(it["title"], it["description"]) for it in items[start:stop]]
            t0 = time.perf_counter()
            index.add(list(range(start, stop)), vectors, texts, progress=False)
            build_s += time.perf_counter() - t0
            bar.update(stop - start)
        bar.close()
        built = size
        rss = rss_bytes() - rss0
        ref = exact_top_k(qs, counts, size, model.k)
        row = {
            "stored": size,
            "kind": index.kind,
            "ef_search": index.ef_search if index.kind == "hnsw" else None,
            "build_s": build_s,
            "rss_growth_bytes": rss,
            "index_bytes": index.memory(),
            "screen_ms_single": screen_ms(index, model, picks, 1),
            "screen_ms_batch32": screen_ms(index, model, picks, 32),
            "search_ms_single": search_ms(index, qs[: 32 * repeats], model.k, 1),
            "search_ms_batch32": search_ms(index, qs[: 32 * repeats], model.k, 32),
            "recall": recall_figures(ref, index.search(qs, model.k), groups, scores, model),
        }
        result["sizes"].append(row)
        rec = row["recall"]["all"]
        print(
            f"{size}: {index.kind}, built in {build_s:.1f} s, screen {row['screen_ms_single']:.3f}"
            f" ms single / {row['screen_ms_batch32']:.3f} ms batch, candidate recall "
            f"{rec['candidate_recall']:.4f}, duplicate recall {rec['duplicate_recall']:.4f}, "
            f"changed verdicts {rec['changed_verdicts']}, RSS +{rss / 2**20:.0f} MiB",
            flush=True,
        )
        if index.kind == "hnsw":
            default = index._ef_search
            for ef in ef_sweep:
                index.ef_search = ef
                rec = recall_figures(ref, index.search(qs, model.k), groups, scores, model)
                result["ef_sweep"].append(
                    {
                        "stored": size,
                        "ef_search": ef,
                        "search_ms_single": search_ms(index, qs[: 32 * repeats], model.k, 1),
                        "screen_ms_single": screen_ms(index, model, picks, 1),
                        "screen_ms_batch32": screen_ms(index, model, picks, 32),
                        "recall": rec,
                    }
                )
            index.ef_search = default
        (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    result["texts_as_tuple_dict_bytes"] = tuple_dict_bytes(items[:largest])
    (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "scale.png")
    print_tables(result)
    return result


def print_tables(result: dict) -> None:
    print(
        "\n| stored | index | build s | screen ms/item, 1 | batch 32 | search ms, 1 | "
        "candidate recall | duplicate recall (pairs) | changed verdicts | index MiB | "
        "RSS growth MiB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["sizes"]:
        a = r["recall"]["all"]
        mib = sum(r["index_bytes"].values()) / 2**20
        print(
            f"| {r['stored']:,} | {r['kind']} | {r['build_s']:.1f} | {r['screen_ms_single']:.3f} "
            f"| {r['screen_ms_batch32']:.3f} | {r['search_ms_single']:.3f} | "
            f"{a['candidate_recall']:.4f} | {a['duplicate_recall']:.4f} ({a['duplicate_pairs']}) "
            f"| {a['changed_verdicts']} | {mib:.0f} | {r['rss_growth_bytes'] / 2**20:.0f} |"
        )
    if result["ef_sweep"]:
        print(
            "\n| stored | efSearch | search ms, 1 | screen ms, 1 | screen ms, batch 32 | "
            "candidate recall | duplicate recall | changed verdicts |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in result["ef_sweep"]:
            a = r["recall"]["all"]
            print(
                f"| {r['stored']:,} | {r['ef_search']} | {r['search_ms_single']:.3f} | "
                f"{r['screen_ms_single']:.3f} | {r['screen_ms_batch32']:.3f} | "
                f"{a['candidate_recall']:.4f} | {a['duplicate_recall']:.4f} | "
                f"{a['changed_verdicts']} |"
            )
