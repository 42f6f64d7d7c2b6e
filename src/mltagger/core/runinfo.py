"""What every run folder records so a result can be traced: config, data, code, environment."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mltagger.core.paths import project_root

_PACKAGES = (
    "mltagger",
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "scikit-learn",
    "hydra-core",
    "optuna",
    "wandb",
    "numpy",
)


def git_commit(root: str | Path | None = None) -> dict[str, Any]:
    """The commit the code ran from and whether the tree had uncommitted changes."""
    root = Path(root or project_root())

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_run_info(
    out_dir: str | Path, cfg: DictConfig, data_manifest: dict, extra: dict | None = None
) -> dict:
    """Write config.yaml (resolved), split.json and run_info.json into the run folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "split.json").write_text(json.dumps(data_manifest, indent=1, ensure_ascii=False) + "\n")
    info = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "git": git_commit(),
        "data_sha256": data_manifest["data_sha256"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        **(extra or {}),
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
