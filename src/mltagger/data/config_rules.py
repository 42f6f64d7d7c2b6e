"""What a data config (conf/data/*.yaml, `data.*` of every training job) may hold.

`prepare_data` checks it before reading a file and every job's config check runs it right after
composing, so `data.label_noise.layer=null` with an action, a split that leaves no training data
or a source path that does not exist is one line naming the key, not a TypeError in pathlib or a
failure after the data is loaded. The table says what `prepare_data` and its helpers read; the
keys only some data configs have (label_noise, fresh, reviewed_labels) are optional.
"""

from __future__ import annotations

from typing import Any

from mltagger.core.checks import (
    Root,
    check_config,
    entries,
    flag,
    integer,
    number,
    one_of,
    path,
    sequence,
    text,
)
from mltagger.core.errors import ConfigError
from mltagger.core.paths import resolve_path
from mltagger.data.corrections import ACTIONS
from mltagger.data.split import FOLD_KINDS, SOURCE_SPLITS

# One entry of data.sources (see conf/data/with_external.yaml for the optional keys).
SOURCE_RULES = {
    "name": text(),
    "path": path("file"),
    "sha256": text(nullable=True, optional=True),  # null: not pinned
    "split": one_of(SOURCE_SPLITS, optional=True),
    # How `make cv` folds this source's rows: `stratified` (shuffled per tag) or `date` (per tag,
    # contiguous blocks in date order: each fold is scored by models of other periods).
    "folds": one_of(FOLD_KINDS, optional=True),
    "weight": number(above=0, high=1, optional=True),
    "max_per_tag": integer(1, nullable=True, optional=True),
    "seed": integer(optional=True),
}

DATA_RULES = {
    "name": text(optional=True),
    "sources": entries(SOURCE_RULES, what="sources"),
    "tags": sequence(text(), min_len=2),
    "fallback_tag": text(),
    "min_freq": integer(0, optional=True),
    "skip_invalid": flag(optional=True),
    "fresh.path": path("file", nullable=True, optional=True),  # fresh: null turns it off
    "fresh.sha256": text(nullable=True, optional=True),
    "near_duplicates.threshold": number(0, 1),
    "near_duplicates.same_title_min_chars": integer(0),
    "split.val_size": number(0, below=1),
    "split.test_size": number(0, below=1),
    "split.seed": integer(),
    "label_noise.action": one_of(ACTIONS, optional=True),
    "label_noise.layer": text(nullable=True, optional=True),  # required with an action, below
    "label_noise.weight": number(above=0, high=1, optional=True),
    "label_noise.sources": sequence(text(), optional=True),
    "label_noise.folds": integer(2, optional=True),
    "label_noise.seed": integer(optional=True),
    "label_noise.oof": text(nullable=True, optional=True),
    "reviewed_labels": path("file", nullable=True, optional=True),
    # Written relabelling rules for weak sources (mltagger.data.relabel): data/mappings/*.yaml.
    "relabel.path": path("file", nullable=True, optional=True),
    "relabel.sha256": text(nullable=True, optional=True),
    "relabel.sources": sequence(text(), optional=True),
}


def check_data_config(
    data_cfg: Any, root: Root = None, *, prefix: str = "data", layer_must_exist: bool = True
) -> None:
    """Refuse a data config `prepare_data` could not use; `root` is paths.root_dir.

    layer_must_exist=False for the jobs that build the label-issue layer or rebuild it per fold
    (label-issues, cv): they need its path, not the file.
    """
    check_config(data_cfg, DATA_RULES, root=root, prefix=prefix)
    tags = list(data_cfg.tags)
    if data_cfg.fallback_tag not in tags:
        raise ConfigError(
            f"{prefix}.fallback_tag={data_cfg.fallback_tag!r}: expected one of {prefix}.tags {tags}"
        )
    split = data_cfg.split
    if split.val_size + split.test_size >= 1:
        raise ConfigError(
            f"{prefix}.split.val_size={split.val_size} + {prefix}.split.test_size="
            f"{split.test_size}: expected a sum below 1 (the rest is the train split)"
        )
    noise = data_cfg.get("label_noise")
    if not noise or noise.get("action", "keep") == "keep":
        return
    action = f"{prefix}.label_noise.action={noise.action}"
    if not noise.get("layer"):
        raise ConfigError(
            f"{prefix}.label_noise.layer=null: {action} needs the label-issue layer file; give "
            f"its path, or set {prefix}.label_noise.action=keep to train on the shipped labels"
        )
    layer = resolve_path(noise.layer, root)
    if layer_must_exist and not layer.is_file():
        raise ConfigError(
            f"{prefix}.label_noise.layer={noise.layer}: no such file ({layer}); build it with "
            f"`make label-issues`, or set {prefix}.label_noise.action=keep"
        )
