"""The `mltagger` console command. Subcommands print a clear message and exit non-zero on user
mistakes (bad file, bad rows, bad option) instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from mltagger.data import DataError, load_items
from mltagger.paths import conf_dir

EXIT_INVALID = 1  # the input has bad rows
EXIT_USAGE = 2  # the command could not run (missing file, bad option, bad config)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""
    try:
        yield
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def load_data_config(name_or_path: str):
    """A data config by name (conf/data/NAME.yaml) or by path, without Hydra."""
    path = Path(name_or_path)
    if not path.suffix:
        path = conf_dir() / "data" / f"{name_or_path}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))
        raise DataError(
            f"data config {name_or_path!r} not found (choose from {choices} or give a .yaml path)"
        )
    return OmegaConf.load(path)


def cmd_validate(args: argparse.Namespace) -> int:
    data_cfg = load_data_config(args.data_config)
    report = load_items(args.file, list(data_cfg.tags), labeled=not args.unlabeled)
    print(report.format(max_problems=args.max_problems))
    if args.rejects and report.rejected:
        path = report.write_rejects(args.rejects)
        print(f"rejected rows written to {path}")
    return 0 if report.ok else EXIT_INVALID


def cmd_baselines(args: argparse.Namespace) -> int:
    from mltagger import baselines

    sys.argv = ["mltagger baselines", *args.overrides]
    baselines.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltagger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "validate",
        help="check a JSON/JSONL/CSV file of items and report bad rows",
        description="Print every invalid row (row, id, field, problem) and a "
        "summary; exit 1 when any row is invalid.",
    )
    p.add_argument("file", help="items file: .json (a list), .jsonl or .csv")
    p.add_argument(
        "--data-config",
        default="projects",
        help="data config whose approved tags apply (name in conf/data or a path)",
    )
    p.add_argument(
        "--unlabeled",
        action="store_true",
        help="items to tag: only title is required; tag is optional",
    )
    p.add_argument("--rejects", metavar="PATH", help="write invalid rows (with problems) as JSONL")
    p.add_argument("--max-problems", type=int, default=200, help="problems to print at most")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "baselines",
        help="fit and evaluate the rule and TF-IDF baselines",
        description="Same as `python -m mltagger.baselines`; takes Hydra overrides.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. eval.precision_target=0.9")
    p.set_defaults(func=cmd_baselines)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
