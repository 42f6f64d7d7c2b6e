"""What the training jobs' configs may hold: train and distill, cv, sweep, baselines, label-issues.

One `check_<job>_config(cfg)` per job, run right after composing (`mltagger <job>` runs it before
Hydra's app starts; `train(cfg)` runs it for callers that compose themselves, unless they say
they have): each refuses a value the job could only fail on later, e.g. a string for
trainer.max_epochs, a negative learning rate, batch size 0 or a teacher folder that does not
exist, with a ConfigError naming the key, the value and what is allowed. These are the only
training config rules (whether this machine has the GPU that trainer=gpu asks for is a question
about the machine, asked where the recipe opens its devices: mltagger.training.build.start_run).
Kept free of torch so that the check costs nothing next to composing the config.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from mltagger.core.checks import (
    anything,
    check_config,
    config_root,
    flag,
    integer,
    number,
    one_of,
    path,
    sequence,
    text,
)
from mltagger.core.errors import ConfigError
from mltagger.data.config_rules import check_data_config
from mltagger.evaluation.config_rules import EVAL_RULES, VAL_METRICS

# Kinds of searched parameter a sweep space may declare (mltagger.training.sweep.suggest).
PARAM_TYPES = ("float", "int", "categorical")

TRAIN_RULES = {
    "task_name": text(),
    "seed": integer(),
    "resume": path("folder", nullable=True, from_root=False),  # as find_checkpoint reads it
    "optimized_metric": text(),
    "tags": sequence(text(), optional=True),
    "model.name": text(),
    "model.name_or_path": text(),
    "model.max_length": integer(8),
    "model.dropout": number(0, below=1),
    "model.batch_size": integer(1),
    "model.eval_batch_size": integer(1),
    "model.lr": number(0),
    # lr 0 is allowed: tests/e2e/test_multiprocess.py keeps the model at its initialisation.
    "optim.lr": number(0),
    "optim.weight_decay": number(0),
    "optim.warmup_ratio": number(0, 1),
    "optim.scheduler": text(),
    "optim.betas": sequence(number(0, below=1), min_len=2, max_len=2),
    "optim.eps": number(above=0),
    "loss.class_weighting": one_of(("none", "balanced", "sqrt")),
    "loss.label_smoothing": number(0, below=1),
    "distill.teacher": path(
        "model folder",
        nullable=True,
        optional=True,
        hint="train a teacher first (make train), or point distill.teacher at one",
    ),
    "distill.keep_layers": sequence(integer(0), min_len=1, nullable=True, optional=True),
    "distill.soft_labels": path("file", nullable=True, optional=True),
    "distill.temperature": number(above=0, optional=True),
    "distill.alpha": number(0, 1, optional=True),
    "temperature_scaling": flag(),
    "update_latest": flag(),
    "trainer.accelerator": one_of(("cpu", "gpu")),
    "trainer.mixed_precision": one_of(("no", "bf16", "fp16")),
    "trainer.max_epochs": integer(1),
    "trainer.gradient_accumulation_steps": integer(1),
    "trainer.max_grad_norm": number(above=0, nullable=True),
    "trainer.monitor": one_of(VAL_METRICS, what="a val metric"),
    "trainer.early_stopping_patience": integer(1),
    "trainer.num_workers": integer(0),
    "trainer.limit_train_batches": integer(1, nullable=True),
    "trainer.limit_eval_batches": integer(1, nullable=True),
    "trainer.stop_after_epochs": integer(1, nullable=True),
    "logger.wandb.project": text(optional=True),
    "logger.wandb.mode": one_of(("online", "offline", "disabled"), nullable=True, optional=True),
    "logger.wandb.log_model": flag(optional=True),
}

CV_RULES = {
    "cv.folds": integer(2, why="cross-validation needs at least 2 folds"),
    "cv.seeds": sequence(integer(), min_len=1, nullable=True),
    "cv.inner_val_size": number(above=0, below=1),
    "cv.score_heldout": flag(optional=True),
}

SWEEP_RULES = {
    "sweep.study_name": text(),
    "sweep.metric": one_of(VAL_METRICS, what="a val metric"),
    "sweep.direction": one_of(("maximize", "minimize")),
    "sweep.objective": one_of(("val", "cv"), optional=True),
    "sweep.cv_folds": integer(2, optional=True),
    "sweep.n_trials": integer(1),
    "sweep.timeout": number(above=0, nullable=True, optional=True),
    "sweep.storage": text(nullable=True, optional=True),
    "sweep.dir": text(),
    "sweep.sampler.name": one_of(("tpe", "random"), optional=True),
    "sweep.sampler.seed": integer(nullable=True, optional=True),
    "sweep.sampler.n_startup_trials": integer(0, optional=True),
    "sweep.pruner.name": one_of(("median", "hyperband", "none"), optional=True),
    "sweep.pruner.n_startup_trials": integer(0, optional=True),
    "sweep.pruner.n_warmup_steps": integer(0, optional=True),
}

# Each baseline's constructor arguments, by its _target_ (a baseline may sit under any name).
BASELINE_RULES = {
    "mltagger.models.baselines.RuleTagger": {
        "title_weight": number(0),
        "smoothing": number(above=0),
    },
    "mltagger.models.baselines.TfidfLogReg": {
        "word_ngrams": sequence(integer(1), min_len=2, max_len=2),
        "char_ngrams": sequence(integer(1), min_len=2, max_len=2, nullable=True),
        "min_df": number(above=0),
        "sublinear_tf": flag(),
        "C": number(above=0),
        "class_weight": one_of(("balanced",), nullable=True),
        "max_iter": integer(1),
        "seed": integer(),
    },
}

LABEL_ISSUE_RULES = {
    "data.label_noise.layer": text(),
    "data.label_noise.sources": sequence(text(), min_len=1),
    "data.label_noise.folds": integer(2),
    "data.label_noise.seed": integer(),
}


def check_train_config(cfg: DictConfig, *, layer_must_exist: bool = True) -> None:
    """`mltagger train` and `distill` (and each fold or trial that trains)."""
    root = config_root(cfg)
    check_config(cfg, TRAIN_RULES, root=root)
    check_data_config(cfg.data, root, layer_must_exist=layer_must_exist)
    check_config(cfg.eval, EVAL_RULES, root=root, prefix="eval")


def check_cv_config(cfg: DictConfig) -> None:
    """`mltagger cv`: a training config plus the folds; the label-issue layer is rebuilt per
    fold, so its file need not exist. The folds then train without checking again."""
    root = config_root(cfg)
    check_config(cfg, TRAIN_RULES, root=root)
    check_config(cfg, CV_RULES, root=root)
    check_data_config(cfg.data, root, layer_must_exist=False)
    check_config(cfg.eval, EVAL_RULES, root=root, prefix="eval")


def check_sweep_config(cfg: DictConfig) -> None:
    """`mltagger sweep`: a training config plus a search space whose keys are real config keys."""
    if not cfg.get("sweep"):
        raise ConfigError(
            "no search space: pick one with hparams_search=<name> "
            '(e.g. make sweep ARGS="hparams_search=minilm_optuna")'
        )
    check_train_config(cfg)
    check_config(cfg, SWEEP_RULES)
    params = cfg.sweep.get("params")
    if not params:
        raise ConfigError("sweep.params is empty: expected at least one searched key")
    for key, spec in params.items():
        _check_param(cfg, str(key), spec)


def _check_param(cfg: DictConfig, key: str, spec: Any) -> None:
    where = f"sweep.params.{key}"
    if not _has_key(cfg, key):
        raise ConfigError(f"{where}: {key} is not a key of the training config")
    if not isinstance(spec, DictConfig) or spec.get("type") not in PARAM_TYPES:
        raise ConfigError(f"{where}: expected a mapping with type one of {list(PARAM_TYPES)}")
    if spec.type == "categorical":
        check_config(spec, {"choices": sequence(anything(), min_len=1)}, prefix=where)
        return
    bound = integer() if spec.type == "int" else number()
    check_config(spec, {"low": bound, "high": bound, "log": flag(optional=True)}, prefix=where)
    if spec.low > spec.high:
        raise ConfigError(f"{where}: low={spec.low} is above high={spec.high}")
    if spec.get("log") and spec.low <= 0:
        raise ConfigError(f"{where}: low={spec.low}: a log scale needs low > 0")


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():  # noqa: SIM118
            return False
        node = node._get_node(part)
    return True


def check_baselines_config(cfg: DictConfig) -> None:
    """`mltagger baselines`: the data, the evaluation and each baseline that `run` names."""
    root = config_root(cfg)
    check_config(cfg, {"task_name": text(), "run": sequence(text(), min_len=1)}, root=root)
    check_data_config(cfg.data, root)
    check_config(cfg.eval, EVAL_RULES, root=root, prefix="eval")
    known = list(cfg.baselines)
    for name in cfg.run:
        if name not in known:
            raise ConfigError(f"run={list(cfg.run)}: {name!r} is not a baseline; known: {known}")
        check_config(cfg.baselines[name], {"_target_": text()}, prefix=f"baselines.{name}")
        rules = BASELINE_RULES.get(cfg.baselines[name]._target_, {})
        check_config(cfg.baselines[name], rules, prefix=f"baselines.{name}")


def check_label_issues_config(cfg: DictConfig) -> None:
    """`mltagger label-issues`: a data config with weak labels; the layer is what it writes."""
    root = config_root(cfg)
    if not cfg.data.get("label_noise"):
        raise ConfigError(
            f"data config {cfg.data.get('name')!r} has no label_noise section; "
            "use a data config with weak labels, e.g. data=with_other"
        )
    check_data_config(cfg.data, root, layer_must_exist=False)
    check_config(cfg, LABEL_ISSUE_RULES, root=root)
