"""The duplicate screen, measured at store scale: false duplicates of genuinely new items, recall
on true copies, and what screening costs next to tagging.

    make dedup-eval [DEDUP_ARGS="--write --sizes 1000 10000 100000 --out runs/dedup_eval"]

Benchmark (`mltagger.data.dedup_bench`): two stores (`all`: any package summary; `ml`: ML-vocabulary
ones) grown to 1k / 10k / 100k items, >= 900 genuinely new queries, ~2,000 true copies of stored
items (edited kinds and real relistings). Every query and copy is in split `a` or `b`.

1. The screen (`mltagger.models.screen`) finds each item's candidates in the FAISS index at each
   store size and computes the pair features.
2. The pair model (logistic regression) is fitted on split `a` at the largest size (positives:
   edited copies against their original; negatives: genuinely new queries against their
   candidates), and the threshold is the lowest at which split `a`'s false-duplicate rate is at
   most --max-fdr in every store.
3. Split `b` reports it: false-duplicate rate per store and size, recall per kind of copy
   (pooled over the edited kinds too), curves over the threshold (plot), and the queries called
   duplicates, for a person to read.
4. Cost: the whole screen per item (features, sketch, FAISS search, rescoring) at the largest
   store, alone and in batches of 32, measured in the same run as the classifier's own forward
   pass (--model).

With --scale (e.g. `DEDUP_ARGS="--scale 10k,100k,1M --registry DIR"`) only the index-at-scale
benchmark runs instead (`mltagger.benchmarks.screen_scale`: latency, memory, build time and recall
against exact search at 10k-1M stored items).

--write stores the fitted model and its figures in data/dedup/screen.json, which the service
reads. Queries a person found to be real copies (data/dedup/adjudicated.json) leave the
false-duplicate count and are listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mltagger.benchmarks.screen_scale import (
    DEFAULT_CACHE,
    median_ms_per_item,
    parse_scale,
    run_scale,
)
from mltagger.core.config import compose_config
from mltagger.core.errors import DataError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.data.copies import build_eval_pairs
from mltagger.data.dedup_bench import STORE_SIZES, load_bench
from mltagger.data.duplicates import content_hash
from mltagger.data.links import url_key
from mltagger.data.prepare import prepare_data
from mltagger.data.text import item_text
from mltagger.evaluation.dedup import (
    ScreenBench,
    choose_floor,
    choose_screen_threshold,
    fit_pair_model,
    pair_figures,
    query_key,
    screen_rates,
)
from mltagger.models.predict import Predictor
from mltagger.models.screen import (
    CALIBRATION_FILE,
    EF_CONSTRUCTION,
    EF_SEARCH,
    EXACT_MAX,
    FEATURES,
    HNSW_M,
    STORAGE,
    PairModel,
)
from mltagger.serving.dedup import fill_store
from mltagger.serving.store import Store


def measure_cost(sb: ScreenBench, model: PairModel, predictor, repeats: int) -> list[dict]:
    """Median ms per item of the screen and of the classifier's forward pass, alone and in
    batches of 32, on the same queries, with the largest store in the index."""

    queries = sb.bench.queries
    rng = np.random.default_rng(0)
    picks = [queries[i] for i in rng.choice(len(queries), 32 * repeats, replace=False)]
    for q in picks:
        q["text"] = item_text(q["title"], q["description"])
    lookup = store_lookup_ms(sb.items[: len(sb.index)], picks, repeats)
    rows = []
    for batch in (1, 32):
        chunks = [picks[i : i + batch] for i in range(0, len(picks), batch)]
        sb.screen_items(chunks[0], model)  # warm up
        screen_ms = median_ms_per_item(lambda c: sb.screen_items(c, model), chunks)
        entry = {
            "batch": batch,
            "stored": len(sb.index),
            "screen_ms_per_item": screen_ms + lookup[batch],
            "of_which_store_lookups_ms_per_item": lookup[batch],
        }
        if predictor is not None:
            predictor.encode([q["text"] for q in chunks[0]])
            entry["classifier_ms_per_item"] = median_ms_per_item(
                lambda c: predictor.encode([q["text"] for q in c]), chunks
            )
            entry["screen_share_of_classifier"] = (
                entry["screen_ms_per_item"] / entry["classifier_ms_per_item"]
            )
        rows.append(entry)
    return rows


def store_lookup_ms(stored: list[dict], picks: list[dict], repeats: int) -> dict[int, float]:
    """Median ms per item of the exact stage's store query (content hash or link key,
    `Store.ids_by_hash_or_url`), on a SQLite store holding the same items (what the service
    runs next to the screen)."""

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/lookup.db")
        fill_store(store, stored)

        def lookup(c: list[dict]) -> None:
            store.ids_by_hash_or_url(
                [content_hash(q["title"], q["description"] or "") for q in c],
                [url_key(q.get("url")) for q in c],
            )

        for batch in (1, 32):
            chunks = [picks[i : i + batch] for i in range(0, len(picks), batch)]
            lookup(chunks[0])
            out[batch] = median_ms_per_item(lookup, chunks)
        store.close()
    return out


def dump_review(benches: dict, model: PairModel, size: int, path: Path) -> None:

    seen: dict[str, dict] = {}
    for name, sb in benches.items():
        rows = sb.rows[size]
        for q, cands, exact in zip(
            sb.bench.queries, rows["queries"], rows["query_exact"], strict=True
        ):
            kept = [c for c in cands if c.sketch_similarity >= model.floor]
            probs = model.probability(np.stack([c.features for c in kept])) if kept else []
            if exact is not None:
                top, p = exact, 1.0
            elif len(probs) and probs.max() >= 0.3:
                top, p = kept[int(np.argmax(probs))].item_id, float(probs.max())
            else:
                continue
            key = query_key(q)
            if key not in seen or seen[key]["probability"] < p:
                m = sb.items[top]
                seen[key] = {
                    "query": key,
                    "store": name,
                    "probability": round(p, 4),
                    "split": q["split"],
                    "query_text": f"{q['title']} :: {q['description']}",
                    "match_text": f"{m['title']} :: {m['description']}",
                }
    path.write_text(json.dumps(sorted(seen.values(), key=lambda d: -d["probability"]), indent=1))
    print(f"{len(seen)} queries to adjudicate written to {path}")


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    thr = np.array(results["curve"]["thresholds"])
    for name, curve in results["curve"]["false_duplicate_rate"].items():
        axes[0].plot(thr, 100 * np.array(curve), label=f"store {name}")
    axes[0].axhline(0.5, color="grey", ls=":", label="target 0.5%")
    axes[0].axvline(results["threshold"], color="k", ls="--", label="chosen on split a")
    axes[0].set(
        xlabel="duplicate score threshold",
        ylabel="% of genuinely new items called duplicates",
        title="false duplicates (split b, 100k stores)",
    )
    axes[0].legend(fontsize=8)
    for kind, curve in results["curve"]["recall"].items():
        if kind.startswith("ml: "):  # the harder store; the other's curves lie on top of these
            axes[1].plot(thr, curve, label=kind[4:], lw=2.5 if "pooled" in kind else 1.2)
    axes[1].axhline(0.95, color="grey", ls=":", label="target 0.95")
    axes[1].axvline(results["threshold"], color="k", ls="--")
    axes[1].set(
        xlabel="duplicate score threshold",
        ylabel="recall",
        title="true copies caught, by kind (split b, ML store, 100k)",
    )
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _main_scale(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        sizes = parse_scale(args.scale)
    except ValueError as e:
        parser.error(str(e))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or resolve_path(f"runs/dedup_eval/{stamp}"))
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "ef_search": args.ef_search,
        "exact_max": args.exact_max,
        "storage": args.storage,
    }
    if max(sizes) > max(STORE_SIZES) and not args.registry:
        parser.error(
            f"--scale beyond {max(STORE_SIZES)} items needs --registry DIR (the registry package "
            "lists that fill the store)"
        )
    try:  # only the user's data errors become one line; anything else is a bug and says so
        run_scale(
            sizes,
            args.registry,
            args.cache,
            out,
            args.ef_sweep,
            args.repeats,
            settings,
            crossover_run=not args.no_crossover,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nscale results and plot: {out}/scale.json, {out}/scale.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(STORE_SIZES))
    parser.add_argument("--stores", nargs="*", default=["all", "ml"], choices=["all", "ml"])
    parser.add_argument(
        "--max-fdr",
        type=float,
        default=0.005,
        help="false-duplicate rate allowed on split a when choosing",
    )
    parser.add_argument(
        "--model",
        default="models/export",
        help="classifier whose forward pass the screen's cost is compared with ('none' to skip)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--features",
        nargs="*",
        default=[],
        help="fit the pair model on these features only (an ablation; default all of them)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"store the fitted screen and its figures in {CALIBRATION_FILE}",
    )
    parser.add_argument(
        "--dump-review",
        metavar="FILE",
        help="write every query (both splits) whose best probability reaches 0.3 in any store, "
        "with its best match, for a person to adjudicate (data/dedup/adjudicated.json)",
    )
    parser.add_argument("--out", default=None, help="run folder (default runs/dedup_eval/<time>)")
    scale = parser.add_argument_group(
        "index at scale (mltagger.benchmarks.screen_scale; only this runs when --scale is given)"
    )
    scale.add_argument(
        "--scale",
        metavar="SIZES",
        help="measure the index at these store sizes instead, e.g. 10k,100k,1M: latency, "
        "memory, build time, recall against exact search -> scale.json, scale.png",
    )
    scale.add_argument(
        "--registry",
        metavar="DIR",
        help="folder of the registry package lists (pypi.tsv, npm.tsv, nuget.tsv) that fill "
        "stores beyond 100k, e.g. /work/.library/env/packages (not shipped with the repo)",
    )
    scale.add_argument(
        "--cache", metavar="DIR", help=f"the scale store and its sketches (default {DEFAULT_CACHE})"
    )
    scale.add_argument(
        "--ef-sweep",
        type=int,
        nargs="*",
        default=[16, 32, 64, 128],
        help="efSearch values whose recall and search time are measured on each built graph",
    )
    scale.add_argument("--hnsw-m", type=int, default=HNSW_M)
    scale.add_argument("--ef-construction", type=int, default=EF_CONSTRUCTION)
    scale.add_argument(
        "--ef-search",
        type=int,
        default=EF_SEARCH,
        help="default: by store size (EF_SEARCH_BY_SIZE)",
    )
    scale.add_argument("--exact-max", type=int, default=EXACT_MAX)
    scale.add_argument("--storage", choices=["float32", "float16"], default=STORAGE)
    scale.add_argument(
        "--no-crossover", action="store_true", help="skip the exact-vs-HNSW timing at 1k-50k"
    )
    args = parser.parse_args(argv)
    if args.scale:
        return _main_scale(args, parser)

    if set(args.features) - set(FEATURES):
        parser.error(f"--features: choose from {', '.join(FEATURES)}")
    if not args.sizes or not all(1 <= n <= max(STORE_SIZES) for n in args.sizes):
        parser.error(f"--sizes: one or more store sizes from 1 to {max(STORE_SIZES)}")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or resolve_path(f"runs/dedup_eval/{stamp}"))
    out.mkdir(parents=True, exist_ok=True)
    with user_errors():
        bench = load_bench()
        predictor = None
        if args.model != "none":
            predictor = Predictor(args.model)
    print(
        f"benchmark: {len(bench.queries)} genuinely new queries, {len(bench.copies)} true copies, "
        f"stores {', '.join(args.stores)} at {args.sizes}",
        flush=True,
    )
    benches = {name: ScreenBench(bench, name) for name in args.stores}
    for sb in benches.values():
        sb.run(args.sizes)
    largest = max(args.sizes)
    at_largest = [(sb.rows[largest], sb.bench) for sb in benches.values()]
    floor = choose_floor(at_largest, split="a")
    model = fit_pair_model(at_largest, split="a", floor=floor, features=args.features)
    threshold = choose_screen_threshold(model, at_largest, args.max_fdr)
    model = PairModel(model.weights, model.bias, threshold, model.k, model.floor)
    results = screen_rates(benches, model, args.sizes)
    results["max_fdr_on_a"] = args.max_fdr
    weights = dict(zip(results["features"], np.round(model.weights, 2).tolist(), strict=True))
    print(
        f"\npair model weights: {weights}, "
        f"bias {model.bias:.2f}; candidate floor {floor:.2f}; threshold {threshold:.4f} (split a)"
    )
    print("\n| store | stored items | false-duplicate rate (b) | queries | adjudicated copies |")
    print("|---|---:|---:|---:|---:|")
    for r in results["false_duplicates"]:
        print(
            f"| {r['store']} | {r['stored']} | {r['rate']:.4f} ({r['flagged']}) | "
            f"{r['queries']} | {r['adjudicated_copies']} |"
        )
    print("\n| store | kind | copies (b) | recall |\n|---|---|---:|---:|")
    for r in results["recall"]:
        if r["stored"] == largest:
            print(f"| {r['store']} | {r['kind']} | {r['copies']} | {r['recall']:.3f} |")
    print("\nnew items called duplicates (split b, largest store):")
    for f in results["flagged_examples"]:
        print(
            f"  {f['probability']:.3f} [{f['store']}] {f['query'][:70]!r}\n"
            f"        ~ {f['match'][:70]!r}"
        )
    with user_errors():
        cfg = compose_config("train", ["data=with_other"])
        test_items = prepare_data(cfg.data, cfg.paths.root_dir).splits["test"]
    results["pairs"] = pair_figures(build_eval_pairs(test_items, seed=1), model)
    pf = results["pairs"]
    print(
        f"\npairs from the shipped test split (the figures before issue 16): precision "
        f"{pf['precision']:.3f} recall {pf['recall']:.3f} (tp {pf['tp']}, fp {pf['fp']}, "
        f"fn {pf['fn']}); called duplicate by kind: "
        + ", ".join(
            f"{k} {v['called_duplicate']:.2f} ({v['pairs']})" for k, v in pf["by_kind"].items()
        )
    )
    if args.dump_review:
        dump_review(benches, model, largest, Path(args.dump_review))
    sb = benches[args.stores[-1]]
    results["cost"] = measure_cost(sb, model, predictor, args.repeats)
    print(
        "\n| stored | batch | screen ms/item | of which store lookups | classifier ms/item "
        "| screen / classifier |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for c in results["cost"]:
        print(
            f"| {c['stored']} | {c['batch']} | {c['screen_ms_per_item']:.3f} | "
            f"{c['of_which_store_lookups_ms_per_item']:.3f} | "
            f"{c.get('classifier_ms_per_item', float('nan')):.2f} | "
            f"{c.get('screen_share_of_classifier', float('nan')):.3f} |"
        )
    plot_curves(results, out / "curves.png")
    results["model"] = model.to_dict()
    results["benchmark"] = bench.info
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults and curves: {out}")
    if args.write and args.features:
        print("not written: an ablation (--features) is not the shipped screen")
    elif args.write:
        path = resolve_path(CALIBRATION_FILE)
        path.write_text(json.dumps({**results, "written": stamp}, indent=1) + "\n")
        print(f"written to {path}")
    return 0
