"""Loopback load test of the service with locust: requests/s, items/s, p50/p95/p99 latency and
failures per scenario, and items/s per number of server workers.

    make load-test [LOAD_ARGS="--workers 1,2,4 --users 4 --run-time 30"]

Unless --url names a running service, each worker count gets its own service (`mltagger serve`
with `workers=N`, the exported model by default, a fresh throw-away SQLite store and a generated
API key) on a 127.0.0.1 port, and the scenarios run one after another against it, each a headless
locust run of one user class of `locustfile.py`:

  exact       one client, one item per request, timed here to the microsecond (not locust)
  sequential  one user, one item per request (the latency with nothing queued)
  single      --users users, one item per request
  batched     --users users, --batch-size items per request
  store       --users users, POST /items (screen, tag, store; last, as it grows the store)

`--users 1,4,16` runs each concurrent scenario once per count; `--batching on,off` (the default)
starts each service twice, with micro-batching on and off (`batching.enabled`), so the gain is a
ratio from one run; the served model's raw items/s at batch N (no HTTP) is measured first, the
ceiling for N clients (`load_batching`).

Locust is a standard, scriptable load generator whose numbers others can reproduce and read
(CSV stats); it runs as a subprocess so its gevent patching never touches this process. Texts are
the shipped test items, cycled. Only 127.0.0.1 URLs are accepted. Results go to
runs/load_test/<time>/: summary.json, and per worker count the service log and locust's CSVs and
log per scenario.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from mltagger.benchmarks import load_stats
from mltagger.benchmarks.load_batching import (
    comparisons,
    exact_latency,
    format_comparisons,
    raw_throughput,
)
from mltagger.benchmarks.load_service import (
    Service,
    copy_store,
    free_port,
    last_line,
    port_is_free,
    prefill,
    wait_healthy,
)
from mltagger.core.config import compose_config
from mltagger.core.errors import DataError
from mltagger.core.paths import project_root, resolve_path
from mltagger.data.prepare import prepare_data
from mltagger.models.modelio import read_model_metadata
from mltagger.serving.service import prepare

REPO = project_root()
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class Scenario:
    """One locust run: which user class, and whether --users applies (else one user)."""

    user_class: str | None  # None: measured by this process (`exact_latency`)
    concurrent: bool
    batched: bool = False


SCENARIOS = {
    "exact": Scenario(None, concurrent=False),
    "sequential": Scenario("PredictOneUser", concurrent=False),
    "single": Scenario("PredictOneUser", concurrent=True),
    "batched": Scenario("PredictBatchUser", concurrent=True, batched=True),
    "store": Scenario("StoreItemUser", concurrent=True),
}


def parse_counts(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4]: distinct positive counts, in the order given."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: counts such as 1,2,4") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct counts of 1 or more")
    return counts


parse_workers = parse_counts


def parse_batching(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes or set(modes) - {"on", "off"} or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"{text!r}: on, off or on,off")
    return modes


def parse_scenarios(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: scenarios from {', '.join(SCENARIOS)}")
    return names


def load_texts(n: int) -> list[dict]:
    cfg = compose_config("train", [])
    items = prepare_data(cfg.data, cfg.paths.root_dir).splits["test"]
    return [{"title": it["title"], "description": it["description"]} for it in items][:n]


def run_locust(
    url: str, scenario: str, users: int, args: argparse.Namespace, folder: Path, env: dict
) -> dict:
    """One headless locust run of a scenario; its stats row read back from `<prefix>_stats.csv`."""
    spec = SCENARIOS[scenario]
    prefix = folder / scenario
    log = folder / f"{scenario}_locust.log"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "--run-time", f"{args.run_time}s",
        "--host", url, "--csv", str(prefix), "--only-summary", spec.user_class,
    ]  # fmt: skip
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                timeout=args.run_time + 120,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"locust ({scenario}) did not stop; log: {log}") from None
    csv = Path(f"{prefix}_stats.csv")
    # Locust exits 1 when some requests failed; that is a result, read from the CSV.
    if proc.returncode not in (0, 1) or not csv.is_file():
        raise RuntimeError(
            f"locust ({scenario}) failed with exit code {proc.returncode}: {last_line(log)} "
            f"(log: {log})"
        )
    batch = args.batch_size if spec.batched else 1
    return {"scenario": scenario, "users": users, **load_stats.read_stats(csv, batch)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", help="a running service on 127.0.0.1 (default: start one per worker count)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MLTAGGER_API_KEY"),
        help="with --url: the key for the store scenario (default $MLTAGGER_API_KEY); "
        "that scenario writes items into the service's store",
    )
    parser.add_argument("--model", default="models/export", help="model folder to serve")
    parser.add_argument("--port", type=int, help="port for the started service (default: free)")
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=[1],
        help="server worker counts, one service each, e.g. 1,2,4 (default 1)",
    )
    parser.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument(
        "--users", type=parse_counts, default=[4], help="concurrent locust users, e.g. 1,4,16"
    )
    parser.add_argument(
        "--batching",
        type=parse_batching,
        default=["on", "off"],
        help="micro-batching of the started services: on,off (default: both), on or off",
    )
    parser.add_argument("--run-time", type=int, default=30, help="seconds per scenario")
    parser.add_argument("--batch-size", type=int, default=32, help="items per batched request")
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
    parser.add_argument("--out", help="run folder (default runs/load_test/<time>)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every user mistake found before anything starts: one line, exit 2."""
    if args.run_time < 1 or args.batch_size < 1 or args.prefill < 0:
        parser.error("--run-time and --batch-size must be 1 or more, --prefill 0 or more")
    if args.url:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
            raise DataError("the load test only targets 127.0.0.1")
        if args.workers != [1] or args.prefill or args.serve or args.port:
            raise DataError(
                "--workers, --prefill, --serve and --port apply to a started service: drop --url"
            )
        args.batching = ["as running"]
        return
    if args.port is not None and not port_is_free(args.port):
        raise DataError(f"port {args.port} on 127.0.0.1 is busy: pick another --port or omit it")
    model = resolve_path(args.model, REPO)
    if not model.exists():
        raise DataError(f"no model at {model}: run `make export` first, or pass --model FOLDER")
    read_model_metadata(model)  # a folder that is not a model: its own one-line error
    for n in args.workers:
        try:
            compose_config("serve", serve_overrides(args, n, 8000, "sqlite://", "key"))
        except (ValueError, DataError) as err:  # a bad override, as either version words it
            if n > 1 and "workers" in str(err):
                raise DataError(
                    f"--workers {n}: conf/serve.yaml has no `workers` key in this checkout "
                    "(multi-process serving); use --workers 1"
                ) from None
            raise DataError(f"--serve: {str(err).splitlines()[0]}") from None


def serve_overrides(
    args: argparse.Namespace, workers: int, port: int, db_url: str, key: str, batching: str = "on"
) -> list[str]:
    # `workers` only when above 1, so a checkout whose serve config has no such key still runs
    # one worker. The user's --serve come last: Hydra keeps the last value of a key.
    return [
        f"model_dir={args.model}",
        f"port={port}",
        f"store.url={db_url}",
        f"api_key={key}",
        f"batching.enabled={'true' if batching == 'on' else 'false'}",
        *([f"workers={workers}"] if workers > 1 else []),
        *args.serve,
    ]


class LoadRun:
    """The run folder, the texts and the stores shared by every service of one run."""

    def __init__(self, args: argparse.Namespace, scenarios: list[str], key: str | None) -> None:
        self.args, self.scenarios, self.key = args, scenarios, key
        self.stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
        # absolute: locust runs in the scenario folder and writes its CSVs relative to it
        self.out = Path(args.out or resolve_path(f"runs/load_test/{self.stamp}")).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = tempfile.TemporaryDirectory()
        self.texts = Path(self.tmp.name) / "items.json"
        self.locust_env = {
            **os.environ,
            "MLTAGGER_LOAD_ITEMS": str(self.texts),
            "MLTAGGER_LOAD_BATCH": str(args.batch_size),
            "MLTAGGER_API_KEY": key or "",
        }
        self.raw: dict[int, float] = {}
        if not args.url:  # before any service runs: the model alone on the cores
            texts = [prepare(t["title"], t["description"])["text"] for t in load_texts(2000)]
            threads = compose_config("serve", args.serve).get("threads")
            self.raw = raw_throughput(resolve_path(args.model, REPO), texts, args.users, threads)
        self.template = None
        if args.prefill and not args.url:
            self.template = Path(self.tmp.name) / "prefill.db"
            t0 = time.perf_counter()
            prefill(self.template, args.prefill)
            print(f"prefilled {args.prefill} items in {time.perf_counter() - t0:.0f}s", flush=True)

    def measure(self, workers: int | None, batching: str) -> tuple[dict, list[dict]]:
        """Every scenario against one service: the one at --url (workers None), or a fresh one
        with this many workers and batching on or off, stopped afterwards. Returns (service
        info, result rows)."""
        args = self.args
        name = "url" if workers is None else f"workers-{workers}-batching-{batching}"
        folder = self.out / name
        folder.mkdir(exist_ok=True)
        service = None
        if workers is None:
            url = args.url.rstrip("/")
        else:
            port = args.port or free_port()
            db = Path(self.tmp.name) / f"store-{name}.db"
            copy_store(self.template, db)
            db_url = f"sqlite:///{db}"
            overrides = serve_overrides(args, workers, port, db_url, self.key or "", batching)
            service = Service(overrides, folder / "serve.log")
            url = f"http://127.0.0.1:{port}"
        try:
            if not self.texts.exists():  # read while the first service loads its model
                self.texts.write_text(json.dumps(load_texts(10_000)))
            proc, log = (service.proc, service.log) if service else (None, None)
            health = wait_healthy(url, 180 if service else 10, proc, log)
            stored = (health.get("store") or {}).get("items", "?")
            print(
                f"service: {health.get('model_version')} ({health.get('backend')}) on {url}, "
                f"{workers or '?'} worker(s), batching {batching}, {os.cpu_count()} cores, "
                f"{stored} stored items\n"
                f"{load_stats.HEADER}",
                flush=True,
            )
            rows = []
            for scenario in self.scenarios:
                for users in args.users if SCENARIOS[scenario].concurrent else [1]:
                    if SCENARIOS[scenario].user_class is None:
                        items = json.loads(self.texts.read_text())
                        stats = exact_latency(url, items, self.key)
                    else:
                        stats = run_locust(url, scenario, users, args, folder, self.locust_env)
                    rows.append({"workers": workers, "batching": batching, **stats})
                    print(load_stats.format_row(rows[-1]), flush=True)
            info = {"workers": workers, "batching": batching, "url": url, "health": health}
            return info, rows
        finally:
            if service is not None:
                service.stop()

    def summary(self, services: list[dict], rows: list[dict], argv: list[str]) -> dict:
        args = self.args
        return {
            "command": " ".join(["mltagger load-test", *argv]),
            "started": self.stamp,
            "cores": os.cpu_count(),
            "tool": "locust",
            "users": args.users,
            "run_time_s": args.run_time,
            "batch_size": args.batch_size,
            "prefill": args.prefill,
            "services": services,
            "results": rows,
            "items_per_s_vs_1_worker": load_stats.worker_ratios(rows),
            "raw_items_per_s": self.raw,
            "batching": comparisons(rows, self.raw),
        }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if importlib.util.find_spec("locust") is None:  # after the argument checks: those come first
        raise DataError('locust is not installed: pip install -e ".[load]" (make load-test does)')
    scenarios = list(args.scenarios)
    key = args.api_key if args.url else f"load-{secrets.token_hex(16)}"
    if args.url:
        wait_healthy(args.url.rstrip("/"), 10, None, None)  # before anything slow
        if not key and "store" in scenarios:
            scenarios.remove("store")
            print("note: no --api-key or MLTAGGER_API_KEY: the store scenario is skipped")
            if not scenarios:
                raise DataError("nothing to run: the store scenario needs --api-key with --url")

    run = LoadRun(args, scenarios, key)
    services, rows = [], []
    try:
        for workers in [None] if args.url else args.workers:
            for batching in args.batching:
                service, measured = run.measure(workers, batching)
                services.append(service)
                rows.extend(measured)
    except RuntimeError as err:  # locust itself failed: not a user mistake, but one line
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        run.tmp.cleanup()

    summary = run.summary(services, rows, argv)
    (run.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(load_stats.format_table(rows, summary["items_per_s_vs_1_worker"]))
    if summary["raw_items_per_s"]:
        print(format_comparisons(summary["batching"], summary["raw_items_per_s"]))
    print(f"written to {run.out}")
    bad = [r for r in rows if r["failures"] or not r["requests"]]
    for r in bad:
        print(
            f"error: {r['scenario']} ({r['workers'] or '?'} worker(s)): {r['failures']} failures "
            f"in {r['requests']} requests; see {run.out}",
            file=sys.stderr,
        )
    return 1 if bad else 0
