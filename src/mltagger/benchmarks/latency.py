"""Latency and throughput of model folders on this machine (`make bench`).

For each model folder (torch or ONNX export): per-item latency p50/p95/p99 over real test-split
texts, one item per call after a warm-up, tokenisation and the decision rule included (what the
service pays per request); throughput at batch 32; weights size on disk. Every candidate runs in
the same process with the same threads, in 3 interleaved rounds whose median is reported, so the
ratios between them are the figures to read (each speed-up is the median of the per-round
ratios); absolute numbers move with the machine and its load. The export `models/export` points
at is marked shipped: the stakeholder report's latency card shows that one.

    mltagger bench                     # models/latest + the last export run
    mltagger bench --models A B --n 300 --output bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from mltagger.core.config import compose_config
from mltagger.core.paths import project_root
from mltagger.data.prepare import prepare_data
from mltagger.models.gate import GATE_FILE, TextGate
from mltagger.models.predict import Predictor, folder_weights_mb
from mltagger.models.timing import interleaved

ROOT = project_root()


def default_models() -> list[Path]:
    """models/latest (torch teacher) and every candidate of the export models/export belongs to."""
    found = []
    latest = ROOT / "models" / "latest"
    if latest.exists():
        found.append(latest)
    export = ROOT / "models" / "export"
    if export.exists():
        found += sorted(
            p for p in export.resolve().parent.iterdir() if (p / "model.onnx").is_file()
        )
    return found


def test_texts(n: int, data: str) -> list[str]:
    """n real texts from the test split of a data config (cycled when the split is smaller)."""

    cfg = compose_config("train", [f"data={data}"])
    prepared = prepare_data(cfg.data, cfg.paths.root_dir)
    items = prepared.splits["test"]
    texts = [it["text"] for it in items]
    return [texts[i % len(texts)] for i in range(n)]


def bench_models(
    folders: list[Path], texts: list[str], threads: int, repeats: int = 3, warmup: int = 20
) -> list[dict]:
    """Every model timed `repeats` times in interleaved rounds (`mltagger.models.timing`); each
    figure is the median of the rounds, and the rounds themselves are kept (`runs`)."""
    items = [{"id": i, "text": t} for i, t in enumerate(texts)]
    predictors = [Predictor(folder, batch_size=32, threads=threads) for folder in folders]
    calls = {str(k): p.predict for k, p in enumerate(predictors)}
    timed = interleaved(calls, items, repeats, warmup)
    return [
        {
            **bench_gate(folder, texts),
            "model": str(folder),
            "backend": predictor.backend,
            "n": len(items),
            "repeats": repeats,
            **timed[str(k)],
            "size_mb": folder_weights_mb(folder),
        }
        for k, (folder, predictor) in enumerate(zip(folders, predictors, strict=True))
    ]


def speedups(rows: list[dict], reference: int) -> list[float]:
    """Each model's p50 speed-up over the reference row: the median over the rounds of the
    per-round ratio (both timed in the same round, minutes apart at most)."""
    ref = rows[reference]["runs"]
    return [
        float(np.median([a["p50_ms"] / b["p50_ms"] for a, b in zip(ref, r["runs"], strict=True)]))
        for r in rows
    ]


def bench_gate(folder: Path, texts: list[str], calls: int = 1000, warmup: int = 20) -> dict:
    """The out-of-scope gate's own median over single-item calls (issue 32's target: <= 0.3 ms
    for 1,000 calls), when the folder ships one (gate.json); {} when it does not."""
    if not (folder / GATE_FILE).is_file():
        return {}
    gate = TextGate.load(folder)
    for text in texts[:warmup]:
        gate.in_scope([text])
    times = []
    for i in range(calls):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        gate.in_scope([text])
        times.append((time.perf_counter() - t0) * 1000)
    return {"gate_p50_ms": float(np.median(times)), "gate_calls": len(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", type=Path, help="model folders (default: see top)")
    parser.add_argument("--n", type=int, default=300, help="single-item calls per model (>= 300)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; figures are their median"
    )
    parser.add_argument("--data", default="with_other", help="data config whose test texts to use")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench" / "bench.json")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--n, --repeats and --threads must be 1 or more")
    models = args.models or default_models()
    missing = [m for m in models if not (m / "labels.json").is_file()]
    if not models or missing:
        detail = f" (not model folders: {missing})" if missing else ""
        print(
            f"error: no model folders to bench{detail}; "
            "run make train and make export first, or pass --models",
            file=sys.stderr,
        )
        return 2
    texts = test_texts(args.n, args.data)
    rows = bench_models(models, texts, args.threads, args.repeats)
    shipped = (ROOT / "models" / "export").resolve()
    for folder, row in zip(models, rows, strict=True):
        # models/latest -> "latest"; runs/<task>/<id>/model -> "<task>" (e.g. distill).
        row["name"] = folder.name if folder.name != "model" else folder.parent.parent.name
        row["shipped"] = folder.resolve() == shipped
    # the fp32 export the speed-ups are read against: the teacher's (what shipped before
    # quantised exports could), else any fp32 export, else the first model
    names = [r["name"] for r in rows]
    fp32s = [k for k, n in enumerate(names) if n.endswith("-fp32")]
    fp32 = names.index("teacher-fp32") if "teacher-fp32" in names else (fp32s or [0])[0]
    for row, vs_first, vs_fp32 in zip(rows, speedups(rows, 0), speedups(rows, fp32), strict=True):
        row["speedup_p50_vs_first"], row["speedup_p50_vs_fp32"] = vs_first, vs_fp32
    print(
        f"\n{args.n} single-item calls per model after warm-up, {args.threads} threads; "
        f"median of {args.repeats} interleaved rounds\n"
    )
    print(
        "| model | backend | size (MB) | p50 ms | p95 ms | p99 ms | items/s at batch 32 "
        f"| p50 speed-up vs {rows[0]['name']} | vs {rows[fp32]['name']} | gate p50 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gate = f"{r['gate_p50_ms']:.3f}" if "gate_p50_ms" in r else "no gate.json"
        name = f"**{r['name']}** (shipped)" if r["shipped"] else r["name"]
        print(
            f"| {name} | {r['backend']} | {r['size_mb']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_batch32_per_s']:.0f} | "
            f"{r['speedup_p50_vs_first']:.2f}× | {r['speedup_p50_vs_fp32']:.2f}× | {gate} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"threads": args.threads, "n": args.n, "repeats": args.repeats, "results": rows},
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    return 0
