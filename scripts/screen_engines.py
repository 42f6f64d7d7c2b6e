"""Which engine should hold the duplicate screen's saved index, shared by the workers of one
machine? FAISS (HNSW with float16 vectors, read whole or memory-mapped) against usearch (HNSW,
float16, loaded or viewed from its file), on the scale benchmark's store and queries.

    .venv/bin/python scripts/screen_engines.py --size 100k --workers 4 \
        --usearch-python /path/to/venv/bin/python       # a venv with usearch and numpy

For each engine: the build (one thread, items in order, as the service builds; timed), the saved
file, then N processes that each open it and answer every benchmark query (2,533) and every
fifth stored item (so most of the file's pages are read, as a long-running worker reads them):
the time to open, the median milliseconds of one query on one thread, recall@k against exact
search (FAISS IndexFlatIP), and the proportional set size (PSS, /proc/<pid>/smaps_rollup: shared
pages are divided among the processes that map them) each process grew by, for 1 and N
processes. usearch is not a dependency of the project; without --usearch-python it is skipped.

The driver runs in the project's venv (it reads the benchmark's store and sketches); the engines
run in subprocesses of this same file, which import only numpy and the engine, so they run in
any venv that has them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 256
M, EF_CONSTRUCTION, EF_SEARCH, K = 32, 200, 64, 5
ENGINES = ("faiss", "faiss-mmap", "usearch", "usearch-view")


def pss_kib(pid: int | str = "self") -> int:
    """Proportional set size of a process (kB), from /proc/<pid>/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss line")


# -- in the engine's process -----------------------------------------------------------------


def build(engine: str, folder: Path) -> None:
    """Build the index of `vectors.npy` one item at a time (FAISS) / on one thread (usearch)."""
    vectors = np.load(folder / "vectors.npy")
    t0 = time.perf_counter()
    if engine == "faiss":
        import faiss

        faiss.omp_set_num_threads(1)
        index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        for i in range(len(vectors)):
            index.add(vectors[i : i + 1])
        built = time.perf_counter() - t0
        faiss.write_index(index, str(folder / "faiss.index"))
    else:
        from usearch.index import Index

        index = Index(
            ndim=DIM,
            metric="ip",
            dtype="f16",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
            expansion_search=EF_SEARCH,
        )
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=1)
        built = time.perf_counter() - t0
        index.save(str(folder / "usearch.index"))
    print(json.dumps({"build_s": built}), flush=True)


def serve(engine: str, folder: Path) -> None:
    """Open the saved index as `engine` says, answer the queries, report, wait for stdin."""
    queries = np.load(folder / "queries.npy")
    warm = np.load(folder / "vectors.npy", mmap_mode="r")[::5].copy()
    if engine.startswith("faiss"):
        import faiss
    else:
        from usearch.index import Index
    before = pss_kib()  # the engine's libraries loaded: what grows from here is the index
    t0 = time.perf_counter()
    if engine.startswith("faiss"):
        faiss.omp_set_num_threads(1)
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if engine == "faiss-mmap" else 0
        index = faiss.read_index(str(folder / "faiss.index"), flags)
        index.hnsw.efSearch = EF_SEARCH
        opened = time.perf_counter() - t0

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q, K)[1]
    else:
        index = Index.restore(str(folder / "usearch.index"), view=engine == "usearch-view")
        index.expansion_search = EF_SEARCH
        opened = time.perf_counter() - t0

        def search(q: np.ndarray) -> np.ndarray:
            found = index.search(q, K, threads=1)
            keys = np.asarray(found.keys, dtype=np.int64).reshape(len(q), -1)
            counts = np.asarray(getattr(found, "counts", [len(found.keys)])).reshape(-1)
            cols = np.arange(keys.shape[1])[None, :]
            return np.where(cols < counts[:, None], keys, -1)

    got = search(queries)
    per = []
    for j in range(min(500, len(queries))):
        t = time.perf_counter()
        search(queries[j : j + 1])
        per.append((time.perf_counter() - t) * 1e3)
    for start in range(0, len(warm), 256):
        search(warm[start : start + 256])
    np.save(folder / f"got-{engine}-{os.getpid()}.npy", got)
    print(
        json.dumps(
            {"open_s": opened, "ms_per_query": float(np.median(per)), "pss_before_kib": before}
        ),
        flush=True,
    )
    sys.stdin.readline()  # the driver reads this process's PSS, then lets it end


# -- in the driver (project venv) ------------------------------------------------------------


def prepare(size: int, folder: Path) -> dict:
    """The first `size` items of the scale store and the benchmark's queries, as unit sketches;
    the exact k nearest of each query."""
    from mltagger.core.paths import resolve_path
    from mltagger.screen.bench_data import load_bench
    from mltagger.screen.scale_bench import DEFAULT_CACHE, exact_top_k, store_counts
    from mltagger.screen.scale_data import load_scale_store
    from mltagger.screen.sketch import profile, sketch, unit_sketches

    bench = load_bench()
    cache = resolve_path(DEFAULT_CACHE)
    items, info, key = load_scale_store(bench, size, None, cache)
    counts = store_counts(items, cache, key)
    queries = list(bench.copies) + list(bench.queries)
    qs = sketch([profile(q["title"], q["description"]) for q in queries])
    np.save(folder / "vectors.npy", unit_sketches(counts[:size]))
    np.save(folder / "queries.npy", qs)
    ref, sims = exact_top_k(qs, counts, size, K)
    np.save(folder / "exact.npy", ref)
    np.save(folder / "exact_sims.npy", sims)
    return {"stored": size, "queries": len(queries), "store": info}


def recall(folder: Path, got: np.ndarray, floor: float = 0.65) -> dict:
    """recall@k of `got` against exact search, over all k nearest and over those at or above
    the screen's candidate floor (what the screen reads)."""
    ref, sims = np.load(folder / "exact.npy"), np.load(folder / "exact_sims.npy")
    hit = [len(set(r) & set(g)) for r, g in zip(ref, got, strict=True)]
    above = [
        (
            len({i for i, s in zip(r, s_, strict=True) if s >= floor} & set(g)),
            int((s_ >= floor).sum()),
        )
        for r, s_, g in zip(ref, sims, got, strict=True)
    ]
    return {
        f"recall_at_{K}": sum(hit) / ref.size,
        "candidate_recall": sum(a for a, _ in above) / max(1, sum(n for _, n in above)),
    }


def run_engine(python: str, engine: str, folder: Path, workers: int) -> list[dict]:
    """1 and `workers` processes serving the saved index at once: their figures and PSS."""
    rows = []
    for n in sorted({1, workers}):
        procs = [
            subprocess.Popen(
                [python, __file__, "serve", engine, str(folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        reports = [json.loads(p.stdout.readline()) for p in procs]
        pss = [pss_kib(p.pid) for p in procs]
        for p in procs:
            p.communicate("\n", timeout=60)
        got = [np.load(folder / f"got-{engine}-{p.pid}.npy") for p in procs]
        assert all(np.array_equal(got[0], g) for g in got)
        row = {
            "engine": engine,
            "processes": n,
            "open_s": float(np.median([r["open_s"] for r in reports])),
            "ms_per_query": float(np.median([r["ms_per_query"] for r in reports])),
            "pss_growth_mib_each": [
                (after - r["pss_before_kib"]) / 1024 for after, r in zip(pss, reports, strict=True)
            ],
            **recall(folder, got[0]),
        }
        row["pss_growth_mib_total"] = sum(row["pss_growth_mib_each"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("build", "serve"):
        verb, engine, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
        (build if verb == "build" else serve)(engine, folder)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100k", help="stored items: 100k or fewer")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--usearch-python", help="a python with usearch and numpy")
    parser.add_argument("--out", help="where to write engines.json (default: print only)")
    args = parser.parse_args()
    from mltagger.screen.scale_bench import parse_scale

    (size,) = parse_scale(args.size)
    folder = Path(tempfile.mkdtemp(prefix="screen-engines-"))
    result = {"setup": prepare(size, folder), "build": {}, "serve": []}
    result["setup"].update(m=M, ef_construction=EF_CONSTRUCTION, ef_search=EF_SEARCH, k=K)
    pythons = {"faiss": sys.executable, "usearch": args.usearch_python}
    for family, python in pythons.items():
        if python is None:
            print(f"{family}: skipped (no --usearch-python)", flush=True)
            continue
        out = subprocess.run(
            [python, __file__, "build", family, str(folder)],
            capture_output=True,
            text=True,
            check=True,
        )
        result["build"][family] = json.loads(out.stdout.splitlines()[-1])
        result["build"][family]["file_mib"] = os.path.getsize(folder / f"{family}.index") / 2**20
        print(family, result["build"][family], flush=True)
        for engine in (e for e in ENGINES if e.split("-")[0] == family):
            result["serve"] += run_engine(python, engine, folder, args.workers)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"files in {folder} (remove when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
