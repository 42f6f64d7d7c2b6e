"""The job table: every `mltagger` job declared once (name, kind, config, check, target, help).

`mltagger --help` and its dispatch (`mltagger.cli`), the job targets of the Makefile (`make help`
lists them) and the table in docs/commands.md are all read from `JOBS`, so adding a job is one
entry here beside its own module (docs/commands.md shows a worked example).

This module imports nothing but the standard library and no other `mltagger` module, so the
Makefile can read it with any Python 3 before `.venv` exists:

    python3 src/mltagger/jobs.py --make        # the job targets as Make rules (Makefile includes)
    python3 src/mltagger/jobs.py --markdown    # the jobs table of docs/commands.md
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

HYDRA = "hydra"  # takes Hydra overrides (`key=value`); composed from conf/<config>.yaml
OPTIONS = "options"  # parses its own options: target(argv) gets everything after the job name
COMMAND = "command"  # a subcommand of `mltagger` itself: its options are declared in the cli


@dataclass(frozen=True)
class Job:
    """One job. `target` is "module:function": for HYDRA it takes the composed config (what it
    returns goes back to Hydra, which the sweep reads), for OPTIONS the argument list, for
    COMMAND the parsed namespace (and `options` "module:function(parser)" declares its options).

    `check` is the one place the job's config is checked ("module:function(cfg)"): the cli runs
    it on the composed config before the job's module is even imported, so a bad value is one
    line and exit 2 in about a second (serve runs it in `mltagger.serving.server`, which composes
    the config itself). `fixed` are overrides put before the command line's, each dropped when the
    command line sets the same key.

    `make` is the argument list of the job's Make target in Make syntax (`make <name>` runs
    `mltagger <name> <make>`); None: no Make target. `needs` is a Make variable without which the
    target stops with its one-line usage (`usage`), `setup` a line run before the job, `after` the
    command a fresh clone runs first (shown in the docs; the job itself says so when it is
    missing), `doc` the longer text of docs/commands.md (help when empty).
    """

    name: str
    kind: str
    target: str
    help: str
    config: str | None = None
    check: str | None = None
    fixed: tuple[str, ...] = ()
    options: str | None = None
    make: str | None = "$(ARGS)"
    needs: str | None = None
    usage: str = ""
    setup: str = ""
    after: str = ""
    doc: str = ""


TRAIN_RULES = "mltagger.training.config_rules"
JOBS_LIST: tuple[Job, ...] = (
    Job("train", HYDRA, "mltagger.training.loop:run",
        "fine-tune an encoder, evaluate it, write runs/train/<id>/model and models/latest",
        config="train", check=f"{TRAIN_RULES}:check_train_config",
        doc="fine-tune, evaluate on val, test and the fresh 2023–2026 set, write the run folder "
        "and `models/latest` ([training](training.md))"),
    Job("cv", HYDRA, "mltagger.training.cv:run_cv",
        "k-fold CV over train+val of any config: mean ± std, out-of-fold predictions -> runs/cv",
        config="cv", check=f"{TRAIN_RULES}:check_cv_config",
        doc="k-fold cross-validation of any config over train + val: mean ± std, out-of-fold "
        "predictions, per-tag thresholds; `cv.score_heldout=true` (the default) also scores test "
        "and the fresh set with the fold models ([evaluation](evaluation.md))"),
    Job("distill", HYDRA, "mltagger.training.loop:run",
        "distil models/latest into a 3-layer student (experiment=distill_minilm_l3)",
        config="train", check=f"{TRAIN_RULES}:check_train_config",
        fixed=("experiment=distill_minilm_l3",), after="make train",
        doc="3-layer student distilled from `models/latest` (`mltagger train` with "
        "`experiment=distill_minilm_l3`) ([export](export.md))"),
    Job("sweep", HYDRA, "mltagger.training.sweep:main",
        "Optuna search (default hparams_search=minilm_optuna); writes conf/experiment/best_*.yaml",
        config="train", check=f"{TRAIN_RULES}:check_sweep_config",
        fixed=("hparams_search=minilm_optuna",),
        doc="Optuna study over the training loop → `conf/experiment/best_<study>.yaml` "
        '(`ARGS="hparams_search=minilm_quick"`: a small study on a CPU)'),
    Job("export", HYDRA, "mltagger.export.candidates:main",
        "ONNX fp32/int8 candidates of models/latest, parity, one table -> models/export",
        config="export", check="mltagger.export.config_rules:check_export_config",
        after="make train",
        doc="ONNX fp32/int8 of teacher (and student), parity, comparison → `models/export` "
        "([export](export.md))"),
    Job("label-issues", HYDRA, "mltagger.training.label_issues:main",
        "find likely wrong labels in weak data (data=with_other) -> data/corrections/",
        config="train", check=f"{TRAIN_RULES}:check_label_issues_config",
        fixed=("data=with_other", "task_name=label_issues", "logger=none"),
        doc="find likely wrong weak labels (cleanlab on out-of-fold probabilities, "
        "`data.label_noise.oof` or TF-IDF) → `data/corrections/*.json` ([data](data.md))"),
    Job("baselines", HYDRA, "mltagger.training.baselines:run",
        "fit and evaluate the rule and TF-IDF baselines; prints per-tag tables",
        config="baselines", check=f"{TRAIN_RULES}:check_baselines_config",
        doc="rule tagger and TF-IDF + logistic regression through the full evaluation; prints a "
        "tag × precision/recall/F1 table for each"),
    Job("secondary", OPTIONS, "mltagger.training.secondary_job:main",
        "secondary-tag head of models/latest, chosen on the pool's folds; fresh-set figures",
        after="make train",
        doc="secondary tags (issue 35): which scorer and which thresholds, chosen on the stream "
        "pool's folds, written as `secondary.json` into the model folder(s); then the fresh "
        "set's figures once → `runs/secondary/<id>` ([evaluation](evaluation.md#secondary-tags))"),
    Job("teacher", OPTIONS, "mltagger.training.teacher:main",
        "teacher soft labels for train+val -> data/teacher/", make="$(TEACHER_ARGS)",
        after="make install-mpnet",
        doc='a teacher\'s soft labels for every train + val item → `data/teacher/` (`TEACHER_ARGS='
        '"--teacher ensemble --oof …"`)'),
    Job("data-external", OPTIONS, "mltagger.data.external:main",
        "rebuild data/external.json from data/external/raw (conf/external/mapping.yaml)",
        make="$(EXTERNAL_ARGS)",
        doc="rebuild `data/external.json` from the curated lists in `data/external/raw/` by "
        "`conf/external/mapping.yaml`; a missing or changed raw file: which one, exit 1"),
    Job("data-packages", OPTIONS, "mltagger.data.package_pool:main",
        "rebuild data/packages.json (PyPI 2023-26 packages, keyword votes)",
        make="$(PACKAGES_ARGS)",
        doc="rebuild `data/packages.json` (2023–26 PyPI packages, keyword votes) from the shipped "
        'registry rows, or `PACKAGES_ARGS="--registry …/pypi.tsv"`'),
    Job("data-dedup", OPTIONS, "mltagger.screen.bench_data:main",
        "rebuild data/dedup/registry.tsv.gz (the duplicate benchmark's stores and queries)",
        make="$(DEDUP_DATA_ARGS)",
        doc="rebuild the duplicate benchmark's registry rows (`data/dedup/`) from the env "
        'registry list (`DEDUP_DATA_ARGS="--registry …/pypi.tsv"`)'),
    Job("predict", COMMAND, "mltagger.cli:cmd_predict",
        "tag items with a model folder (one JSON line per item)",
        options="mltagger.cli:predict_options",
        make="$(if $(MODEL),--model $(MODEL)) --input $(INPUT) $(if $(OUTPUT),--output $(OUTPUT))",
        needs="INPUT",
        usage="usage: make predict INPUT=items.{json,jsonl,csv} [MODEL=models/latest] "
        "[OUTPUT=preds.jsonl]", after="make train",
        doc="tag a JSON/JSONL/CSV file with `models/latest` (or `MODEL=…`); `--title`/"
        "`--description` tag one item"),
    Job("evaluate", COMMAND, "mltagger.cli:cmd_evaluate",
        "evaluate a model folder on a data config (per tag, per slice, out-of-scope)",
        options="mltagger.cli:evaluate_options", make=None,
        doc="re-run the full evaluation of any model folder (torch or ONNX) on any data config "
        "([evaluation](evaluation.md))"),
    Job("validate", COMMAND, "mltagger.cli:cmd_validate",
        "check a JSON/JSONL/CSV file of items and report bad rows",
        options="mltagger.cli:validate_options",
        make="$(FILE) $(if $(FRESH),--fresh --data-config with_other)"
        " $(if $(POOL),--pool --data-config with_packages)", needs="FILE",
        usage="usage: make validate FILE=path/to/items.{json,jsonl,csv} [FRESH=1|POOL=1]",
        doc="the validation report of a JSON/JSONL/CSV file; exit 1 when any row is bad "
        "(`FRESH=1`: a fresh evaluation set, also checked against every training source; "
        "`POOL=1`: the stream pool, also against the fresh set and the package names)"),
    Job("explain-eval", OPTIONS, "mltagger.evaluation.explain_eval:main",
        "AOPC of occlusion (export) and integrated gradients (torch) vs random words; latency",
        make="$(EXPLAIN_ARGS)", after="make export",
        doc="how faithful the review page's top words are (AOPC at k = 1..5 against 10 random "
        "draws, sufficiency) for occlusion on the export and integrated gradients on the torch "
        "model, and occlusion's latency per item on 2 threads; writes `runs/explain/<time>/` "
        '(`EXPLAIN_ARGS="--limit 50 --no-ig"`)'),
    Job("bench", OPTIONS, "mltagger.benchmarks.latency:main",
        "latency p50/p95/p99 and batch throughput of models/latest and the export candidates",
        make="$(BENCH_ARGS)", after="make export",
        doc='per-item latency p50/p95/p99 and batch throughput of every candidate (`BENCH_ARGS='
        '"--n 500"`)'),
    Job("serve", COMMAND, "mltagger.cli:cmd_serve",
        "the tagging service on 127.0.0.1:8000 (docs at /docs); config conf/serve.yaml",
        config="serve", check="mltagger.serving.config_rules:check_serve_config",
        options="mltagger.cli:overrides_options",
        make="$(if $(WORKERS),workers=$(WORKERS)) $(ARGS)", after="make export",
        doc="the tagging service on 127.0.0.1:8000 (FastAPI; `/docs`) over `models/export`; "
        "`WORKERS=N` processes ([service](service.md), [API reference](api.md))"),
    Job("keys", OPTIONS, "mltagger.serving.keys:main",
        "API keys with roles: create, list, revoke, end-sessions",
        doc='API keys with roles (`ingest`, `review`, `admin`), stored hashed in the store: '
        '`ARGS="create alice --role review"` | `list` | `revoke NAME` | `end-sessions [--key '
        'NAME]`; the key is printed once ([security](security.md))'),
    Job("tags", OPTIONS, "mltagger.serving.tags_cli:main",
        "the store's approved tag list: list, add, retire, remove, history, proposals",
        make=None,
        doc="the approved tag list the store keeps (admins): `list` | `add NAME [--description "
        "TEXT]` | `retire NAME` | `remove NAME` | `history` | `proposals` | `accept ID` | "
        "`dismiss ID`, `--by NAME` recorded ([tag list](tag-list.md))"),
    Job("probe", OPTIONS, "mltagger.benchmarks.probe:main",
        "security probe of a running service on this machine (payload families, one line each)",
        make=None,
        doc="the security probe's payload families against a service you run on this machine, "
        "one line per family; `make security` runs them against throw-away services "
        "([security](security.md))"),
    Job("ingest", COMMAND, "mltagger.cli:cmd_ingest",
        "the hourly batch job: validate, screen duplicates, tag and store a drop file",
        options="mltagger.cli:ingest_options", make="$(FILE) $(ARGS)", needs="FILE",
        usage="usage: make ingest FILE=drop.{jsonl,json,csv} [ARGS=overrides]", after="make export",
        doc="the hourly batch job: validate, screen duplicates, tag, store"),
    Job("dataset", COMMAND, "mltagger.cli:cmd_dataset_build",
        "training data from the store's human labels -> data/feedback/, conf/data/",
        options="mltagger.cli:dataset_options", make="build $(ARGS)",
        doc="`dataset build`: the store's human labels → `data/feedback/v<N>.json` + "
        "`conf/data/feedback_v<N>.yaml`"),
    Job("report", OPTIONS, "mltagger.reporting.report:main",
        "stakeholder HTML report of a run (+ Chromium screenshot; W&B Report when online)",
        make="$(if $(RUN),--run $(RUN)) $(ARGS)", after="make train",
        doc="stakeholder HTML report of a run (+ Chromium screenshot; W&B Report when online) "
        "([reporting](reporting.md))"),
    Job("monitor", COMMAND, "mltagger.cli:cmd_monitor",
        "online precision from proxy signals, candidate disagreement and drift over the store",
        options="mltagger.cli:monitor_options", make="$(MONITOR_ARGS)", after="make export",
        doc="online precision per tag, signal and model version, candidate disagreement, review "
        "backlog and drift over a window of the store; report in `runs/monitor/<time>/`, "
        "snapshot for `/metrics` ([after release](monitoring.md))"),
    Job("discover", OPTIONS, "mltagger.discover.job:main",
        "cluster the window's `other` and review items into named tag proposals",
        make="$(DISCOVER_ARGS)",
        doc="cluster the items of a window of the store (default 30 days) tagged `other` or "
        "waiting for review, name the clusters by c-TF-IDF keywords, rank them by size and "
        "growth → `runs/discover/<time>/proposals.json` ([discover](discover.md))"),
    Job("discover-eval", OPTIONS, "mltagger.discover.holdout:main",
        "hold out each topic, replay the fresh set: does it come back as one cluster?",
        make="$(DISCOVER_EVAL_ARGS)",
        doc="hold out each of the six topics in turn, replay the fresh set (`--replay val "
        "--select`: the parameter choice) → `runs/discover-eval/<time>/` "
        "([discover](discover.md))"),
    Job("cycle", COMMAND, "mltagger.cli:cmd_cycle",
        "the continual-learning cycle: stream labels -> challenger -> gates -> canary -> promote",
        options="mltagger.cli:cycle_options", make="$(CYCLE_ARGS)", after="make train",
        doc="one idempotent run of the continual-learning cycle (labels, dataset, warm-start "
        "challenger, gates, shadow, canary, promotion or rollback); `status`, `pause`, `resume`, "
        "`veto`, `force`, `release` for admins ([cycle](cycle.md))"),
    Job("simulate-cycle", OPTIONS, "mltagger.cycle.simulate:main",
        "replay the stream pool through ingest, review, the cycle, canary and promotion",
        make="--champion $(or $(CHAMPION),runs/simulate-cycle/champion/model) $(SIM_CYCLE_ARGS)",
        setup="@test -d $(or $(CHAMPION),runs/simulate-cycle/champion/model) || $(MLTAGGER) "
        "train data=with_packages update_latest=false logger=none "
        "hydra.run.dir=runs/simulate-cycle/champion",
        doc="the continual-learning loop replayed on the labelled stream pool with real training, "
        "from a champion trained without the pool (trained first when missing, ~8 min); "
        "resumable ([cycle](cycle.md))"),
    Job("simulate-stream", OPTIONS, "mltagger.monitoring.simulate:main",
        "replay an hourly stream (in distribution, a shift, a worse canary) and monitor it",
        make="$(SIM_ARGS)",
        doc="replay an hourly stream (in distribution, a shift, a worse canary) through ingest "
        "and check the monitoring targets; on a fresh clone it first builds the models it needs "
        "(about 20 minutes on 2 cores) ([after release](monitoring.md))"),
    Job("simulate-labels", OPTIONS, "mltagger.monitoring.simulate_labels:main",
        "replay the labelled stream pool: which review-queue order teaches the model fastest",
        make="$(LABELS_ARGS)", after="make train",
        doc="replay the labelled stream pool day by day for every review-queue strategy and "
        "seed: coverage and precision per window, labels spent, the order chosen on the first "
        "half and the targets read on the second ([review queue](review.md))"),
    Job("profile", COMMAND, "mltagger.cli:cmd_profile",
        "(re)build a model folder's reference profile (training and export write one)",
        options="mltagger.cli:profile_options", make=None,
        doc="(re)build a model folder's reference profile for drift (training and export write "
        "one)"),
    Job("promote", COMMAND, "mltagger.cli:cmd_promote",
        "point the service's model_dir (models/export) at a candidate model folder",
        options="mltagger.cli:promote_options", make="$(CANDIDATE) $(ARGS)", needs="CANDIDATE",
        usage="usage: make promote CANDIDATE=path/to/model/folder", after="make export",
        doc="point `model_dir` (models/export) at a candidate and record it in the store; every "
        "running worker follows within seconds"),
    Job("rollback", COMMAND, "mltagger.cli:cmd_rollback",
        "point model_dir back where it was before the last promote",
        options="mltagger.cli:overrides_options", after="make promote CANDIDATE=…",
        doc="point `model_dir` back where it was before the last promote, and record it"),
    Job("dedup-eval", OPTIONS, "mltagger.benchmarks.screen:main",
        "the duplicate screen at store scale (false duplicates, recall, cost)",
        make="--model $(or $(MODEL),models/export) $(DEDUP_ARGS)", after="make export",
        doc="the duplicate screen at store scale: false duplicates of new items at 1k/10k/100k "
        "stored, recall per kind of copy, cost next to the classifier (`DEDUP_ARGS=--write` "
        'refits `data/dedup/screen.json`; `DEDUP_ARGS="--model none …"` without a model; '
        "[duplicate screen](dedup.md))"),
    Job("load-test", OPTIONS, "mltagger.benchmarks.load:main",
        "locust load test of the exported model's service (/predict, /items)",
        make="$(LOAD_ARGS)", setup='$(PIP) install -q -e ".[load]"', after="make export",
        doc="locust load test of the service on loopback: `/predict` one item and batched, "
        "`/items`; items/s per worker count (`LOAD_ARGS`, e.g. `--workers 1,2,4`, "
        "`--prefill 100000`; [service](service.md#load-test))"),
)  # fmt: skip
JOBS: dict[str, Job] = {job.name: job for job in JOBS_LIST}
KIND_SUFFIX = {HYDRA: "[Hydra overrides]", OPTIONS: "(--help for its options)", COMMAND: ""}
_MAKE_VAR = re.compile(r"\$\(([A-Z][A-Z_]*)\)")


def make_variables(job: Job) -> list[str]:
    """The Make variables a job's target reads, in order (from its `make` arguments)."""
    found = _MAKE_VAR.findall(job.make or "")
    return list(dict.fromkeys(found))


def make_help(job: Job) -> str:
    """`make help`'s line: the job's help and the variables its target reads."""
    names = [f"{v}=… (required)" if v == job.needs else f"{v}=…" for v in make_variables(job)]
    return f"{job.help}" + (f" [{' '.join(names)}]" if names else "")


def render_make() -> str:
    """The job targets as Make rules: the Makefile includes this and runs every name in JOBS
    through its one pattern rule (`$(MLTAGGER) <name> $(<name>_ARGS)`)."""
    jobs = [j for j in JOBS_LIST if j.make is not None]
    out = [
        "# Generated from src/mltagger/jobs.py by `python3 src/mltagger/jobs.py --make`: do not "
        "edit (the Makefile regenerates it when the table changes).",
        "JOBS := " + " ".join(j.name for j in jobs),
    ]
    for job in jobs:
        out.append(f"{job.name}: ## {make_help(job).replace('#', '')}")
        out.append(f"{job.name}_ARGS = {job.make}")
        if job.needs:
            out += [f"{job.name}_NEEDS = {job.needs}", f"{job.name}_USAGE = {job.usage}"]
        if job.setup:
            out.append(f"{job.name}_SETUP = {job.setup}")
    return "\n".join(out) + "\n"


def command_line(job: Job) -> str:
    """How the docs show the job as a command."""
    rest = "[overrides]" if job.kind == HYDRA else "[options]"
    return f"`mltagger {job.name} {rest}`"


def make_line(job: Job) -> str:
    if job.make is None:
        return "—"
    needs = f" {job.needs}=…" if job.needs else ""
    return f"`make {job.name}{needs}`"


def render_markdown() -> str:
    """The jobs table of docs/commands.md (scripts/docs_pages.py writes it between markers)."""
    rows = [
        "| `make` target | `mltagger` job | kind | run first | what it does |",
        "|---|---|---|---|---|",
    ]
    for job in JOBS_LIST:
        text = (job.doc or job.help).replace("|", "\\|")
        first = f"`{job.after}`" if job.after else ""
        rows.append(f"| {make_line(job)} | {command_line(job)} | {job.kind} | {first} | {text} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--make", action="store_true", help="the job targets as Make rules")
    group.add_argument("--markdown", action="store_true", help="the jobs table of the docs")
    args = parser.parse_args(argv)
    sys.stdout.write(render_make() if args.make else render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
