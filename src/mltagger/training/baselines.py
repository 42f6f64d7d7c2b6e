"""Baselines every model is compared with: keyword rules, and TF-IDF + logistic regression.

Both expose fit(items, label_names) and predict_proba(items) -> (n, K) so they go through exactly
the evaluation the fine-tuned encoders go through. `mltagger baselines` (make baselines)
runs them on the configured data and writes one run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hydra.utils import instantiate

from mltagger.core.runinfo import write_run_info
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.markdown import comparison_table as table
from mltagger.evaluation.markdown import per_class_table
from mltagger.evaluation.metrics import summary_metrics
from mltagger.evaluation.protocol import evaluate_val_test
from mltagger.training.config_rules import check_baselines_config


def evaluate_model(model, data, eval_cfg, out_dir: Path, title: str) -> dict:
    """Fit on train, choose the review threshold on val, report val and test; return summaries."""

    labels = data.label_names()
    model.fit(data.splits["train"], labels)
    val_report, test_report, _ = evaluate_val_test(
        data,
        labels,
        model.predict_proba(data.splits["val"]),
        model.predict_proba(data.splits["test"]),
        eval_cfg,
        out_dir,
        title,
    )
    return {
        "val": val_report,
        "test": test_report,
        "summary": {**summary_metrics(val_report, "val/"), **summary_metrics(test_report, "test/")},
    }


def comparison_table(results: Mapping[str, dict]) -> str:
    """Markdown: one row per baseline with its test headline figures."""

    return table({name: res["test"] for name, res in results.items()})


def run_baselines(cfg) -> dict[str, dict]:
    """Prepare data, then fit and evaluate each configured baseline into the run folder."""

    check_baselines_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    data = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=out_dir)
    write_run_info(out_dir, cfg, data.manifest())
    results = {}
    for name in cfg.run:
        model = instantiate(cfg.baselines[name], _convert_="all")
        results[name] = evaluate_model(model, data, cfg.eval, out_dir / name, f"baseline {name}")
        print(f"\n## {name} — test split ({len(data.splits['test'])} items)\n")
        print(per_class_table(results[name]["test"]))
    table = comparison_table(results)
    (out_dir / "comparison.md").write_text(f"# Baselines on the test split\n\n{table}\n")
    print(f"\n## Baselines compared (test split; threshold chosen on val)\n\n{table}\n")
    print(f"Run folder: {out_dir}")
    return results


def run(cfg) -> float:
    """`mltagger baselines`: every baseline; the last one's test weighted F1 goes to Hydra."""
    return run_baselines(cfg)[cfg.run[-1]]["summary"]["test/f1_weighted"]
