"""Loopback load test of POST /predict: throughput, p50/p99 latency and errors.

    make load-test [LOAD_ARGS="--single 10000 --batched 400 --batch-size 32"]

Starts the service (`mltagger serve`, the exported model by default, a throw-away
SQLite store) on a free 127.0.0.1 port unless --url is given, waits for /health, then sends the
single-item requests and the batched requests from --concurrency client threads (keep-alive
connections), bounded by a request count and --max-seconds each. Texts are the shipped test
items, cycled. Only 127.0.0.1 URLs are accepted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mltagger.core.config import compose_config
from mltagger.core.paths import project_root
from mltagger.data.dedup_bench import load_bench
from mltagger.data.prepare import prepare_data
from mltagger.serving.dedup import fill_store
from mltagger.serving.store import Store

REPO = project_root()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(host: str, port: int, timeout: float, proc=None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the service on {host}:{port} did not answer /health in {timeout:.0f}s")


def load_texts(n: int) -> list[dict]:

    cfg = compose_config("train", [])
    items = prepare_data(cfg.data, cfg.paths.root_dir).splits["test"]
    return [{"title": it["title"], "description": it["description"]} for it in items][:n]


def prefill(db_url: str, size: int) -> None:
    """`size` stored items (the duplicate benchmark's ML store: real, distinct items) with
    their screen sketches, so the service's duplicate search runs over a store of that size."""

    items = load_bench().stores["ml"][:size]
    store = Store(db_url)
    fill_store(store, items)
    store.close()


def run_phase(host, port, items, *, requests, batch, concurrency, max_seconds) -> dict:
    """Send `requests` POST /predict of `batch` items each; latency per request."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.perf_counter() < deadline:
            with lock:
                k = next(counter, None)
            if k is None:
                break
            body = json.dumps(
                {"items": [items[(k * batch + j) % len(items)] for j in range(batch)]}
            )
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and len(json.loads(data)["items"]) == batch
            except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                ok, data = False, str(err).encode()
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if not ok:
                    errors.append(data[:200].decode(errors="replace"))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "batch": batch,
        "items": len(latencies) * batch,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "items_per_s": len(latencies) * batch / wall,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
        "completed": len(latencies) == requests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service on 127.0.0.1 (default: start one)")
    parser.add_argument("--model", default="models/export", help="model folder to serve")
    parser.add_argument(
        "--sequential", type=int, default=300, help="single-item requests from one client first"
    )
    parser.add_argument("--single", type=int, default=10000, help="single-item requests")
    parser.add_argument("--batched", type=int, default=400, help="batched requests")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=240, help="per phase")
    parser.add_argument(
        "--prefill", type=int, default=0, help="store this many items first (duplicate search cost)"
    )
    parser.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the started service, repeatable (e.g. --serve "
        "candidate=models/export --serve rollout=shadow: what shadow mode costs)",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    proc = None
    tmp = tempfile.TemporaryDirectory()
    if args.url:
        url = urlparse(args.url)
        if url.hostname not in ("127.0.0.1", "localhost"):
            print("error: the load test only targets 127.0.0.1", file=sys.stderr)
            return 2
        host, port = "127.0.0.1", url.port or 80
    else:
        host, port = "127.0.0.1", free_port()
        if args.prefill:
            t0 = time.perf_counter()
            prefill(f"sqlite:///{tmp.name}/load.db", args.prefill)
            print(f"prefilled {args.prefill} items in {time.perf_counter() - t0:.0f}s", flush=True)
        log = open(Path(tmp.name) / "serve.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mltagger",
                "serve",
                f"model_dir={args.model}",
                f"port={port}",
                f"store.url=sqlite:///{tmp.name}/load.db",
                "api_key=load-test",
                *args.serve,
            ],
            cwd=REPO,
            env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            health = wait_healthy(host, port, 120, proc)
        except (RuntimeError, TimeoutError) as err:
            if proc is not None:
                log.close()
                print((Path(tmp.name) / "serve.log").read_text()[-3000:], file=sys.stderr)
            print(f"error: {err}", file=sys.stderr)
            return 2
        items = load_texts(10_000)
        print(
            f"service: {health['model_version']} ({health['backend']}) on {host}:{port}, "
            f"{os.cpu_count()} cores, {args.concurrency} client threads, "
            f"{health['duplicate_screen']['indexed_items']} stored items",
            flush=True,
        )
        results = {}
        for name, requests, batch, clients in (
            ("sequential", args.sequential, 1, 1),  # latency of one request, nothing queued
            ("single", args.single, 1, args.concurrency),
            ("batched", args.batched, args.batch_size, args.concurrency),
        ):
            if requests <= 0:
                continue
            r = run_phase(
                host,
                port,
                items,
                requests=requests,
                batch=batch,
                concurrency=clients,
                max_seconds=args.max_seconds,
            )
            results[name] = r
            print(
                f"{name:>10}: {r['requests']} requests x {batch} items in {r['seconds']:.1f}s: "
                f"{r['requests_per_s']:.0f} req/s, {r['items_per_s']:.0f} items/s, "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}"
                + ("" if r["completed"] else " (stopped at --max-seconds)"),
                flush=True,
            )
            for e in r["first_errors"]:
                print(f"          error: {e}")
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
        failed = any(r["errors"] for r in results.values())
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp.cleanup()
