"""Coverage per package from coverage.py's JSON report: what `make test` prints at the end and
what docs/testing.md quotes.

    python scripts/coverage_table.py runs/coverage/coverage.json [--markdown]

Statements counted, not lines; a package's figure is all its modules' statements together.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def per_package(report: dict) -> dict[str, tuple[int, int]]:
    """{package: (statements, covered)} for mltagger's packages (`mltagger.serving`, ...);
    top-level modules (cli.py, __main__.py) count as `mltagger`."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, data in report["files"].items():
        parts = Path(path).parts
        inside = parts[parts.index("mltagger") + 1 :]
        package = "mltagger" if len(inside) == 1 else f"mltagger.{inside[0]}"
        summary = data["summary"]
        totals[package][0] += summary["num_statements"]
        totals[package][1] += summary["covered_lines"]
    return {k: (v[0], v[1]) for k, v in sorted(totals.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--markdown", action="store_true", help="a table for the docs")
    args = parser.parse_args()
    if not args.report.is_file():
        parser.error(f"{args.report}: no such coverage report (run make test first)")
    table = per_package(json.loads(args.report.read_text()))
    total = [sum(s for s, _ in table.values()), sum(c for _, c in table.values())]
    rows = [*table.items(), ("all", tuple(total))]
    if args.markdown:
        print("| package | statements | covered |\n|---|---:|---:|")
        for name, (n, c) in rows:
            print(f"| `{name}` | {n} | {100 * c / max(n, 1):.0f}% |")
    else:
        print(f"{'coverage by package':<28} {'stmts':>6} {'cover':>6}")
        for name, (n, c) in rows:
            print(f"{name:<28} {n:>6} {100 * c / max(n, 1):>5.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
