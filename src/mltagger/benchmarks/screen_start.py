"""What a start of the service costs with the screen index saved, and what the index costs in
memory on a machine of several workers: the second part of `mltagger dedup-eval --scale SIZES`
(at the largest size; `--start-workers 0` skips it). docs/dedup.md, "One index, persisted and
shared".

Everything runs through the service's own code (`mltagger.serving.screen_files.open_index`) on a
real SQLite store, in a temporary folder, holding the scale store's first n items and their
sketches:

1. the store holds n - `catch_up` items; a first start builds the index and saves it;
2. the last `catch_up` items are stored (what came in since the save);
3. 1 and N worker processes (spawned, as uvicorn's are) each start as a worker does: shared (the
   save mapped read-only, checked against the store, the new items in a private delta) and
   private (the save read, its graph's level draws replayed, the new items inserted into the
   graph); each then answers the benchmark's queries and some stored items, so that the pages a
   long-running worker reads are read. Reported: each worker's start (seconds) and how much its
   proportional set size grew (PSS, /proc/<pid>/smaps_rollup: a page mapped by k processes
   counts 1/k in each), one worker and the N workers' sum;
4. a full rebuild (no save: every row read, the graph built, then saved), the start before.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import content_hash
from mltagger.screen.bench_data import load_bench
from mltagger.screen.scale_bench import DEFAULT_CACHE, store_counts
from mltagger.screen.scale_data import load_scale_store
from mltagger.screen.sketch import VERSION, profile, sketch, unit_sketches
from mltagger.serving import screen_files
from mltagger.serving.screen_files import open_index
from mltagger.serving.store import MODEL, Store

CATCH_UP = 10_000
WORKERS = 4
WARM_ITEMS = 20_000  # stored items each worker also searches for (pages a worker reads)


def pss_kib(pid: int | str = "self") -> int:
    """A process's proportional set size (kB), from /proc/<pid>/smaps_rollup (Linux)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise OSError(f"no Pss in /proc/{pid}/smaps_rollup")


def fill_store(store: Store, items: list[dict], counts: np.ndarray, start: int, stop: int) -> None:
    """Store items[start:stop] with their sketches, as the service stores them."""
    bar = tqdm(total=stop - start, desc="store items", unit="item", disable=stop - start < 50_000)
    for lo in range(start, stop, 5000):
        hi = min(stop, lo + 5000)
        vecs = unit_sketches(counts[lo:hi])
        rows = [
            {
                "title": it["title"],
                "description": it["description"] or "",
                "content_hash": content_hash(it["title"], it["description"] or ""),
                "tag": "other",
                "tagged_by": MODEL,
                "source": "scale-bench",
                "embedding": vec,
                "embedding_model": VERSION,
            }
            for it, vec in zip(items[lo:hi], vecs, strict=True)
        ]
        store.add_items(rows)
        bar.update(hi - lo)
    bar.close()


def _worker(url: str, folder: str, shared: bool, settings: dict, probe: str, conn, go) -> None:
    """One worker's start and its queries, in a spawned process; reports, then waits for the
    parent to read its PSS."""
    import faiss  # loaded before the baseline: its library is not the index

    faiss.omp_set_num_threads(1)
    screen_files.SETTINGS = settings
    queries = np.load(probe)
    before = pss_kib()
    t0 = time.perf_counter()
    store = Store(url)
    index, _ = open_index(store, folder, shared)
    opened = time.perf_counter() - t0
    for lo in range(0, len(queries), 32):
        index.search(queries[lo : lo + 32], 5)
    conn.send({"start_s": opened, "pss_before_kib": before, "items": len(index)})
    go.wait()
    store.close()


def _workers(url: str, folder: Path, shared: bool, settings: dict, probe: Path, n: int) -> dict:
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    pipes, procs = [], []
    for _ in range(n):
        mine, theirs = ctx.Pipe()
        args = (url, str(folder), shared, settings, str(probe), theirs, go)
        procs.append(ctx.Process(target=_worker, args=args))
        pipes.append(mine)
        procs[-1].start()
    reports = [p.recv() for p in pipes]
    pss = [pss_kib(p.pid) for p in procs]
    go.set()
    for p in procs:
        p.join(120)
    growth = [(after - r["pss_before_kib"]) / 1024 for after, r in zip(pss, reports, strict=True)]
    return {
        "mode": "shared" if shared else "private",
        "workers": n,
        "items": reports[0]["items"],
        "start_s": [r["start_s"] for r in reports],
        "pss_growth_mib": growth,
        "pss_growth_mib_total": sum(growth),
    }


def measure_start(
    items: list[dict],
    counts: np.ndarray,
    queries: np.ndarray,
    size: int,
    settings: dict,
    workers: int = WORKERS,
    catch_up: int = CATCH_UP,
    rebuild: bool = True,
) -> dict:
    """The figures of the module doc for a store of `size` items (ScreenIndex `settings`);
    `rebuild` False skips step 4 (the first start's build stands for it)."""
    catch_up = min(catch_up, size // 2)
    settings = {k: v for k, v in settings.items() if v is not None}
    screen_files.SETTINGS = settings
    result: dict = {"stored": size, "catch_up": catch_up, "settings": settings, "runs": []}
    with tempfile.TemporaryDirectory(prefix="screen-start-") as tmp:
        url = f"sqlite:///{tmp}/store.db"
        store = Store(url)
        fill_store(store, items, counts, 0, size - catch_up)
        t0 = time.perf_counter()
        index, _ = open_index(store, Path(tmp) / "index", True)
        result["first_start_s"] = time.perf_counter() - t0  # build + save + map
        del index  # unmapped: the workers' PSS shares its pages with no one else
        gc.collect()
        fill_store(store, items, counts, size - catch_up, size)
        warm = unit_sketches(counts[: size : max(1, size // WARM_ITEMS)])
        probe = Path(tmp) / "probe.npy"
        np.save(probe, np.concatenate([queries, warm]).astype(np.float32))
        for shared in (True, False):
            for n in sorted({1, workers}):
                run = _workers(url, Path(tmp) / "index", shared, settings, probe, n)
                result["runs"].append(run)
                print(
                    f"start from the save, {run['mode']}, {n} worker(s): "
                    f"{max(run['start_s']):.1f} s, PSS +{run['pss_growth_mib_total']:.0f} MiB "
                    "in all",
                    flush=True,
                )
        if rebuild:
            t0 = time.perf_counter()
            index, _ = open_index(store, Path(tmp) / "rebuilt", True)
            result["rebuild_s"] = time.perf_counter() - t0  # read all rows + build + save + map
            del index
        store.close()
    print_start(result)
    return result


def print_start(result: dict) -> None:
    """The start and memory table (docs/dedup.md)."""
    n, c = result["stored"], result["catch_up"]
    rebuild = f"{result['rebuild_s']:.1f} s" if "rebuild_s" in result else "not run"
    print(
        f"\nstart with {n:,} stored items, {c:,} of them stored after the save: full rebuild "
        f"{rebuild} (first start at {n - c:,}: {result['first_start_s']:.1f} s)"
    )
    print("| start | workers | start s (slowest) | PSS growth MiB, each | all workers |")
    print("|---|---:|---:|---:|---:|")
    for r in result["runs"]:
        each = " / ".join(f"{g:.0f}" for g in r["pss_growth_mib"])
        print(
            f"| from the save, {r['mode']} | {r['workers']} | {max(r['start_s']):.1f} | {each} "
            f"| {r['pss_growth_mib_total']:.0f} |"
        )


def run_start(
    size: int,
    registry: str | None,
    cache: str | None,
    settings: dict,
    out: Path,
    workers: int = WORKERS,
    catch_up: int = CATCH_UP,
    rebuild: bool = True,
) -> dict:
    """`measure_start` on the scale benchmark's store (cached by the index-at-scale run) and
    its queries; writes start.json into `out`."""
    cache_dir = Path(cache) if cache else resolve_path(DEFAULT_CACHE)
    bench = load_bench()
    items, _, key = load_scale_store(bench, size, Path(registry) if registry else None, cache_dir)
    counts = store_counts(items, cache_dir, key)
    queries = sketch([profile(q["title"], q["description"]) for q in bench.copies + bench.queries])
    result = measure_start(items, counts, queries, size, settings, workers, catch_up, rebuild)
    (out / "start.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
