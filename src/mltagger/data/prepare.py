"""Items in, clean splits out: `prepare_data` reads every source of a data config (checked by
`validation`, cleaned by `text`), removes duplicates (`duplicates`), applies reviewed labels and
label corrections, and splits (`split`).

Everything downstream (baselines, training, evaluation) receives items that went through
`prepare_data`, so a bad row is caught once, with a message a person can act on. Nothing is
dropped silently: invalid rows either stop the job or land in a rejects file, and removed
duplicates are listed in the split manifest.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.config_rules import check_data_config
from mltagger.data.corrections import apply_layer
from mltagger.data.duplicates import near_duplicate_groups, remove_exact_duplicates
from mltagger.data.fresh import load_fresh
from mltagger.data.relabel import apply_rules, load_rules
from mltagger.data.split import SOURCE_SPLITS, fold_rare_tags, split_sources_in_order
from mltagger.data.validation import (
    ValidationReport,
    combined_sha256,
    load_items,
    sha256_file,
    verify_checksum,
)


@dataclass
class PreparedData:
    """The splits a job trains and evaluates on, and everything needed to say which data it saw."""

    splits: dict[str, list[dict]]
    tags: list[str]
    fallback_tag: str
    sources: list[dict]
    data_sha256: str
    removed_duplicates: list[dict]
    near_duplicate_groups: list[list[int]]
    folded_tags: dict[str, int]
    rejected: list[ValidationReport]
    split_config: dict
    # What the label-issue layer changed in the train split (empty: shipped labels as they are).
    label_noise: dict = field(default_factory=dict)
    # Labels a person corrected (data.reviewed_labels), applied to every split.
    reviewed_labels: dict = field(default_factory=dict)
    # The fresh evaluation set (data.fresh, mltagger.data.fresh): 2023-2026 items checked to be
    # new to every training source; evaluated beside test, never trained on. Empty when unset.
    fresh: list[dict] = field(default_factory=list)
    fresh_manifest: dict = field(default_factory=dict)
    # What the written relabelling rules (data.relabel, mltagger.data.relabel) changed.
    relabel: dict = field(default_factory=dict)

    def label_names(self) -> list[str]:
        """Tags that appear in training data, in the approved list's order: the model's classes."""
        present = {it["tag"] for it in self.splits["train"]}
        return [t for t in self.tags if t in present]

    def manifest(self) -> dict:
        """What goes into split.json: enough to rebuild and audit the exact split."""
        return {
            "data_sha256": self.data_sha256,
            "sources": self.sources,
            "split": self.split_config,
            "counts": {
                s: dict(sorted(Counter(it["tag"] for it in items).items()))
                for s, items in self.splits.items()
            },
            "ids": {s: [it["id"] for it in items] for s, items in self.splits.items()},
            "removed_exact_duplicates": self.removed_duplicates,
            "near_duplicate_groups": self.near_duplicate_groups,
            "folded_tags": self.folded_tags,
            "rejected_rows": sum(len(r.rejected) for r in self.rejected),
            "label_noise": self.label_noise,
            "reviewed_labels": self.reviewed_labels,
            "relabel": self.relabel,
            "fresh": {**self.fresh_manifest, "ids": [it["id"] for it in self.fresh]}
            if self.fresh
            else None,
        }


def apply_reviewed_labels(
    splits: dict[str, list[dict]], path: Path, tags: Sequence[str]
) -> tuple[dict[str, list[dict]], dict]:
    """Labels corrected by a person, applied after splitting (the split does not move).

    Each correction names the shipped tag it expects, so a correction written for other data
    fails loudly instead of silently relabelling the wrong row.
    """
    if not path.exists():
        raise DataError(f"reviewed-labels file {path} not found")
    try:
        corrections = json.loads(path.read_text())["corrections"]
    except (json.JSONDecodeError, KeyError) as err:
        raise DataError(f"{path}: not a reviewed-labels file ({err})") from None
    by_id = {c["id"]: c for c in corrections}
    seen: set = set()
    out = {}
    for name, items in splits.items():
        fixed = []
        for it in items:
            c = by_id.get(it["id"])
            if c is None:
                fixed.append(it)
                continue
            if c["tag"] != it["tag"] or c["corrected"] not in tags:
                raise DataError(
                    f"{path}: correction for id {it['id']} expects tag {c['tag']!r} -> "
                    f"{c['corrected']!r}, but the row is {it['tag']!r} (approved: {list(tags)})"
                )
            seen.add(it["id"])
            fixed.append({**it, "tag": c["corrected"], "tag_shipped": it["tag"]})
        out[name] = fixed
    missing = sorted(set(by_id) - seen)
    if missing:
        raise DataError(f"{path}: corrections for ids not in the data: {missing[:10]}")
    return out, {
        "file": str(path.name),
        "sha256": sha256_file(path),
        "corrected": len(seen),
        "by_split": {n: sum(1 for it in v if "tag_shipped" in it) for n, v in out.items()},
    }


def prepare_data(
    data_cfg: Any,
    root_dir: str | Path | None = None,
    rejects_dir: str | Path | None = None,
    *,
    apply_label_noise: bool = True,
) -> PreparedData:
    """Load every source of a data config (conf/data/*.yaml) and return de-duplicated splits.

    Stops with DataError (checksum changed, invalid rows) unless data_cfg.skip_invalid is set, in
    which case invalid rows are written to <rejects_dir>/rejects_<source>.jsonl. When the config
    has a label-issue layer (data_cfg.label_noise), its action is applied to the train split.
    The config itself is checked first (ConfigError naming the key), before any file is read.
    """
    check_data_config(data_cfg, root_dir, layer_must_exist=apply_label_noise)
    tags = list(data_cfg.tags)
    fallback = data_cfg.fallback_tag
    if fallback not in tags:
        raise DataError(f"fallback_tag {fallback!r} is not in the approved tags {tags}")
    items, sources, reports = _load_sources(data_cfg, tags, root_dir, rejects_dir)
    data_sha256 = combined_sha256(sources)
    relabel: dict = {}
    if data_cfg.get("relabel") and data_cfg.relabel.get("path"):
        items, relabel, data_sha256 = _apply_relabel(
            data_cfg.relabel, items, tags, sources, root_dir
        )
    fresh: list[dict] = []
    fresh_manifest: dict = {}
    if data_cfg.get("fresh") and data_cfg.fresh.get("path"):
        # Checked against every row of every training source, before any de-duplication.
        fresh, fresh_manifest = load_fresh(
            data_cfg.fresh, root_dir, items, tags, data_cfg.get("near_duplicates")
        )
    items, folded = fold_rare_tags(items, int(data_cfg.get("min_freq", 0)), fallback)
    items, removed = remove_exact_duplicates(items)
    nd = data_cfg.near_duplicates
    groups = near_duplicate_groups(items, nd.threshold, nd.same_title_min_chars)
    sp = data_cfg.split
    near_copies: list[dict] = []
    splits = split_sources_in_order(
        items,
        [src["name"] for src in sources],
        val_size=sp.val_size,
        test_size=sp.test_size,
        seed=sp.seed,
        groups=groups,
        train_only=[s["name"] for s in sources if s.get("split") == "train"],
        no_test=[s["name"] for s in sources if s.get("split") == "trainval"],
        dropped=near_copies,
    )
    split_config = {"val_size": sp.val_size, "test_size": sp.test_size, "seed": sp.seed}
    reviewed: dict = {}
    if data_cfg.get("reviewed_labels"):
        splits, reviewed = apply_reviewed_labels(
            splits, resolve_path(data_cfg.reviewed_labels, root_dir), tags
        )
    label_noise: dict = {}
    if apply_label_noise:
        splits, label_noise = _apply_label_noise(
            splits, data_cfg.get("label_noise"), root_dir, sources, split_config, data_sha256
        )
    return PreparedData(
        splits=splits,
        tags=tags,
        fallback_tag=fallback,
        sources=sources,
        data_sha256=data_sha256,
        removed_duplicates=removed + near_copies,
        near_duplicate_groups=groups,
        folded_tags=folded,
        rejected=reports,
        split_config=split_config,
        label_noise=label_noise,
        reviewed_labels=reviewed,
        fresh=fresh,
        fresh_manifest=fresh_manifest,
        relabel=relabel,
    )


def _apply_relabel(
    cfg: Any, items: list[dict], tags: list[str], sources: list[dict], root_dir: Any
) -> tuple[list[dict], dict, str]:
    """The written relabelling rules applied to the sources they name (after each source's
    per-tag cap, so the rows drawn stay the same), and the data fingerprint with the rules'
    sha256 folded in: changing a rule changes the data every derived file was made from."""
    path = resolve_path(cfg.path, root_dir)
    if not path.is_file():
        raise DataError(f"data.relabel.path={cfg.path}: no such file ({path})")
    verify_checksum(path, cfg.get("sha256"))
    rules, sha = load_rules(path, tags)
    names = [s["name"] for s in sources]
    if not cfg.get("sources"):
        raise DataError("data.relabel.sources: name the data sources the rules apply to")
    unknown = [n for n in cfg.sources if n not in names]
    if unknown:
        raise DataError(f"data.relabel.sources: {unknown[0]!r} is not a data source ({names})")
    items, summary = apply_rules(items, rules, list(cfg.sources))
    fingerprint = hashlib.sha256(f"{combined_sha256(sources)}\nrelabel:{sha}".encode()).hexdigest()
    return items, {"path": str(cfg.path), "sha256": sha, **summary}, fingerprint


def _load_sources(
    data_cfg: Any,
    tags: list[str],
    root_dir: str | Path | None,
    rejects_dir: str | Path | None,
) -> tuple[list[dict], list[dict], list[ValidationReport]]:
    """Every source's valid rows in config order, its manifest entry, and the reports of
    sources with invalid rows (kept when data_cfg.skip_invalid lets the job go on)."""
    items: list[dict] = []
    sources: list[dict] = []
    reports: list[ValidationReport] = []
    for src in data_cfg.sources:
        path = resolve_path(src.path, root_dir)
        if not path.exists():
            raise DataError(f"data source {src.name!r}: {path} not found")
        sha = verify_checksum(path, src.get("sha256"))
        report = load_items(path, tags, labeled=True)
        if not report.ok:
            if not data_cfg.get("skip_invalid", False):
                raise DataError(
                    report.format() + "\nFix these rows, or set data.skip_invalid=true "
                    "to drop them into a rejects file."
                )
            if rejects_dir is not None:
                report.write_rejects(Path(rejects_dir) / f"rejects_{src.name}.jsonl")
            reports.append(report)
        seen = {it["id"] for it in items}
        clash = [it["id"] for it in report.items if it["id"] in seen]
        if clash:
            raise DataError(
                f"data source {src.name!r} reuses ids of an earlier source: {clash[:10]}"
            )
        src_items, entry = _source_rows(src, report, sha)
        items.extend(src_items)
        sources.append(entry)
    return items, sources, reports


def _source_rows(src: Any, report: ValidationReport, sha: str) -> tuple[list[dict], dict]:
    """One source's rows as training sees them (named, capped per tag, loss-weighted) and its
    entry in the split manifest, which records each of those choices."""
    src_items = [{**it, "source": src.name} for it in report.items]
    src_items, capped = cap_per_tag(src_items, src.get("max_per_tag"), src.get("seed", 0))
    weight = float(src.get("weight", 1.0))
    if not 0.0 < weight <= 1.0:
        raise DataError(f"data source {src.name!r}: weight must be in (0, 1], got {weight}")
    if weight != 1.0:  # the loss weight of every row of this source (train split only)
        src_items = [{**it, "weight": weight} for it in src_items]
    entry = {"name": src.name, "path": str(src.path), "sha256": sha, "rows": report.n_rows}
    if src.get("split", "all") not in SOURCE_SPLITS:
        raise DataError(
            f"data source {src.name!r}: split must be one of {SOURCE_SPLITS}, got {src.split!r}"
        )
    if src.get("split", "all") != "all":
        entry["split"] = src.split
    if src.get("folds", "stratified") != "stratified":
        entry["folds"] = src.folds
    if weight != 1.0:
        entry["weight"] = weight
    if capped:
        entry["max_per_tag"] = int(src.max_per_tag)
        entry["used"] = len(src_items)
    return src_items, entry


def _apply_label_noise(
    splits: dict[str, list[dict]],
    noise_cfg: Any,
    root_dir: str | Path | None,
    sources: list[dict],
    split_config: dict,
    data_sha256: str,
) -> tuple[dict[str, list[dict]], dict]:
    """The label-issue layer's action on the train split, and what it changed (empty when the
    config has no layer or keeps the shipped labels)."""
    if not noise_cfg or noise_cfg.get("action", "keep") == "keep":
        return splits, {}
    layer_path = resolve_path(noise_cfg.layer, root_dir)
    if not layer_path.exists():
        raise DataError(
            f"label-issue layer {layer_path} not found: build it with `make label-issues` "
            "(or set data.label_noise.action=keep to train on the shipped labels)"
        )
    splits, label_noise = apply_layer(
        splits,
        json.loads(layer_path.read_text()),
        action=noise_cfg.action,
        sources=list(noise_cfg.sources),
        weight=float(noise_cfg.get("weight", 1.0)),
        data_sources=sources,
        data_sha256=data_sha256,
        split_config=split_config,
    )
    label_noise["layer"] = str(noise_cfg.layer)
    label_noise["layer_sha256"] = sha256_file(layer_path)
    return splits, label_noise


def cap_per_tag(items: list[dict], cap: Any, seed: int = 0) -> tuple[list[dict], bool]:
    """At most `cap` items of each tag (a seeded sample, kept in id order); cap null = all.

    Weak sources can be larger than the platform's own data (the external lists hold ~680
    time-series paper titles against 28 time-series items): a cap keeps one source's style from
    dominating a tag, and training time in budget.
    """
    if cap is None:
        return items, False
    cap = int(cap)
    if cap < 1:
        raise DataError(f"max_per_tag must be a positive number of items, got {cap}")
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_tag[it["tag"]].append(it)
    keep: set = set()
    for tag, tag_items in sorted(by_tag.items()):
        ids = sorted(it["id"] for it in tag_items)
        random.Random(f"{seed}:{tag}").shuffle(ids)
        keep.update(ids[:cap])
    return [it for it in items if it["id"] in keep], any(len(v) > cap for v in by_tag.values())


def to_hf_dataset(items: Sequence[dict], label_names: Sequence[str]):
    """The in-memory form handed to training: a datasets.Dataset with an integer `label` column."""
    from datasets import Dataset

    index = {t: i for i, t in enumerate(label_names)}
    return Dataset.from_list(
        [
            {
                "id": it["id"],
                "text": it["text"],
                "title": it["title"],
                "description": it["description"],
                "tag": it["tag"],
                "label": index[it["tag"]],
                # Down-weighted suspect labels (label_issues); 1.0 for every other row.
                "weight": float(it.get("weight", 1.0)),
            }
            for it in items
        ]
    )
