"""Error analysis and data exploration: the functions behind the notebooks and `make report`.

Everything reads what a run already wrote (its folder: metrics.json, test/metrics.json,
test/predictions.jsonl, plots) or the prepared data, so a notebook cell is one call and a
number in a notebook is the same number as in the report.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mltagger.core.errors import UserError
from mltagger.core.paths import resolve_path
from mltagger.data.slices import REGISTRY, content_slices

RUN_ENV = "MLTAGGER_RUN"


class RunNotFound(UserError):
    """The path is neither a run folder nor a model folder inside one."""


@dataclass
class Run:
    """One training run as written to disk."""

    folder: Path
    summary: dict
    test: dict
    predictions: list[dict]
    info: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.folder.parent.name}/{self.folder.name}"

    def plot(self, name: str) -> Path | None:
        """A plot of the run (test/<name>.png, or <name>.png at the top), if it was written."""
        for path in (self.folder / "test" / f"{name}.png", self.folder / f"{name}.png"):
            if path.is_file():
                return path
        return None


def resolve_run(path: str | Path | None = None) -> Path:
    """A run folder from a run folder, a model folder inside a run (models/latest), or the
    MLTAGGER_RUN environment variable; relative paths from MLTAGGER_ROOT."""

    given = path or os.environ.get(RUN_ENV) or "models/latest"
    folder = resolve_path(given).resolve()
    for candidate in (folder, folder.parent):
        if (candidate / "test" / "metrics.json").is_file():
            return candidate
    raise RunNotFound(
        f"{given}: not a run folder (no test/metrics.json here or one level up); "
        "run `make train` first, or pass a folder under runs/ or a model folder"
    )


WANDB_PREFIX = "wandb:"


def download_wandb_run(path: str, root: str | Path | None = None) -> Path:
    """The evaluation files a training run logged to W&B (artifact type `evaluation`), downloaded
    into a folder laid out like a run folder. Needs W&B online and access to the run."""
    import wandb

    run_path = path[len(WANDB_PREFIX) :].strip("/")
    if run_path.count("/") != 2:
        raise RunNotFound(f"{path}: expected wandb:<entity>/<project>/<run id>")
    api_run = wandb.Api().run(run_path)
    arts = [a for a in api_run.logged_artifacts() if a.type == "evaluation"]
    if not arts:
        raise RunNotFound(f"{path}: the run logged no evaluation artifact (trained before it was)")
    target = Path(root or Path.home() / ".cache" / "mltagger" / "wandb") / run_path.replace(
        "/", "_"
    )
    arts[-1].download(root=str(target))
    return target


def load_run(path: str | Path | None = None) -> Run:
    if isinstance(path, str) and path.startswith(WANDB_PREFIX):
        path = download_wandb_run(path)
    folder = resolve_run(path)
    preds_file = folder / "test" / "predictions.jsonl"
    predictions = (
        [json.loads(line) for line in preds_file.read_text().splitlines() if line.strip()]
        if preds_file.is_file()
        else []
    )

    def read(name: str) -> dict:
        p = folder / name
        return json.loads(p.read_text()) if p.is_file() else {}

    config = {}
    if (folder / "config.yaml").is_file():
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    return Run(
        folder=folder,
        summary=read("metrics.json").get("summary", {}),
        test=read("test/metrics.json"),
        predictions=predictions,
        info=read("run_info.json"),
        config=config,
    )


def headline(run: Run, target: float = 0.85) -> dict:
    """Auto-tag precision and coverage on test against the product target."""
    at = run.test.get("coverage", {}).get("at_threshold", {})
    precision = at.get("auto_precision")
    return {
        "precision": precision,
        "coverage": at.get("coverage"),
        "threshold": at.get("threshold"),
        "num_auto": at.get("num_auto"),
        "num_review": at.get("num_review"),
        "target": target,
        "meets_target": precision is not None and precision > target,
        "f1_weighted": run.test.get("overall", {}).get("f1_weighted"),
        "num_samples": run.test.get("num_samples"),
        "oos_auto_topic": (run.test.get("scope") or {}).get("out_of_scope", {}).get("auto_topic"),
    }


def per_tag_table(metrics: dict) -> list[dict]:
    """Per tag: precision with its 95% interval, recall, F1, support, auto-tag precision."""
    at = metrics.get("coverage", {}).get("at_threshold") or {}
    auto = at.get("per_class_precision", {})
    auto_ci = at.get("per_class_auto", {})
    thr = metrics.get("coverage", {}).get("threshold")
    rows = []
    for tag, m in metrics.get("per_class", {}).items():
        ci = m.get("precision_ci95") or [None, None]
        a = auto_ci.get(tag, {})
        aci = a.get("precision_ci95") or [None, None]
        rows.append(
            {
                "tag": tag,
                "precision": m.get("precision"),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "recall": m.get("recall"),
                "f1": m.get("f1"),
                "support": m.get("num_samples"),
                "auto_precision": auto.get(tag),
                "threshold": thr.get(tag) if isinstance(thr, dict) else thr,
                "num_auto": a.get("num_auto"),
                "auto_ci_low": aci[0],
                "auto_ci_high": aci[1],
            }
        )
    return rows


def slice_table(metrics: dict) -> list[dict]:
    rows = []
    for name, m in metrics.get("slices", {}).items():
        at = m.get("at_threshold") or {}
        rows.append(
            {
                "slice": name,
                "n": m.get("num_samples", 0),
                "accuracy": m.get("accuracy"),
                "f1_weighted": m.get("f1_weighted"),
                "auto_precision": at.get("auto_precision"),
                "coverage": at.get("coverage"),
                "noisy": bool(m.get("noisy")),
                "description": m.get("description", ""),
            }
        )
    return rows


def weakest_slices(metrics: dict, k: int = 3, min_n: int = 30) -> list[dict]:
    """The slices with the lowest weighted F1 among those large enough to be read."""
    rows = [
        r
        for r in slice_table(metrics)
        if r["n"] >= min_n and r["f1_weighted"] is not None and not r["slice"].startswith("tag=")
    ]
    return sorted(rows, key=lambda r: r["f1_weighted"])[:k]


def top_confusions(metrics: dict, k: int = 5) -> list[dict]:
    """The most frequent (gold, predicted) pairs off the diagonal."""
    cm = metrics.get("confusion_matrix") or {}
    labels, matrix = cm.get("labels", []), cm.get("matrix", [])
    pairs = [
        {"gold": labels[i], "predicted": labels[j], "count": int(matrix[i][j])}
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and matrix[i][j]
    ]
    return sorted(pairs, key=lambda p: -p["count"])[:k]


def worst_mistakes(predictions: Sequence[dict], per_tag: int = 3) -> list[dict]:
    """Highest-confidence errors of the classifier (its top class is wrong), per gold tag.

    These are the errors the threshold does not catch first, so they show what the model
    believes wrongly rather than what it is unsure of.
    """
    wrong = [p for p in predictions if p.get("predicted") != p.get("gold")]
    by_tag: dict[str, list[dict]] = {}
    for p in sorted(wrong, key=lambda p: -p["confidence"]):
        group = by_tag.setdefault(p["gold"], [])
        if len(group) < per_tag:
            group.append(p)
    return [
        {
            "gold": p["gold"],
            "predicted": p["predicted"],
            "confidence": p["confidence"],
            "auto_applied": not p["needs_review"],
            "text": p["text"],
        }
        for tag in sorted(by_tag)
        for p in by_tag[tag]
    ]


def review_items(predictions: Sequence[dict], k: int = 10) -> list[dict]:
    """Items sent to review, least confident first, with what the model would have said."""
    review = sorted((p for p in predictions if p["needs_review"]), key=lambda p: p["confidence"])
    return [
        {
            "gold": p["gold"],
            "top_class": p["predicted"],
            "confidence": p["confidence"],
            "text": p["text"],
        }
        for p in review[:k]
    ]


def weak_spots(run: Run, target: float = 0.85) -> list[str]:
    """Plain sentences for a product reader: where the model is below the bar or uncertain."""
    notes = []
    for r in per_tag_table(run.test):
        if r["ci_low"] is not None and r["ci_low"] < target and r["support"]:
            notes.append(
                f"{r['tag']}: precision {r['precision']:.0%}, but its 95% interval starts at "
                f"{r['ci_low']:.0%} ({r['support']} test items): not shown to be above "
                f"{target:.0%}."
            )
    for r in weakest_slices(run.test):
        notes.append(
            f"slice {r['slice']} ({r['n']} items): weighted F1 {r['f1_weighted']:.2f}, "
            f"the weakest of the slices with at least 30 items."
        )
    for c in top_confusions(run.test, 3):
        notes.append(f"{c['count']} test items of {c['gold']} were predicted {c['predicted']}.")
    head = headline(run, target)
    if head["coverage"] is not None and head["coverage"] < 0.8:
        notes.append(
            f"coverage {head['coverage']:.0%}: {1 - head['coverage']:.0%} of items go to a person."
        )
    return notes


def tag_distribution(splits: dict[str, list[dict]]) -> list[dict]:
    """Items per tag and split."""
    tags = sorted({it["tag"] for items in splits.values() for it in items})
    counts = {s: Counter(it["tag"] for it in items) for s, items in splits.items()}
    return [{"tag": t, **{s: counts[s].get(t, 0) for s in splits}} for t in tags]


def text_lengths(items: Sequence[dict]) -> dict[str, dict]:
    """Words per text (title + description) by tag: median, 90th percentile, max."""

    by_tag: dict[str, list[int]] = {}
    for it in items:
        by_tag.setdefault(it["tag"], []).append(len(it["text"].split()))
    return {
        tag: {
            "n": len(v),
            "median": float(np.median(v)),
            "p90": float(np.percentile(v, 90)),
            "max": int(max(v)),
        }
        for tag, v in sorted(by_tag.items())
    }


def length_histogram(items: Sequence[dict], path: str | Path | None = None):
    """Histogram of words per text, one series per tag (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    by_tag: dict[str, list[int]] = {}
    for it in items:
        by_tag.setdefault(it["tag"], []).append(len(it["text"].split()))
    ax.hist(list(by_tag.values()), bins=30, stacked=True, label=list(by_tag))
    ax.set_xlabel("words in title + description")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def duplicate_summary(data: Any) -> dict:
    """What the data module removed or grouped as duplicates (PreparedData)."""
    groups = data.near_duplicate_groups
    return {
        "exact_duplicates_removed": len(data.removed_duplicates),
        "near_duplicate_groups": len(groups),
        "items_in_near_groups": sum(len(g) for g in groups),
        "largest_group": max((len(g) for g in groups), default=0),
    }


def slice_sizes(items: Sequence[dict]) -> dict[str, int]:
    """Items in each content slice (the same slicing functions as evaluation)."""

    return {name: sum(REGISTRY[name].mask(items)) for name in content_slices()}


def top_terms(items: Sequence[dict], k: int = 8) -> dict[str, list[str]]:
    """The words most specific to each tag: highest mean TF-IDF within the tag minus the mean
    over the other tags (uni- and bigrams, English stop words removed)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [it["text"] for it in items]
    tags = np.array([it["tag"] for it in items])
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, stop_words="english", sublinear_tf=True)
    try:
        x = vec.fit_transform(texts)
    except ValueError:  # too few items for min_df
        vec = TfidfVectorizer(stop_words="english")
        x = vec.fit_transform(texts)
    vocab = np.array(vec.get_feature_names_out())
    out = {}
    for tag in sorted(set(tags)):
        inside = np.asarray(x[tags == tag].mean(axis=0)).ravel()
        rest = tags != tag
        outside = np.asarray(x[rest].mean(axis=0)).ravel() if rest.any() else 0.0
        out[tag] = vocab[np.argsort(-(inside - outside))[:k]].tolist()
    return out


def show_plot(run: Run, name: str):
    """A run's plot for a notebook cell (IPython Image), or a line saying it was not written."""
    from IPython.display import Image, Markdown

    path = run.plot(name)
    return Image(filename=str(path)) if path else Markdown(f"*no {name}.png in {run.folder}*")


def table(rows: Sequence[dict], digits: int = 3):
    """Rows as a pandas DataFrame when pandas is there (notebooks), else the rows."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with datasets
        return list(rows)
    return pd.DataFrame(list(rows)).round(digits)
