"""Latency and throughput of model folders on this machine (`make bench`).

For each model folder (torch or ONNX export): per-item latency p50/p95/p99 over real test-split
texts, one item per call after a warm-up, tokenisation and the decision rule included (what the
service pays per request); throughput at batch 32; weights size on disk. Every candidate runs in
the same process with the same threads, so the ratios between them are the figures to read;
absolute numbers move with the machine and its load.

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


def bench_one(folder: Path, texts: list[str], threads: int, warmup: int = 20) -> dict:

    predictor = Predictor(folder, batch_size=32, threads=threads)
    items = [{"id": i, "text": t} for i, t in enumerate(texts)]
    for it in items[:warmup]:
        predictor.predict([it])
    times = []
    for it in items:
        t0 = time.perf_counter()
        predictor.predict([it])
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for start in range(0, len(items), 32):
        predictor.predict(items[start : start + 32])
    batch_s = time.perf_counter() - t0
    ms = np.array(times)
    gate = bench_gate(folder, texts)
    return {
        **gate,
        "model": str(folder),
        "backend": predictor.backend,
        "n": len(items),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_batch32_per_s": len(items) / batch_s,
        "size_mb": folder_weights_mb(folder),
    }


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
    parser.add_argument("--data", default="with_other", help="data config whose test texts to use")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench" / "bench.json")
    args = parser.parse_args(argv)
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
    rows = []
    for folder in models:
        row = bench_one(folder, texts, args.threads)
        # models/latest -> "latest"; runs/<task>/<id>/model -> "<task>" (e.g. distill).
        row["name"] = folder.name if folder.name != "model" else folder.parent.parent.name
        rows.append(row)
        print(f"{row['name']}: p99 {row['p99_ms']:.2f} ms", file=sys.stderr)
    base = rows[0]["p50_ms"]
    print(f"\n{args.n} single-item calls per model after warm-up, {args.threads} threads\n")
    print(
        "| model | backend | size (MB) | p50 ms | p95 ms | p99 ms | items/s at batch 32 "
        f"| speed-up vs {rows[0]['name']} (p50) | gate p50 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gate = f"{r['gate_p50_ms']:.3f}" if "gate_p50_ms" in r else "no gate.json"
        print(
            f"| {r['name']} | {r['backend']} | {r['size_mb']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_batch32_per_s']:.0f} | "
            f"{base / r['p50_ms']:.1f}× | {gate} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"threads": args.threads, "n": args.n, "results": rows}, indent=1) + "\n"
    )
    print(f"\nwrote {args.output}")
    return 0
