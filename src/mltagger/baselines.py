"""Baselines every model is compared with: keyword rules, and TF-IDF + logistic regression.

Both expose fit(items, label_names) and predict_proba(items) -> (n, K) so they go through exactly
the evaluation the fine-tuned encoders go through. `python -m mltagger.baselines` (make baselines)
runs them on the configured data and writes one run folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class RuleTagger:
    """Scores each tag by keyword matches: the 'manual before ML' baseline.

    Probabilities are smoothed match counts, so a single weak hit is not a confident answer and no
    hit at all is a uniform score (the item goes to review at any sensible threshold).
    """

    def __init__(
        self,
        keywords: Mapping[str, Sequence[str]],
        title_weight: float = 2.0,
        smoothing: float = 0.1,
    ) -> None:
        if smoothing <= 0:
            raise ValueError("smoothing must be > 0 (it keeps every probability defined)")
        self.keywords = {tag: list(words) for tag, words in keywords.items()}
        self.title_weight = title_weight
        self.smoothing = smoothing
        self.patterns = {tag: self._compile(words) for tag, words in self.keywords.items()}
        self.label_names: list[str] = []

    @staticmethod
    def _compile(words: Sequence[str]) -> re.Pattern:
        parts = []
        for w in words:
            w = w.strip().lower()
            if w.endswith("*"):
                parts.append(re.escape(w[:-1]) + r"[\w-]*")
            else:
                parts.append(re.escape(w) + r"(?:s|es)?")
        return re.compile(r"(?<![\w-])(?:" + "|".join(parts) + r")(?![\w-])", re.IGNORECASE)

    def fit(self, items: Sequence[dict], label_names: Sequence[str]) -> RuleTagger:
        unknown = set(self.keywords) - set(label_names)
        if unknown:
            log.warning("keyword lists for tags the data does not have: %s", sorted(unknown))
        self.label_names = list(label_names)
        return self

    def scores(self, item: dict) -> np.ndarray:
        counts = np.zeros(len(self.label_names))
        for k, tag in enumerate(self.label_names):
            rx = self.patterns.get(tag)
            if rx is not None:
                counts[k] = self.title_weight * len(rx.findall(item["title"])) + len(
                    rx.findall(item["description"])
                )
        return counts

    def predict_proba(self, items: Sequence[dict]) -> np.ndarray:
        if not self.label_names:
            raise RuntimeError("call fit() before predict_proba()")
        counts = np.array([self.scores(it) for it in items]).reshape(len(items), -1)
        smoothed = counts + self.smoothing
        return smoothed / smoothed.sum(axis=1, keepdims=True)


class TfidfLogReg:
    """Word and character TF-IDF features with a class-weighted logistic regression."""

    def __init__(
        self,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] | None = (2, 5),
        min_df: int = 1,
        sublinear_tf: bool = True,
        C: float = 10.0,
        class_weight: str | None = "balanced",
        max_iter: int = 3000,
        seed: int = 0,
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        features = [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=tuple(word_ngrams),
                    min_df=min_df,
                    sublinear_tf=sublinear_tf,
                    lowercase=True,
                ),
            )
        ]
        if char_ngrams:
            features.append(
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=tuple(char_ngrams),
                        min_df=min_df,
                        sublinear_tf=sublinear_tf,
                        lowercase=True,
                    ),
                )
            )
        self.model = make_pipeline(
            FeatureUnion(features),
            LogisticRegression(
                C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed
            ),
        )
        self.label_names: list[str] = []

    def fit(self, items: Sequence[dict], label_names: Sequence[str]) -> TfidfLogReg:
        index = {t: i for i, t in enumerate(label_names)}
        self.model.fit([it["text"] for it in items], [index[it["tag"]] for it in items])
        self.label_names = list(label_names)
        return self

    def predict_proba(self, items: Sequence[dict]) -> np.ndarray:
        proba = self.model.predict_proba([it["text"] for it in items])
        # Classes absent from training get probability 0 in their column.
        out = np.zeros((len(items), len(self.label_names)))
        out[:, self.model.classes_] = proba
        return out


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def evaluate_model(model, data, eval_cfg, out_dir: Path, title: str) -> dict:
    """Fit on train, choose the review threshold on val, report val and test; return summaries."""
    from mltagger.evaluate import evaluate_val_test, summary_metrics

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
    from mltagger.evaluate import comparison_table as table

    return table({name: res["test"] for name, res in results.items()})


def run_baselines(cfg) -> dict[str, dict]:
    """Prepare data, then fit and evaluate each configured baseline into the run folder."""
    from hydra.utils import instantiate

    from mltagger.data import prepare_data
    from mltagger.evaluate import per_class_table
    from mltagger.run import write_run_info

    out_dir = Path(cfg.paths.output_dir)
    data = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=out_dir)
    write_run_info(out_dir, cfg, data.manifest())
    unknown = [name for name in cfg.run if name not in cfg.baselines]
    if unknown:
        raise ValueError(f"run lists unknown baselines {unknown}; known: {list(cfg.baselines)}")
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


def main() -> None:
    """Entry point (make baselines); returns the last baseline's test weighted F1 to Hydra."""
    from mltagger.cli import hydra_entry

    hydra_entry(
        "baselines", lambda cfg: run_baselines(cfg)[cfg.run[-1]]["summary"]["test/f1_weighted"]
    )


if __name__ == "__main__":
    main()
