"""Hydra configuration: composing conf/ from inside or outside a Hydra app, running a job as a
Hydra app (`hydra_entry`, what `mltagger <job>` uses), and loading a data config by name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mltagger.core.errors import ConfigError, DataError, user_errors
from mltagger.core.paths import ROOT_ENV, conf_dir, project_root


def hydra_entry(
    config_name: str,
    job: Callable[[DictConfig], Any],
    check: Callable[[DictConfig], None] | None = None,
) -> None:
    """Run `job` as a Hydra app on conf/<config_name>.yaml, user mistakes without traceback.

    The overrides are composed once before Hydra's own app and `check` (the job's config rules)
    runs on the result: a bad override (unknown key, bad syntax, a missing option) or a value the
    job cannot use is then one line and exit 2, where Hydra would print several lines and exit
    1, and no run folder is made for a job that cannot run. Command lines with Hydra's own flags
    (--cfg, --help, --multirun, ...) go to Hydra untouched.
    """

    os.environ.setdefault(ROOT_ENV, str(project_root()))
    overrides = sys.argv[1:]
    checked = False
    if not any(arg.startswith("-") for arg in overrides):
        with user_errors():
            cfg = compose_config(config_name, overrides)
            if check is not None:
                check(cfg)
        checked = True

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)
    def _app(cfg: DictConfig) -> Any:
        with user_errors():
            if check is not None and not checked:  # Hydra's own flags (--multirun, ...)
                check(cfg)
            return job(cfg)

    _app()


def load_data_config(name_or_path: str):
    """A data config by name (conf/data/NAME.yaml, composed with its defaults, e.g. with_other
    on top of projects) or a complete one by path."""
    path = Path(name_or_path)
    if path.suffix:
        if not path.exists():
            raise DataError(f"data config {name_or_path}: no such file")
        return OmegaConf.load(path)
    if not (conf_dir() / "data" / f"{name_or_path}.yaml").exists():
        choices = sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))
        raise DataError(
            f"data config {name_or_path!r} not found (choose from {choices} or give a .yaml path)"
        )
    return compose_config("train", [f"data={name_or_path}"]).data


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """A composed Hydra config outside a Hydra app; bad overrides become a clear error."""

    os.environ.setdefault(ROOT_ENV, str(project_root()))
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (e.g. a sweep's trials)
            return compose(config_name, overrides=list(overrides))
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except HydraException as err:
        raise ConfigError(f"bad config override: {one_line(err)}") from None


def one_line(err: BaseException) -> str:
    """Hydra's multi-line message on one line (the config search path it appends left out)."""
    text = str(err).split("Config search path:")[0]
    return " ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
