"""W&B logging of a training run: the tracker Accelerate opened, the summary metrics, the plots
and the model folder as an artifact. Offline by default (WANDB_MODE=offline), synced later.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import git_commit
from mltagger.data.prepare import PreparedData
from mltagger.evaluation.metrics import Metric

log = logging.getLogger(__name__)


def wandb_run(accelerator):
    """The wandb Run on the main process when W&B tracking is on, else None."""
    if not accelerator.is_main_process or not accelerator.log_with:
        return None
    return accelerator.get_tracker("wandb", unwrap=True)


def log_run_to_wandb(
    run,
    cfg,
    data: PreparedData,
    out_dir: Path,
    model_dir: Path,
    val_report,
    test_report,
    metrics: dict,
) -> None:
    """Summary, per-tag / per-slice / mistakes tables, plots and the dataset -> model artifacts."""
    if run is None:
        return
    import wandb

    run.summary.update(metrics)
    tables = {}
    fresh_path = out_dir / "fresh" / "metrics.json"
    fresh_report = json.loads(fresh_path.read_text()) if fresh_path.is_file() else None
    for split, report in (("val", val_report), ("test", test_report), ("fresh", fresh_report)):
        if report is not None:
            tables[f"{split}/per_tag"] = _per_tag_table(wandb, report)
            tables[f"{split}/per_slice"] = _per_slice_table(wandb, report)
    tables["test/mistakes"] = _mistakes_table(wandb, out_dir / "test" / "predictions.jsonl")
    run.log({**tables, **_images(wandb, out_dir)})

    meta = {"data_sha256": data.data_sha256, "git": git_commit()}
    dataset = _dataset_artifact(wandb, cfg, out_dir, meta)
    # Online, the dataset is an input of the run (lineage dataset -> run -> model); offline
    # runs cannot use artifacts, so it is logged as an output and synced as such.
    if run.settings.mode == "offline":
        run.log_artifact(dataset)
    else:
        run.use_artifact(dataset)
    run.log_artifact(_evaluation_artifact(wandb, run.id, out_dir, meta))
    if cfg.logger.wandb.log_model:
        model_art = wandb.Artifact(
            f"model-{cfg.model.name}", type="model", metadata=model_metadata(meta, metrics)
        )
        model_art.add_dir(str(model_dir))
        run.log_artifact(model_art, aliases=["latest"])


# W&B refuses an artifact with more than 100 metadata keys; the run summary keeps every figure.
METADATA_MAX = 100
_MODEL_FIGURES = ("test", "fresh", "gate", "threshold", "behavior")


def model_metadata(meta: dict, metrics: dict) -> dict:
    """The model artifact's metadata: its identity and the figures it is judged by (test, fresh,
    the gate, its thresholds, the behaviour suite), not every val and global-threshold figure
    of the run, which would pass W&B's limit of 100 keys (the run's summary has them all)."""
    out = {**meta}
    out.update(
        {k: v for k, v in metrics.items() if "/" not in k or k.split("/")[0] in _MODEL_FIGURES}
    )
    if len(out) > METADATA_MAX:  # said, not hidden: the run summary still has every figure
        keep = sorted(out, key=lambda k: (k not in meta, not k.startswith("fresh/"), k))
        log.warning("model artifact metadata: %d keys, W&B takes %d; left out: %s",
                    len(out), METADATA_MAX, ", ".join(keep[METADATA_MAX:]))  # fmt: skip
        out = {k: out[k] for k in keep[:METADATA_MAX]}
    return out


_PER_TAG_COLUMNS = [
    "tag",
    "precision",
    "recall",
    "f1",
    "support",
    "threshold",
    "auto_tagged",
    "auto_precision",
    "auto_precision_ci95_low",
    "auto_precision_ci95_high",
]


def _per_tag_table(wandb, report: dict):
    """One row per tag: its figures, its threshold and what was auto-tagged under it."""
    auto = (report["coverage"]["at_threshold"] or {}).get("per_class_auto", {})
    thr = report["coverage"]["threshold"]
    return wandb.Table(
        columns=_PER_TAG_COLUMNS,
        data=[
            [
                t,
                v["precision"],
                v["recall"],
                v["f1"],
                v["num_samples"],
                thr.get(t) if isinstance(thr, dict) else thr,
                auto.get(t, {}).get("num_auto"),
                auto.get(t, {}).get("precision"),
                (auto.get(t, {}).get("precision_ci95") or [None, None])[0],
                (auto.get(t, {}).get("precision_ci95") or [None, None])[1],
            ]
            for t, v in report["per_class"].items()
        ],
    )


def _per_slice_table(wandb, report: dict):
    """One row per slice of the report (mltagger.evaluation.slices)."""
    return wandb.Table(
        columns=[
            "slice",
            "num_samples",
            "noisy",
            "accuracy",
            "f1_weighted",
            "auto_precision",
            "coverage",
        ],
        data=[
            [
                n,
                s[Metric.NUM_SAMPLES],
                s["noisy"],
                s.get(Metric.ACCURACY),
                s.get(Metric.F1_WEIGHTED),
                (s.get("at_threshold") or {}).get(Metric.AUTO_PRECISION),
                (s.get("at_threshold") or {}).get(Metric.COVERAGE),
            ]
            for n, s in report["slices"].items()
        ],
    )


def _mistakes_table(wandb, predictions: Path):
    """The test items the model got wrong, from the run's predictions file."""
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    return wandb.Table(
        columns=["id", "text", "gold", "predicted", "confidence", "needs_review"],
        data=[
            [r["id"], r["text"], r["gold"], r["predicted"], r["confidence"], r["needs_review"]]
            for r in records
            if r["gold"] != r["predicted"]
        ],
    )


def _images(wandb, out_dir: Path) -> dict:
    """Every plot the run wrote, keyed as split/plot, and the training curves."""
    images = {
        f"{split}/{name}": wandb.Image(str(out_dir / split / f"{name}.png"))
        for split in ("val", "test", "fresh")
        for name in ("confusion_matrix", "precision_coverage", "reliability")
        if (out_dir / split / f"{name}.png").is_file()
    }
    images["training_curves"] = wandb.Image(str(out_dir / "training_curves.png"))
    return images


def _dataset_artifact(wandb, cfg, out_dir: Path, meta: dict):
    """The data files the run read and its split manifest, as one dataset artifact."""
    dataset = wandb.Artifact(f"data-{cfg.data.name}", type="dataset", metadata=meta)
    for src in cfg.data.sources:
        dataset.add_file(str(resolve_path(src.path, cfg.paths.root_dir)))
    dataset.add_file(str(out_dir / "split.json"))
    return dataset


def _evaluation_artifact(wandb, run_id: str, out_dir: Path, meta: dict):
    """The run's evaluation as files, so notebooks and reports can open a W&B run like a run
    folder (mltagger.reporting.analysis.load_run("wandb:entity/project/run_id"))."""
    evaluation = wandb.Artifact(f"evaluation-{run_id}", type="evaluation", metadata=meta)
    for name in ("metrics.json", "run_info.json", "config.yaml", "training_curves.png"):
        if (out_dir / name).is_file():
            evaluation.add_file(str(out_dir / name), name=name)
    for split in ("test", "fresh"):
        for path in sorted((out_dir / split).glob("*")):
            if path.is_file():
                evaluation.add_file(str(path), name=f"{split}/{path.name}")
    if (out_dir / "decision.json").is_file():
        evaluation.add_file(str(out_dir / "decision.json"), name="decision.json")
    return evaluation
