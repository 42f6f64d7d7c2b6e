"""`make mutation`: mutmut over the functions where a silent bug costs most, then the score.

Which functions, and why: docs/testing.md. The run uses the fast unit tests named in
pyproject.toml ([tool.mutmut]); results are kept in mutants/ (git-ignored). Survivors that
docs/testing.md lists as equivalent (no test can tell them from the original) are shown apart;
every other survivor is a missing test.

    python scripts/mutation.py              # run every mutant in scope (~10 min on 2 cores)
    python scripts/mutation.py --survivors  # retest the last run's survivors (after new tests)
    python scripts/mutation.py --report     # report the last run only
    python scripts/mutation.py --min-score 85   # exit 1 below this share of mutants killed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> functions (methods as Class.method). The decision rule and its metrics, the data
# checks and split, the duplicate screen, the store's state changes, the service's auth and bounds.
SCOPE = {
    "models.rule": ["apply_threshold"],
    "evaluation.metrics": ["wilson_interval", "_per_class", "coverage_curve"],
    "evaluation.thresholds": ["choose_precision_threshold"],
    "models.predict": ["BasePredictor.probabilities", "BasePredictor.decide"],
    "data.validation": ["verify_checksum"],
    "data.duplicates": ["dedup_key", "exact_duplicates", "remove_exact_duplicates", "content_hash"],
    "data.split": ["fold_rare_tags", "stratified_group_split", "split_sources_in_order"],
    "screen.screening": ["screen_batch", "url_key"],
    "screen.fitting": ["precision_recall", "choose_floor", "choose_screen_threshold"],
    "screen.pairs": ["pair_features", "candidates", "best", "PairModel.from_dict"],
    "serving.store": [
        "Store.add_items",
        "Store.ids_by_hash",
        "Store.review_queue",
        "Store.add_feedback",
        "Store.review",
        "Store.ids_by_url",
        "Store.list_items",
    ],
    "serving.access": [
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
    "serving.api.per_app": ["_swapped", "bound"],
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


def results() -> dict[str, str]:
    """Mutant name -> status, for the mutants in SCOPE that mutmut has run."""
    from mutmut.stats import status_by_exit_code

    wanted = {mangled(m, f) for m, fs in SCOPE.items() for f in fs}
    out = {}
    for meta in (ROOT / "mutants" / "src" / "mltagger").glob("*.py.meta"):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        for name, code in codes.items():
            if name.rsplit("__mutmut_", 1)[0] in wanted and code is not None:
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


def report(min_score: float, show_diffs: bool = True) -> int:
    res = results()
    if not res:
        print("no mutation results yet: run `make mutation` first", file=sys.stderr)
        return 2
    eq = equivalents()
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in res.items():
        by_module[name.split(".")[1]][status] += 1
    print(
        f"{'module':10s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'other':>6s}"
        f" {'score':>7s}"
    )
    total = Counter()
    for module, c in sorted(by_module.items()):
        n = sum(c.values())
        other = n - c["killed"] - c["survived"]
        total.update(c)
        print(
            f"{module:10s} {n:8d} {c['killed']:7d} {c['survived']:9d} {other:6d} "
            f"{100 * c['killed'] / n:6.1f}%"
        )
    n = sum(total.values())
    score = 100 * total["killed"] / n
    print(
        f"{'all':10s} {n:8d} {total['killed']:7d} {total['survived']:9d} "
        f"{n - total['killed'] - total['survived']:6d} {score:6.1f}%"
    )
    survivors = sorted(k for k, s in res.items() if s != "killed")
    known = [s for s in survivors if s in eq]
    missing = [s for s in survivors if s not in eq]
    print(
        f"\nmutation score {score:.1f}% ({total['killed']} of {n} killed); "
        f"{len(known)} survivors documented as equivalent in docs/testing.md, "
        f"{len(missing)} not"
    )
    for s in missing:
        print(f"  SURVIVED {s} ({res[s]})")
        if show_diffs:
            print(diff(s))
    stale = sorted(set(eq) - set(survivors))
    if stale:
        print(
            f"\n{len(stale)} mutants listed as equivalent are now killed or gone: "
            + ", ".join(stale[:10])
        )
    if score < min_score:
        print(f"\nbelow the target: {score:.1f}% < {min_score:.1f}%", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="report the last run, run nothing")
    ap.add_argument("--min-score", type=float, default=85.0, help="target share killed, in %%")
    ap.add_argument("--no-diffs", action="store_true", help="survivor names only")
    ap.add_argument(
        "--survivors",
        action="store_true",
        help="retest only the last run's survivors (after adding tests; after changing the code "
        "in scope, run everything again)",
    )
    args = ap.parse_args(argv)
    if importlib.util.find_spec("mutmut") is None:
        print(
            "mutmut is not installed: `make mutation` installs it "
            "(or pip install -e '.[mutation]')",
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
        proc = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", *names],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        print(proc.stdout, end="")
        if proc.returncode not in (0, 1):
            print(f"mutmut run failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        if "Failed to collect list of tests" in proc.stdout:
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
