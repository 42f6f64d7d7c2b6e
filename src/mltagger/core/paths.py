"""Where the project's files are: the repo root, its conf/ and data/ folders.

The package is installed in editable mode from the repo (`make install`), so the root is the folder
that holds src/ (`REPO`); MLTAGGER_ROOT overrides it (tests point it at temp folders).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MLTAGGER_ROOT"
# src/mltagger/core/paths.py -> the repository
REPO = Path(__file__).resolve().parents[3]


def project_root() -> Path:
    env = os.environ.get(ROOT_ENV)
    return Path(env).resolve() if env else REPO


def conf_dir() -> Path:
    """The Hydra config folder; configs live in the repo, not in the installed package."""
    path = REPO / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"config folder {path} not found: install mltagger from its repository with "
            "`make install` (an editable install keeps conf/ next to src/)"
        )
    return path


def resolve_path(path: str | Path, root: str | Path | None = None) -> Path:
    """Absolute paths stay; relative ones are taken from the project root (not the cwd)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return Path(root or project_root()) / path
