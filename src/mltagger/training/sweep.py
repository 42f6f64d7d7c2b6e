"""Optuna hyperparameter search over the training loop (`make sweep`), driven by our own code.

Each trial is a set of Hydra overrides sampled from `sweep.params` (conf/hparams_search/*.yaml) and
composed with the command line's overrides through Hydra's compose API, so any trial is reproduced
exactly by `make train ARGS="<base overrides> <trial overrides>"`. Trials report the monitored val
metric after every epoch and are pruned early (median or Hyperband pruner). The study lives in an
RDB (`sweep.storage`; default SQLite under runs/sweep/<study>/), so several worker processes, or
several machines with a PostgreSQL URL, can work on one study, and rerunning the same command
resumes it. A trial that fails (e.g. out of memory) is recorded as failed with its error and the
sweep goes on. At the end the best trial becomes conf/experiment/best_<study>.yaml.

(hydra-optuna-sweeper pins optuna<3 and would downgrade Optuna, hence no plugin.)

Over 400 lines because sampling, storage, resuming, pruning, the best-trial experiment file and
the summary plots are one study's life cycle, read top to bottom.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from sqlalchemy.exc import SQLAlchemyError

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError
from mltagger.core.paths import conf_dir
from mltagger.core.tracking import wandb_settings
from mltagger.training.config_rules import PARAM_TYPES, check_sweep_config
from mltagger.training.cv import run_cv
from mltagger.training.loop import train

log = logging.getLogger(__name__)


def suggest(trial, params: DictConfig) -> dict[str, Any]:
    """One value per searched key, from its spec ({type, low, high, log, step} or {choices})."""
    values = {}
    for key, spec in params.items():
        kind = spec.get("type")
        if kind == "float":
            values[key] = trial.suggest_float(
                key, float(spec.low), float(spec.high), log=bool(spec.get("log", False))
            )
        elif kind == "int":
            values[key] = trial.suggest_int(
                key, int(spec.low), int(spec.high), step=int(spec.get("step", 1))
            )
        elif kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec.choices))
        else:
            raise ConfigError(
                f"sweep.params.{key}: type must be one of {PARAM_TYPES}, got {kind!r}"
            )
    return values


def to_overrides(values: dict[str, Any]) -> list[str]:
    """Hydra override strings for sampled values (floats with full precision)."""
    out = []
    for key, value in values.items():
        if isinstance(value, float):
            out.append(f"{key}={value!r}")
        elif value is None:
            out.append(f"{key}=null")
        else:
            out.append(f"{key}={value}")
    return out


def make_sampler(spec: DictConfig):
    import optuna

    name = spec.get("name", "tpe")
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=spec.get("seed"), n_startup_trials=int(spec.get("n_startup_trials", 5))
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=spec.get("seed"))
    raise ConfigError(f"sweep.sampler.name must be tpe or random, got {name!r}")


def make_pruner(spec: DictConfig):
    import optuna

    name = spec.get("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 3)),
            n_warmup_steps=int(spec.get("n_warmup_steps", 1)),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(spec.get("min_resource", 1)),
            max_resource=spec.get("max_resource", "auto"),
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"sweep.pruner.name must be median, hyperband or none, got {name!r}")


def make_storage(url: str):
    """An RDB storage; SQLite waits on locks instead of failing when workers write together."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def open_study(name: str, storage_url: str, attempts: int = 5, **kwargs):
    """Create or load the study, retrying when workers that start together race on the schema.

    Two processes opening a fresh SQLite file at once both try to create Optuna's tables and
    version row; the loser gets an integrity/operational error. The schema exists by the time it
    retries, so a short backoff is all it takes.
    """

    import optuna

    for attempt in range(1, attempts + 1):
        try:
            return optuna.create_study(
                study_name=name,
                storage=make_storage(storage_url),
                load_if_exists=True,
                **kwargs,
            )
        except (SQLAlchemyError, optuna.exceptions.DuplicatedStudyError) as err:
            if attempt == attempts:
                raise
            log.warning("opening study %s failed (%s), retrying", name, type(err).__name__)
            time.sleep(0.5 * attempt + random.random())
    raise AssertionError("unreachable")


def base_overrides(cfg: DictConfig) -> list[str]:
    """The command line's overrides (they apply to every trial), from Hydra's record."""

    try:
        return [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    except ValueError:  # not inside a Hydra app (tests call run_sweep directly)
        return list(cfg.get("_overrides", []))


def run_sweep(cfg: DictConfig, overrides: list[str]) -> Any:
    """Create or load the study and run `sweep.n_trials` trials in this process."""
    import optuna

    check_sweep_config(cfg)
    sw = cfg.sweep
    metric = str(sw.metric)
    sweep_dir = Path(str(sw.dir))
    storage = str(sw.storage or f"sqlite:///{sweep_dir / 'study.db'}")
    study = open_study(
        str(sw.study_name),
        storage,
        sampler=make_sampler(sw.sampler),
        pruner=make_pruner(sw.pruner),
        direction=str(sw.direction),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log.info("study %s in %s: %d trials so far", sw.study_name, storage, len(study.trials))

    objective_kind = str(sw.get("objective", "val"))
    if objective_kind not in ("val", "cv"):
        raise ConfigError(f"sweep.objective={objective_kind!r}: use val or cv")
    study.set_user_attr("metric", metric)
    study.set_user_attr("objective", objective_kind)
    trial_base = [o for o in overrides if not o.startswith("hparams_search=")]

    # Every trial is a W&B run in a group named after the study (when W&B is on).
    has_wandb = bool(cfg.get("logger") and cfg.logger.get("wandb"))
    group = [f"logger.wandb.group={sw.study_name}"] if has_wandb else []

    def objective(trial) -> float:
        try:
            values = suggest(trial, sw.params)
            trial_ov = to_overrides(values)
            run_dir = sweep_dir / "trials" / f"trial_{trial.number:04d}"
            trial.set_user_attr("overrides", trial_ov)
            trial.set_user_attr("run_dir", str(run_dir))
            by_cv = objective_kind == "cv"
            trial_cfg = compose_config(
                "cv" if by_cv else "train",
                [
                    *trial_base,
                    *trial_ov,
                    f"paths.output_dir={run_dir}",
                    "task_name=sweep",
                    *group,
                    "update_latest=false",
                    *([f"cv.folds={int(sw.get('cv_folds', 3))}"] if by_cv else []),
                ],
            )
            if by_cv:
                # The mean over held-out folds of the same figure (no per-epoch pruning: a
                # trial is k trainings, judged once at the end).
                summary = run_cv(trial_cfg)
                value = summary["global_rule"][metric.removeprefix("val/")]["mean"]
                trial.set_user_attr(
                    "cv_std", summary["global_rule"][metric.removeprefix("val/")]["std"]
                )
                if value is None or not math.isfinite(value):
                    raise ValueError(f"trial {trial.number}: CV gave no finite {metric}")
                return float(value)

            def report(epoch: int, metrics: dict) -> None:
                value = metrics[metric]
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric} {value:.4f})")

            result = train(trial_cfg, on_epoch=report)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # recorded with the trial; optimize(catch=...) goes on
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            log.error("trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            raise
        value = result.get(metric)
        if value is None or not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: training returned no finite {metric}")
        return float(value)

    def progress(study, trial) -> None:
        best = None
        with contextlib.suppress(ValueError):  # no completed trial yet
            best = study.best_trial
        value = f"{trial.value:.4f}" if trial.value is not None else "—"
        err = trial.user_attrs.get("error")
        print(
            f"trial {trial.number:3d} {trial.state.name.lower():8s} {metric} {value} "
            f"params {json.dumps(trial.params, default=str)}"
            + (f" error {err}" if err else "")
            + (f" | best #{best.number} {best.value:.4f}" if best is not None else ""),
            flush=True,
        )

    study.optimize(
        objective,
        n_trials=int(sw.n_trials),
        timeout=sw.get("timeout"),
        catch=(Exception,),
        callbacks=[progress],
        gc_after_trial=True,
    )
    return study


def _override_key(override: str) -> str:
    """`trainer.max_epochs` of `trainer.max_epochs=3`, `+x.y=1` or `~x.y`."""
    return override.partition("=")[0].lstrip("+~")


def rerun_base(base: list[str], trial_overrides: list[str]) -> list[str]:
    """The sweep's base overrides that a rerun of a trial repeats.

    A base override of a key the study searched is left out: on the command line it would beat
    the experiment file (or come before the trial's value) and the rerun would not be the trial.
    """
    searched = {_override_key(o) for o in trial_overrides}
    return [
        o for o in base if not o.startswith("hparams_search=") and _override_key(o) not in searched
    ]


def best_experiment(study, study_name: str, base: list[str], exp_dir: Path) -> Path | None:
    """conf/experiment/best_<study>.yaml from the best trial, and the command that reruns it."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    nested: dict = {}
    for override in best.user_attrs["overrides"]:
        key, _, value = override.partition("=")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)  # "0.0007" -> float, "none" -> "none", "null" -> None
    body = OmegaConf.to_yaml(OmegaConf.create(nested))
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir / f"best_{study_name}.yaml"
    extra = rerun_base(base, best.user_attrs["overrides"])
    path.write_text(
        "# @package _global_\n"
        f"# Best trial #{best.number} of Optuna study {study_name!r}: {best.value:.4f}.\n"
        f"# Base overrides of that sweep: {' '.join(extra) or '(none)'}\n"
        f'#   make train ARGS="{" ".join([*extra, f"experiment=best_{study_name}"])}"\n' + body
    )
    return path


def summarise(study, cfg: DictConfig, base: list[str]) -> dict:
    """History and importances (files + W&B summary run) and the best-trial experiment file."""
    import optuna

    sweep_dir = Path(str(cfg.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = study.trials
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "error": t.user_attrs.get("error"),
            "run_dir": t.user_attrs.get("run_dir"),
        }
        for t in trials
    ]
    importances: dict = {}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2:
        try:
            importances = {
                k: float(v) for k, v in optuna.importance.get_param_importances(study).items()
            }
        except (RuntimeError, ValueError) as err:  # e.g. a parameter that never varied
            log.warning("no parameter importances: %s", err)
    summary = {
        "study": study.study_name,
        "counts": {k: v for k, v in counts.items() if v},
        "trials": rows,
        "importances": importances,
    }
    exp_dir = cfg.sweep.get("experiment_dir")
    best_path = best_experiment(
        study, study.study_name, base, Path(str(exp_dir)) if exp_dir else conf_dir() / "experiment"
    )
    if best_path is not None:
        summary["best"] = {
            "number": study.best_trial.number,
            "value": study.best_value,
            "overrides": study.best_trial.user_attrs["overrides"],
            "experiment": str(best_path),
        }
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    _plots(study, sweep_dir, complete)
    _log_summary_to_wandb(cfg, summary, sweep_dir)
    return summary


def _plots(study, sweep_dir: Path, complete) -> None:
    if not complete:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [t.number for t in complete]
    ys = [t.value for t in complete]
    best = []
    for y in ys:
        best.append(y if not best else max(best[-1], y))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(xs, ys, label="completed trial")
    ax.plot(xs, best, color="crimson", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(study.user_attrs.get("metric", "objective"))
    ax.set_title(f"Optimisation history: {study.study_name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(sweep_dir / "optimization_history.png", dpi=110)
    plt.close(fig)


def _log_summary_to_wandb(cfg: DictConfig, summary: dict, sweep_dir: Path) -> None:

    cfg = OmegaConf.merge(cfg, {"paths": {"output_dir": str(sweep_dir)}})
    settings = wandb_settings(cfg)
    if settings is None or settings["mode"] == "disabled":
        return
    import wandb

    settings.update(group=summary["study"], job_type="sweep-summary", name=f"{summary['study']}")
    with wandb.init(project=cfg.logger.wandb.project, config=dict(cfg.sweep), **settings) as run:
        table = wandb.Table(columns=["number", "state", "value", "params", "error"])
        for r in summary["trials"]:
            table.add_data(r["number"], r["state"], r["value"], json.dumps(r["params"]), r["error"])
        run.log({"trials": table})
        if summary["importances"]:
            imp = wandb.Table(
                columns=["param", "importance"], data=list(summary["importances"].items())
            )
            run.log({"importances": wandb.plot.bar(imp, "param", "importance")})
        if (sweep_dir / "optimization_history.png").is_file():
            run.log(
                {"optimization_history": wandb.Image(str(sweep_dir / "optimization_history.png"))}
            )
        if "best" in summary:
            run.summary["best_value"] = summary["best"]["value"]
            run.summary["best_overrides"] = " ".join(summary["best"]["overrides"])


def main(cfg: DictConfig) -> float | None:
    """make sweep: run this worker's trials, then summarise the whole study."""
    check_sweep_config(cfg)
    base = base_overrides(cfg)
    t0 = time.perf_counter()
    study = run_sweep(cfg, base)
    summary = summarise(study, cfg, base)
    print(
        f"\nstudy {summary['study']}: {summary['counts']} in "
        f"{(time.perf_counter() - t0) / 60:.1f} min (this worker)"
    )
    if "best" in summary:
        b = summary["best"]
        extra = rerun_base(base, b["overrides"])
        rerun = " ".join([*extra, *b["overrides"]])
        named = " ".join([*extra, "experiment=best_" + summary["study"]])
        print(f"best trial #{b['number']}: {cfg.sweep.metric} {b['value']:.4f}")
        print(f'rerun it: make train ARGS="{rerun}"')
        print(f'   or:    make train ARGS="{named}"')
        return float(b["value"])
    return None
