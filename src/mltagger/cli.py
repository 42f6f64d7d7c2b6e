"""`mltagger <job> [options or Hydra overrides]`: the one way to run every job.

The top of the layer stack: nothing imports this module. Every job is declared once, in the job
table (`mltagger.jobs.JOBS`: name, kind, config, check, target, help), and imported only when run,
so `mltagger validate` does not load torch and a job's import errors surface when that job runs.
Every subcommand turns user mistakes (bad file, bad rows, bad option, bad override) into one line
on stderr and a non-zero exit.

Over 400 lines because it holds the cli's own subcommands (`validate`, `predict`, `evaluate`,
`ingest`, ...): their options with the help text users read, and the few lines each runs; the
logic lives in the layers below.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from mltagger.core.config import compose_config, hydra_entry, load_data_config
from mltagger.core.errors import EXIT_INVALID, EXIT_USAGE, DataError, user_errors
from mltagger.core.paths import project_root, resolve_path
from mltagger.data.fresh import check_fresh
from mltagger.data.negatives import describe_negatives, negatives_report
from mltagger.data.pool import describe_pool, pool_report
from mltagger.data.prepare import prepare_data
from mltagger.data.validation import RawRow, load_items, validate_rows
from mltagger.jobs import COMMAND, HYDRA, JOBS, KIND_SUFFIX, OPTIONS, Job
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_hydra_job(job: Job, overrides: Sequence[str]) -> int:
    """Run a Hydra job as `mltagger <job> k=v ...` (Hydra's own flags such as --cfg work too)."""
    rest = list(overrides)
    given = {o.split("=", 1)[0].lstrip("+~") for o in rest}
    fixed = [f for f in job.fixed if f.split("=", 1)[0] not in given]
    sys.argv = [f"mltagger {job.name}", *fixed, *rest]

    def run(cfg):  # the job's module (torch and all) is imported once its config has passed
        return _load(job.target)(cfg)

    hydra_entry(job.config, run, check=_load(job.check))
    return 0


def run_options_job(job: Job, argv: Sequence[str]) -> int:
    """Hand everything after the job's name to its own parser (`--run`, `--n` ...)."""
    sys.argv = [f"mltagger {job.name}", *argv]  # so its --help says `mltagger <job>`
    with user_errors():
        return int(_load(job.target)(list(argv)) or 0)


def validate_options(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print every invalid row (row, id, field, problem) and a summary; exit 1 when any row "
        "is invalid."
    )
    p.add_argument("file", help="items file: .json (a list), .jsonl or .csv")
    p.add_argument(
        "--data-config",
        default="projects",
        help="data config whose approved tags apply (name in conf/data or a path)",
    )
    p.add_argument("--unlabeled", action="store_true", help="items to tag: only title is required")
    p.add_argument("--rejects", metavar="PATH", help="write invalid rows (with problems) as JSONL")
    p.add_argument("--max-problems", type=int, default=200, help="problems to print at most")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="a fresh evaluation set (data/eval/fresh.json): also kind, reference, 2023-2026 "
        "date, and no exact or near copy of any training source of --data-config",
    )
    p.add_argument(
        "--pool",
        action="store_true",
        help="a labelled stream pool (data/pool/stream.json): the fresh-set checks, its own "
        "fields (text_origin, rule, also), and no copy of a fresh-set item or of any training "
        "source, the package pool's names included",
    )
    p.add_argument(
        "--negatives",
        action="store_true",
        help="the in-scope gate's negatives (data/negatives/registry.json): each row `other`, "
        "with its source, stratum and reference, and no copy of a training, fresh-set or "
        "stream-pool item (the copied row named); exit 2 when any row is bad",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    data_cfg = load_data_config(args.data_config)
    if args.fresh:
        return validate_fresh(args.file, data_cfg)
    if args.pool:
        return validate_pool(args.file, data_cfg)
    if args.negatives:
        return validate_negatives(args.file, data_cfg)
    report = load_items(args.file, list(data_cfg.tags), labeled=not args.unlabeled)
    print(report.format(max_problems=args.max_problems))
    if args.rejects and report.rejected:
        path = report.write_rejects(args.rejects)
        print(f"rejected rows written to {path}")
    return 0 if report.ok else EXIT_INVALID


def validate_fresh(path: str, data_cfg) -> int:
    """A fresh evaluation set: the row checks, its own fields, and no overlap with any training
    source of the data config; every bad row listed, exit 1."""

    training = []
    for src in data_cfg.sources:
        src_path = resolve_path(src.path, project_root())
        report = load_items(src_path, list(data_cfg.tags), labeled=True)
        training.extend(report.items)
    near = data_cfg.near_duplicates
    fresh = check_fresh(
        path,
        list(data_cfg.tags),
        training,
        near_threshold=float(near.threshold),
        same_title_min_chars=int(near.same_title_min_chars),
    )
    print(fresh.format())
    return 0 if fresh.ok else EXIT_INVALID


def validate_pool(path: str, data_cfg) -> int:
    """A stream pool: every fresh-set check, its own fields, and no copy of the fresh set or of
    any training source (a copy is named with the row it copies); every bad row listed, exit 1."""
    report = pool_report(path, data_cfg, project_root())
    print(report.format())
    if report.ok:
        print("  " + describe_pool(report.items))
    return 0 if report.ok else EXIT_INVALID


def validate_negatives(path: str, data_cfg) -> int:
    """The gate's negatives: their own fields, and no copy of a training, fresh-set or pool
    item; one line per problem and exit 2 when bad, the counts per source and stratum when ok."""
    report = negatives_report(path, data_cfg, project_root())
    print(report.format())
    if report.ok:
        print("  " + describe_negatives(report.items))
    return 0 if report.ok else EXIT_USAGE


def predict_options(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Output per item: id, tag (always an approved tag; the fallback tag when confidence < "
        "threshold), confidence, needs_review, scores."
    )
    p.add_argument("--model", default="models/latest", help="model folder (default models/latest)")
    p.add_argument("--input", help="items file: .json, .jsonl or .csv (title required)")
    p.add_argument("--title", help="tag one item given on the command line")
    p.add_argument("--description", help="its description")
    p.add_argument("--output", help="write JSONL here (default: standard output)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="tag the valid rows and write invalid ones to --rejects",
    )
    p.add_argument(
        "--rejects", help="where invalid rows go with --skip-invalid (default rejects.jsonl)"
    )


def cmd_predict(args: argparse.Namespace) -> int:

    _, inference = read_model_metadata(args.model)  # fails fast on a wrong folder
    if args.input:
        report = load_items(args.input, inference.approved_tags, labeled=False)
    elif args.title is not None:
        row = {"title": args.title, "description": args.description or ""}
        report = validate_rows(
            [RawRow(1, row)], inference.approved_tags, labeled=False, source="--title"
        )
    else:
        raise DataError("give --input FILE, or --title (and --description)")
    if not report.ok:
        print(report.format(), file=sys.stderr)
        if not args.skip_invalid:
            print("fix these rows, or pass --skip-invalid to tag the valid ones", file=sys.stderr)
            return EXIT_INVALID
        rejects = Path(args.rejects or "rejects.jsonl")
        report.write_rejects(rejects)
        print(f"{len(report.rejected)} invalid rows written to {rejects}", file=sys.stderr)
    predictor = Predictor(args.model, batch_size=args.batch_size)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for record in predictor.predict_iter(report.items, progress=bool(args.output)):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
            print(f"{len(report.items)} predictions written to {args.output}", file=sys.stderr)
    return 0


def evaluate_options(p: argparse.ArgumentParser) -> None:
    p.description = "Writes val/ and test/ reports (metrics.json, report.md, plots) to --output."
    p.add_argument("--model", default="models/latest", help="model folder (default models/latest)")
    p.add_argument(
        "--threshold",
        choices=["model", "val"],
        default="model",
        help="apply the model folder's review threshold (default), or choose one on val",
    )
    p.add_argument("--output", help="report folder (default runs/evaluate/<time>)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data=with_other")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a model folder on a data config's val and test splits (full report)."""
    # Imported here, not at the top: `mltagger validate` should not wait for scikit-learn.
    from mltagger.evaluation.markdown import render_markdown, side_by_side
    from mltagger.evaluation.protocol import evaluate_val_test
    from mltagger.training.decision import evaluate_fresh

    labels, inference = read_model_metadata(args.model)
    cfg = compose_config("train", args.overrides)
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    unknown = sorted(
        {it["tag"] for s in data.splits.values() for it in s} - set(inference.approved_tags)
    )
    if unknown:
        raise DataError(f"the data has tags the model does not know as approved: {unknown}")
    out_dir = Path(
        args.output or Path(cfg.paths.log_dir) / "evaluate" / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    predictor = Predictor(args.model, batch_size=args.batch_size)
    probs = {
        s: predictor.predict_proba([it["text"] for it in data.splits[s]]) for s in ("val", "test")
    }
    threshold = None if args.threshold == "val" else inference.decision_threshold()
    title = f"{Path(args.model).resolve().name} on {cfg.data.name}"
    _, test_report, applied = evaluate_val_test(
        data,
        labels,
        probs["val"],
        probs["test"],
        cfg.eval,
        out_dir,
        title=title,
        threshold=threshold,
        out_of_scope=predictor.stopped_splits(data.splits["val"], data.splits["test"]),
    )
    print(render_markdown(test_report, f"{args.model} on {cfg.data.name} — test"))
    reports = {"test": test_report}
    if data.fresh:
        fresh_probs = predictor.predict_proba([it["text"] for it in data.fresh])
        reports["fresh"] = evaluate_fresh(
            data, labels, fresh_probs, cfg.eval, applied, out_dir, title,
            predictor.stopped(data.fresh),
        )  # fmt: skip
        print(render_markdown(reports["fresh"], f"{args.model} — fresh 2023–2026 set"))
    print(side_by_side(reports))
    origin = "chosen on val" if threshold is None else "from the model folder"
    shown = (
        ", ".join(f"{t} {v:.3f}" for t, v in applied.items())
        if isinstance(applied, dict)
        else f"{applied:.3f}"
    )
    print(f"threshold {shown} ({origin})")
    print(f"report folder: {out_dir}")
    return 0


def ingest_options(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Bad rows go to a rejects file (FILE.rejects.jsonl), none is lost; running it twice on "
        "one file adds nothing the second time. Config: conf/serve.yaml."
    )
    p.add_argument("file", help="the drop: .jsonl, .json or .csv with title (and description)")
    p.add_argument("--rejects", help="where invalid rows go (default FILE.rejects.jsonl)")
    p.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. store.url=... model=...")


def cmd_ingest(args: argparse.Namespace) -> int:
    """The hourly batch job: validate, screen duplicates, tag and store one drop file."""
    from mltagger.serving.ingest import format_summary, ingest_file
    from mltagger.serving.server import build_tagger

    cfg = compose_config("serve", args.overrides)
    path = Path(args.file)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    tagger = build_tagger(cfg)
    try:
        summary = ingest_file(
            tagger,
            path,
            rejects=args.rejects,
            chunk_size=int(cfg.ingest.chunk_size),
            progress=not args.quiet,
        )
    finally:
        tagger.store.close()
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def dataset_options(p: argparse.ArgumentParser) -> None:
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser(
        "build",
        help="write the next versioned training file with the store's human labels",
        description="data/feedback/v<N>.json (+ sha256, CHANGELOG.md line) and "
        "conf/data/feedback_v<N>.yaml = the base data + those items.",
    )
    p.add_argument("--data", default="with_other", help="base data config (default with_other)")
    p.add_argument(
        "--reviewed-only",
        action="store_true",
        help="only items a person tagged in review (leave out unreviewed wrong-tag reports)",
    )
    p.add_argument("--out-dir", help="folder of the versioned files (default data/feedback)")
    p.add_argument("--config-dir", help="where the data config goes (default conf/data)")
    p.add_argument("overrides", nargs="*", help="serve config overrides, e.g. store.url=...")


def cmd_dataset_build(args: argparse.Namespace) -> int:
    """Human labels from the store -> data/feedback/v<N>.json + conf/data/feedback_v<N>.yaml."""
    from mltagger.serving.dataset import build as build_feedback_dataset

    serve_cfg = compose_config("serve", args.overrides)
    data_cfg = load_data_config(args.data)
    out = build_feedback_dataset(
        str(serve_cfg.store.url),
        data_cfg,
        serve_cfg.paths.root_dir,
        out_dir=args.out_dir,
        config_dir=args.config_dir,
        reviewed_only=args.reviewed_only,
    )
    print(
        f"v{out['version']}: {out['rows']} human-labelled items {out['by_label_source']} -> "
        f"{out['file']} (sha256 {out['sha256'][:12]}…)\n"
        f"tags: {out['by_tag']}\nconfig: {out['config']}\nchangelog: {out['changelog']}"
    )
    if out["repeats_shipped"]:
        print(
            f"{len(out['repeats_shipped'])} items repeat shipped items and were left out "
            f"(the shipped label is kept): {out['repeats_shipped'][:5]}"
        )
    print(f'train on it: make train ARGS="data={out["data_name"]}"')
    return 0


def overrides_options(p: argparse.ArgumentParser) -> None:
    """Jobs whose only arguments are conf/serve.yaml overrides (serve, rollback)."""
    p.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. model_dir=models/latest port=8080"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from mltagger.serving.server import main as serve_main

    return serve_main(args.overrides)


def monitor_options(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Writes runs/monitor/<time>/monitor.{json,html} and the snapshot the service exports on "
        "/metrics. Config: conf/serve.yaml (store.url, model_dir)."
    )
    p.add_argument("--last", type=int, default=500, help="the last N model-tagged items")
    p.add_argument("--days", type=float, help="instead: the items of the last D days")
    p.add_argument("--batch", type=int, help="batch size of the timeline (default: per file)")
    p.add_argument("--output", help="report folder (default runs/monitor/<time>)")
    p.add_argument("--permutations", type=int, default=2000, help="MMD permutation test size")
    p.add_argument("--no-snapshot", action="store_true", help="do not update /metrics")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. store.url=...")


def cmd_monitor(args: argparse.Namespace) -> int:
    """Online precision, candidate disagreement and drift over a window of the store."""
    from mltagger.monitoring.monitor import run

    cfg = compose_config("serve", args.overrides)
    last = None if args.days else args.last
    return run(
        cfg,
        last_n=last,
        days=args.days,
        batch=args.batch,
        output=args.output,
        save=not args.no_snapshot,
        permutations=args.permutations,
    )


CYCLE_ACTIONS = ("run", "status", "pause", "resume", "veto", "force", "release")


def cycle_options(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One idempotent run of the continual-learning cycle (docs/cycle.md); config: the "
        "`cycle` section of conf/serve.yaml (store.url, model_dir)."
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="[ACTION] [OVERRIDE ...]",
        help=f"the action, one of {', '.join(CYCLE_ACTIONS)} (default run), then config overrides, "
        "e.g. store.url=... cycle.data=...",
    )
    p.add_argument(
        "--if-new-labels",
        type=int,
        metavar="N",
        help="start a new cycle only when N reviews came in since the last one",
    )
    p.add_argument("--by", help="admin actions: who (recorded)")
    p.add_argument("--why", help="admin actions: why (recorded)")
    p.add_argument("--batch", help="release: the quarantined batch, e.g. reviewer:ana@2026-12-01")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def cmd_cycle(args: argparse.Namespace) -> int:
    """The continual-learning cycle (mltagger.cycle.main), imported only when it runs."""
    from mltagger.cycle.main import cmd

    return cmd(args)


def profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="with_packages", help="data config: val and train splits")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model_dir=models/export")


def cmd_profile(args: argparse.Namespace) -> int:
    """(Re)build the reference profile of a model folder from a data config's splits."""
    from mltagger.evaluation.drift import build_profile

    cfg = compose_config("serve", args.overrides)
    folder = resolve_path(cfg.model_dir, cfg.paths.root_dir)
    data_cfg = load_data_config(args.data)
    data = prepare_data(data_cfg, cfg.paths.root_dir)
    profile = build_profile(
        Predictor(folder), data.splits["val"], [it["text"] for it in data.splits["train"]]
    )
    profile.save(folder)
    print(
        f"reference profile of {profile.model_version}: {len(profile.confidences)} val items, "
        f"{len(profile.vocabulary)} training words -> {folder}"
    )
    return 0


def _record(cfg, folder: str, action: str, by: str | None = None) -> None:
    """The switch, recorded in the store every worker and replica reads (its tag list applies
    what the switch changes, under the admin's name)."""
    import getpass

    from mltagger.serving.rollout import record_deployment
    from mltagger.serving.store import Store, describe

    store = Store(str(cfg.store.url))
    try:
        row = record_deployment(store.engine, folder, action, actor=by or getpass.getuser())
    finally:
        store.close()
    print(f"recorded in {describe(store.url)}: {row['model_version']} serves from now on")


def promote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidate", help="the model folder to serve from now on")
    p.add_argument("--by", help="who promotes (recorded in the tag list's history)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model_dir=models/export")


def cmd_promote(args: argparse.Namespace) -> int:
    from mltagger.serving.rollout import promote
    from mltagger.serving.store import Store
    from mltagger.serving.tag_list import TagList

    cfg = compose_config("serve", args.overrides)
    store = Store(str(cfg.store.url))
    try:  # the store's tag list judges the candidate before the link moves
        tags = TagList(store.engine)
        check = partial(tags.check, what=f"candidate {args.candidate}")
        done = promote(resolve_path(cfg.model_dir, cfg.paths.root_dir), args.candidate, check)
    finally:
        store.close()
    print(f"{done['link']} -> {done['to']} (was {done['from']}; `mltagger rollback` undoes it)")
    _record(cfg, done["to"], "promote", args.by)
    print("every running worker loads it within seconds; a restart reads the same record")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from mltagger.serving.rollout import rollback

    cfg = compose_config("serve", args.overrides)
    done = rollback(resolve_path(cfg.model_dir, cfg.paths.root_dir))
    print(f"{done['link']} -> {done['to']} (was {done['from']})")
    _record(cfg, done["to"], "rollback")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """`mltagger --help` from the job table; the cli's own subcommands declare their options."""
    parser = argparse.ArgumentParser(prog="mltagger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<job>")
    for job in JOBS.values():
        if job.kind != COMMAND:
            sub.add_parser(job.name, help=f"{job.help} {KIND_SUFFIX[job.kind]}", add_help=False)
            continue
        p = sub.add_parser(job.name, help=job.help)
        _load(job.options)(p)
        p.set_defaults(func=_load(job.target))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job = JOBS.get(argv[0]) if argv else None
    if job is not None and job.kind == HYDRA:
        return run_hydra_job(job, argv[1:])
    if job is not None and job.kind == OPTIONS:
        return run_options_job(job, argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Config overrides (key=value) may come after --flags too: `ingest FILE --json model_dir=X`.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with user_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
