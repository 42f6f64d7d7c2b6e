"""`make mutation`: mutmut over the functions where a silent bug costs most, then the score.

Which functions, and why: docs/testing.md. The run uses the fast unit tests named in
pyproject.toml ([tool.mutmut]); results are kept in mutants/ (git-ignored). Survivors that
docs/testing.md lists as equivalent (no test can tell them from the original) are shown apart;
every other survivor is a missing test. The score is printed per module, per package and overall,
twice: over every mutant (an equivalent counts as not killed; the target applies to this one) and
without the listed equivalents.

A mutant that makes a test hang fails that test after 30 s (pytest-timeout, [tool.mutmut]) and
counts as killed; the run goes on with the rest of its module. A mutant in scope that was never
run (an interrupted run) is counted as not killed and named, never left out.

    python scripts/mutation.py              # run every mutant in scope (~25 min on 2 cores)
    python scripts/mutation.py --survivors  # retest the last run's survivors (after new tests)
    python scripts/mutation.py --report     # report the last run only
    python scripts/mutation.py --min-score 90   # exit 1 below this share of mutants killed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> functions (methods as Class.method). The decision rule and its metrics, the data
# checks and split, the duplicate screen (the `mltagger.screen` package: link keys, sketches,
# candidates, pair model, calibration), the store's state changes, and the service's endpoints
# (the router handlers of `mltagger.serving.api`), its auth (`serving.access`) and bounds.
SCOPE = {
    "models.rule": ["apply_threshold"],
    "models.queue": [
        "margin",
        "tag_weights",
        "uncertainty",
        "_diverse",
        "order",
        "_with_random_share",
        "stopping_point",
    ],
    "evaluation.metrics": ["wilson_interval", "_per_class", "coverage_curve"],
    "evaluation.thresholds": ["choose_precision_threshold"],
    "models.predict": ["BasePredictor.probabilities", "BasePredictor.decide"],
    "data.validation": ["verify_checksum"],
    "data.duplicates": ["dedup_key", "exact_duplicates", "remove_exact_duplicates", "content_hash"],
    "data.split": [
        "fold_rare_tags",
        "group_units",
        "stratified_group_split",
        "split_sources_in_order",
    ],
    "screen.screening": ["screen_batch", "url_key", "Duplicate.to_dict"],
    "screen.sketch": [
        "_grams4",
        "normalised",
        "profile",
        "LazyProfiles.__getitem__",
        "sketch_counts",
        "_to_unit",
        "unit_sketches",
        "sketch",
    ],
    "screen.pairs": [
        "_cosine",
        "pair_features",
        "PairModel.probability",
        "PairModel.from_dict",
        "load_model",
        "candidates",
        "best",
    ],
    "screen.fitting": [
        "precision_recall",
        "_scores",
        "choose_floor",
        "choose_screen_threshold",
    ],
    "serving.store": [
        "Store.add_items",
        "Store._first_ids",
        "Store.ids_by_hash",
        "Store.ids_by_hash_or_url",
        "Store.review_queue",
        "Store.add_feedback",
        "Store.review",
        "Store.ids_by_url",
        "Store.list_items",
    ],
    "serving.access": [
        "Shared.__post_init__",
        "Shared.identify",
        "Shared.limit",
        "needs",
        "caller",
        "public",
        "sees_all",
    ],
    "serving.api.items": ["check_items", "answer", "predict", "add_item", "list_items", "get_item"],
    "serving.api.feedback": ["add_feedback"],
    "serving.api.review": ["review_queue", "review"],
    "serving.api.operations": ["health", "prometheus", "snapshot_age"],
    "serving.api.per_app": ["app_models", "_swapped", "_endpoint_for", "bound"],
    "serving.limits": ["BodyLimit.__call__", "BodyLimit._reject"],
    "serving.service": ["prepare"],
}


def mangled(module: str, function: str) -> str:
    """mutmut's key of a function: x_name, or xǁClassǁmethod for a method."""
    if "." in function:
        cls, meth = function.split(".", 1)
        return f"mltagger.{module}.xǁ{cls}ǁ{meth}"
    return f"mltagger.{module}.x_{function}"


def patterns() -> list[str]:
    return [f"{mangled(m, f)}__mutmut_*" for m, fs in SCOPE.items() for f in fs]


def equivalents(path: Path = ROOT / "docs" / "testing.md") -> dict[str, str]:
    """Mutant name -> reason, from the table rows `| mltagger.… | reason |` of the doc."""
    out = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = re.match(r"\|\s*`?(mltagger\.[^|`]+__mutmut_\d+)`?\s*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def module_of() -> dict[str, str]:
    """mutmut's key of each function in SCOPE -> its module (a key of SCOPE)."""
    return {mangled(m, f): m for m, fs in SCOPE.items() for f in fs}


def results() -> dict[str, str]:
    """Mutant name -> status, for every mutant in SCOPE that mutmut has made (run or not:
    `not checked` is a mutant an interrupted run never reached)."""
    from mutmut.stats import status_by_exit_code

    wanted = module_of()
    out = {}
    # rglob: the modules of subpackages (screen/, serving/api/) have their meta files below
    for meta in (ROOT / "mutants" / "src" / "mltagger").rglob("*.py.meta"):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        for name, code in codes.items():
            if name.rsplit("__mutmut_", 1)[0] in wanted:
                status = status_by_exit_code[code]
                # A mutant that makes the tests hang is caught, as mutmut counts it.
                out[name] = "killed" if status in ("killed", "timeout") else status
    return out


def diff(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln[:2] in ("- ", "+ ")]
    return "\n".join(f"      {ln.strip()[:120]}" for ln in lines[:4])


def scores(c: Counter) -> tuple[int, int, int, float, float]:
    """(mutants, killed, equivalents, score, score without the equivalents) of a `table` count:
    `equivalent` counts survivors a second time, so it is not a mutant of its own."""
    n, killed, eq = sum(c.values()) - c["equivalent"], c["killed"], c["equivalent"]
    return (
        n,
        killed,
        eq,
        100 * killed / n if n else 100.0,
        100 * killed / (n - eq) if n - eq else 100.0,
    )


def _row(label: str, c: Counter) -> str:
    n, killed, eq, score, without = scores(c)
    survived = c["survived"]
    other = n - killed - survived
    return (
        f"{label:24s} {n:7d} {killed:7d} {survived:8d} {eq:6d} {other:6d} "
        f"{score:7.1f}% {without:7.1f}%"
    )


def table(res: dict[str, str], eq: dict[str, str]) -> tuple[str, Counter]:
    """The score per module, per package and overall; `equivalent` counts the survivors the doc
    lists (they stay in `survived` and in the mutants)."""
    where = module_of()
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in res.items():
        c = by_module[where[name.rsplit("__mutmut_", 1)[0]]]
        c[status] += 1
        c["equivalent"] += status == "survived" and name in eq
    lines = [
        f"{'module':24s} {'mutants':>7s} {'killed':>7s} {'survived':>8s} {'equiv':>6s} "
        f"{'other':>6s} {'score':>8s} {'w/o eq':>8s}"
    ]
    total: Counter = Counter()
    for package in sorted({m.split(".")[0] for m in by_module}):
        sub: Counter = Counter()
        for module in sorted(m for m in by_module if m.split(".")[0] == package):
            lines.append(_row(f"  {module}", by_module[module]))
            sub.update(by_module[module])
        lines.append(_row(package, sub))
        total.update(sub)
    lines.append(_row("all", total))
    return "\n".join(lines), total


def report(min_score: float, show_diffs: bool = True) -> int:
    res = results()
    if not res:
        print("no mutation results yet: run `make mutation` first", file=sys.stderr)
        return 2
    eq = equivalents()
    text, total = table(res, eq)
    print(text)
    n, killed, n_eq, score, without = scores(total)
    survivors = sorted(k for k, s in res.items() if s != "killed")
    known = [s for s in survivors if s in eq and res[s] == "survived"]
    missing = [s for s in survivors if s not in known]
    print(
        f"\nmutation score {score:.1f}% ({killed} of {n} killed; the equivalents count as not "
        f"killed); without the {n_eq} equivalents listed in docs/testing.md: {without:.1f}% "
        f"({killed} of {n - n_eq}); {len(missing)} other mutants not killed"
    )
    never = [s for s in survivors if res[s] == "not checked"]
    if never:
        print(
            f"\n{len(never)} mutants in scope were never run (an interrupted run?): counted as "
            "not killed above; run `make mutation` again to finish them",
            file=sys.stderr,
        )
    for s in missing:
        print(f"  {res[s].upper()} {s}")
        if show_diffs and res[s] != "not checked":
            print(diff(s))
    stale = sorted(set(eq) - set(known))
    if stale:
        print(
            f"\n{len(stale)} mutants listed as equivalent are now killed or gone: "
            + ", ".join(stale[:10])
        )
    if score < min_score:
        print(f"\nbelow the target: {score:.1f}% < {min_score:.1f}%", file=sys.stderr)
        return 1
    return 0


@contextmanager
def one_postgres() -> Iterator[dict[str, str]]:
    """The environment of the run, with one throw-away PostgreSQL for all of it (tests/pg.py):
    without it every mutant's process would start its own (seconds each) and a stopped one
    would leave its server running. Nothing to start where the tests skip PostgreSQL (no
    binaries) or name a server already (MLTAGGER_TEST_PG_URL)."""
    sys.path.insert(0, str(ROOT))
    from tests import pg

    env = dict(os.environ)
    if env.get(pg.PG_ENV) or pg.binaries() is None:
        yield env
        return
    with pg.server() as url:
        yield {**env, pg.PG_ENV: url}


def run_mutmut(names: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`mutmut run NAMES`, its progress shown as it comes; (exit code, its output)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mutmut", "run", *names],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen = bytearray()
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read1(4096):
            seen += chunk
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        if proc.poll() is None:  # we were stopped: stop mutmut as Ctrl-C does (it keeps results)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return proc.wait(), seen.decode(errors="replace")


def _stopped(signum: int, _frame) -> None:
    """SIGTERM ends the run as Ctrl-C does: mutmut stops and keeps what it measured, and the
    PostgreSQL started for the run is stopped (a bare SIGTERM would leave both running)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="report the last run, run nothing")
    ap.add_argument(
        "--min-score",
        type=float,
        default=90.0,
        help="target share of all mutants killed (the equivalents count as not killed), in %%",
    )
    ap.add_argument("--no-diffs", action="store_true", help="survivor names only")
    ap.add_argument(
        "--survivors",
        action="store_true",
        help="retest only the last run's survivors (after adding tests; after changing the code "
        "in scope, run everything again)",
    )
    args = ap.parse_args(argv)
    missing = [m for m in ("mutmut", "pytest_timeout") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"{' and '.join(missing)} not installed: pip install -e '.[mutation]'",
            file=sys.stderr,
        )
        return 2
    if not args.report:
        names = patterns()
        if args.survivors:
            names = sorted(k for k, status in results().items() if status != "killed")
            if not names:
                print("no survivors to retest")
                return report(args.min_score, show_diffs=not args.no_diffs)
        start = time.monotonic()
        signal.signal(signal.SIGTERM, _stopped)
        with one_postgres() as env:
            code, output = run_mutmut(names, env)
        print(f"\nmutmut run: {(time.monotonic() - start) / 60:.1f} min")
        if code not in (0, 1):
            print(f"mutmut run failed (exit {code})", file=sys.stderr)
            return code
        if "Failed to collect list of tests" in output:
            # mutmut then keeps its old results: a score from them would measure nothing
            print(
                "mutmut could not collect the tests (above); no score. A stale mutants/ is the "
                "usual cause: rm -rf mutants and run again",
                file=sys.stderr,
            )
            return 2
    return report(args.min_score, show_diffs=not args.no_diffs)


if __name__ == "__main__":
    raise SystemExit(main())
