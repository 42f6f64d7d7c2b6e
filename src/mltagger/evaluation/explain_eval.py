"""`mltagger explain-eval`: how faithful the service's explanations are, and what they cost.

On the test split of a data config (the default recipe's, as `mltagger evaluate` reads it):
- occlusion on the shipped export (`models.explain`), each ranking scored on the export itself;
- integrated gradients on the torch model the export came from (`models.integrated`), each
  ranking scored on that torch model;
for both, AOPC at k = 1..5 against 10 random draws of k words, and sufficiency
(`evaluation.faithfulness`). Then the latency of one item's occlusion with the export, as the
service runs it (one batch per item, `--threads` intra-op threads, no spinning), after a
warm-up, over every test item, in `--rounds` rounds (figures: the median of the rounds).
Writes metrics.json, items.json (each item's top words) and report.md to runs/explain/<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mltagger.core.config import compose_config
from mltagger.core.errors import user_errors
from mltagger.core.paths import project_root
from mltagger.core.runinfo import write_run_info
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.faithfulness import DRAWS, KS, faithfulness, summarise
from mltagger.models.explain import find_words, occlusion, rank, visible_chars
from mltagger.models.integrated import STEPS, ig_words
from mltagger.models.predict import OnnxPredictor, Predictor, TorchPredictor

TARGET_SHARE = 0.9
TARGET_P50_MS = 20.0


def explain_item(predictor, text: str):
    """One item's occlusion as the service computes it (the words the model sees)."""
    inference = predictor.inference
    words = find_words(text, visible_chars(predictor.tokenizer, text, inference.max_length))
    return occlusion(predictor.predict_proba, words)


def occlusion_rows(predictor, texts: list[str], seed: int) -> tuple[list, list]:
    """Each item's occlusion on `predictor` and its AOPC scored on the same predictor."""
    rows, tops = [], []
    for i, text in enumerate(texts):
        exp = explain_item(predictor, text)
        rng = np.random.default_rng([seed, i])
        rows.append(faithfulness(predictor.predict_proba, exp.words, exp.order, exp.target, rng))
        tops.append({"tag": predictor.labels[exp.target], "words": exp.top(5)})
    return rows, tops


def ig_rows(predictor: TorchPredictor, texts: list[str], seed: int, steps: int):
    """Each item's integrated gradients on the torch model, AOPC scored on that model; and the
    completeness gaps (|sum of attributions - logit difference|, all tokens)."""
    rows, tops, gaps = [], [], []
    max_length = predictor.inference.max_length
    for i, text in enumerate(texts):
        words = find_words(text, visible_chars(predictor.tokenizer, text, max_length))
        target, scores, gap = ig_words(
            predictor.model, predictor.tokenizer, words, max_length, steps=steps
        )
        order = rank(scores)
        rng = np.random.default_rng([seed, i])
        rows.append(faithfulness(predictor.predict_proba, words, order, target, rng))
        tops.append([(words.names[j], float(scores[j])) for j in order[:5]])
        gaps.append(gap)
    return rows, tops, gaps


def time_occlusion(predictor, texts: list[str], rounds: int, warmup: int = 20) -> dict:
    """p50/p95 ms of one item's explanation (word finding + one batch), median of the rounds."""
    for text in texts[:warmup]:
        explain_item(predictor, text)
    runs = []
    for _ in range(rounds):
        ms = []
        for text in texts:
            t0 = time.perf_counter()
            explain_item(predictor, text)
            ms.append((time.perf_counter() - t0) * 1000)
        runs.append(
            {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
        )
    return {k: float(np.median([r[k] for r in runs])) for k in ("p50_ms", "p95_ms")} | {
        "rounds": runs,
        "items": len(texts),
    }


def report(metrics: dict, command: str) -> str:
    """The run's report.md: the figures against the issue's targets."""
    occ, ig, lat = metrics["occlusion"], metrics.get("integrated_gradients"), metrics["latency"]
    lines = [
        "# Why this tag: faithfulness and cost of the explanations",
        "",
        f"`{command}` — {occ['items']} test items of `{metrics['data']}`; k = "
        f"{metrics['ks']}, {metrics['draws']} random draws per k (seed {metrics['seed']}).",
        "",
        "| method | model scored | beats random (AOPC) | ... items of 2+ words | mean AOPC | "
        "random AOPC | sufficiency | random sufficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    methods = [("occlusion", occ, metrics["model"])]
    methods.append(("integrated gradients", ig, metrics.get("torch_model")))
    for name, m, model in methods:
        if m is None:
            continue
        lines.append(
            f"| {name} | {model} | {m['beats_random_share']:.3f} | "
            f"{m['beats_random_share_2plus_words']:.3f} | {m['aopc']:.4f} | "
            f"{m['random_aopc']:.4f} | {m['sufficiency']:.4f} | {m['random_sufficiency']:.4f} |"
        )
    lines += [
        "",
        f"Occlusion latency per item ({metrics['model']}, {metrics['threads']} threads, one batch "
        f"per item, {lat['items']} items, median of {len(lat['rounds'])} rounds): "
        f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms (1/5/15-minute load average "
        f"{lat['load_average_before']} before, {lat['load_average_after']} after).",
        "",
        f"Targets: beats random on ≥ {TARGET_SHARE:.0%} of test items — occlusion "
        f"{'met' if occ['beats_random_share'] >= TARGET_SHARE else 'MISSED'}"
        + (
            ", integrated gradients "
            + ("met" if ig["beats_random_share"] >= TARGET_SHARE else "MISSED")
            if ig
            else ""
        )
        + f"; p50 ≤ {TARGET_P50_MS:.0f} ms — "
        f"{'met' if lat['p50_ms'] <= TARGET_P50_MS else 'MISSED'}.",
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mltagger explain-eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/export"), help="the export explained")
    p.add_argument(
        "--torch-model",
        type=Path,
        default=Path("models/latest"),
        help="the torch model for integrated gradients",
    )
    p.add_argument("--no-ig", action="store_true", help="skip integrated gradients")
    p.add_argument("--data", default="with_pool", help="data config whose test split to use")
    p.add_argument("--limit", type=int, default=None, help="the first N test items only")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="latency rounds (median)")
    p.add_argument("--steps", type=int, default=STEPS, help="integration steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="run folder (default runs/explain/<time>)")
    args = p.parse_args(argv)
    if min(args.threads, args.rounds, args.steps) < 1 or (
        args.limit is not None and args.limit < 1
    ):
        p.error("--threads, --rounds, --steps and --limit must be 1 or more")
    for folder in [args.model] + ([] if args.no_ig else [args.torch_model]):
        if not (folder / "labels.json").is_file():
            p.error(
                f"{folder} is not a model folder (no labels.json); run make train / make export"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.command = " ".join(
        ["mltagger explain-eval", *(argv if argv is not None else sys.argv[1:])]
    )
    with user_errors():
        return run(args)


def run(args: argparse.Namespace) -> int:
    cfg = compose_config("train", [f"data={args.data}"])
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    texts = [it["text"] for it in data.splits["test"]][: args.limit]
    root = Path(cfg.paths.root_dir or project_root())
    out = args.output or root / "runs" / "explain" / time.strftime("%Y-%m-%d_%H-%M-%S")
    load = [round(x, 2) for x in os.getloadavg()]
    export = Predictor(args.model, threads=args.threads, spinning=False)
    if not isinstance(export, OnnxPredictor):
        print(f"note: {args.model} is not an ONNX export; timing its torch model", file=sys.stderr)
    occ_rows, occ_tops = occlusion_rows(export, texts, args.seed)
    metrics: dict = {
        "data": args.data,
        "data_sha256": data.data_sha256,
        "model": str(args.model),
        "model_version": export.inference.model_version,
        "ks": list(KS),
        "draws": DRAWS,
        "seed": args.seed,
        "threads": args.threads,
        "load_average": load,
        "occlusion": summarise(occ_rows),
    }
    items = [{"occlusion": t} for t in occ_tops]
    if not args.no_ig:
        torch_model = TorchPredictor(args.torch_model, threads=args.threads)
        ig, ig_tops, gaps = ig_rows(torch_model, texts, args.seed, args.steps)
        metrics["torch_model"] = str(args.torch_model)
        metrics["integrated_gradients"] = summarise(ig) | {
            "steps": args.steps,
            "completeness_gap_median": float(np.median(gaps)),
        }
        for row, top in zip(items, ig_tops, strict=True):
            row["integrated_gradients"] = top
    before = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: say how busy
    metrics["latency"] = time_occlusion(export, texts, args.rounds) | {
        "load_average_before": before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    recorded = OmegaConf.create({"data": OmegaConf.to_container(cfg.data), "explain": options})
    write_run_info(out, recorded, {"data_sha256": data.data_sha256}, {"job": "explain-eval"})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "items.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(report(metrics, args.command))
    print((out / "report.md").read_text())
    print(f"run folder: {out}")
    return 0
