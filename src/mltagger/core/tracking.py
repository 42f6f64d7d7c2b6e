"""W&B settings from the config: online, offline (the default, no account needed) or disabled;
shared by training, cross-validation and sweeps.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def wandb_settings(cfg: DictConfig) -> dict | None:
    """init kwargs for W&B, or None with logger=none. No key -> offline, never a prompt."""
    wcfg = cfg.logger.get("wandb") if cfg.get("logger") else None
    if not wcfg:
        return None
    mode = wcfg.mode or os.environ.get("WANDB_MODE")
    if not mode:
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return {
        "entity": wcfg.entity,
        "group": wcfg.group,
        "job_type": wcfg.job_type,
        "tags": list(wcfg.tags or []),
        "mode": mode,
        "dir": str(cfg.paths.output_dir),
        "name": Path(cfg.paths.output_dir).name,
    }
