"""The evaluation plots people look at instead of reading tables. Drawn from a report dict only,
so any saved metrics.json can be re-plotted."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class _Pyplot:
    """matplotlib.pyplot on first use (Agg backend, no display needed): importing this module
    stays cheap for the jobs that only sometimes draw."""

    def __getattr__(self, name: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot

        return getattr(pyplot, name)


plt = _Pyplot()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) with raw counts in the cells."""
    cm = report["confusion_matrix"]
    labels, m = cm["labels"], np.array(cm["matrix"] or [[0]], dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 3, 0.9 * len(labels) + 2.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=9,
                )
    ax.set_xlabel("predicted (top class)")
    ax.set_ylabel("gold tag")
    ax.set_title(f"Confusion matrix {title}".strip())
    return _save(fig, Path(path))


def precision_coverage_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """Auto-tag precision and coverage against the review threshold, with the target marked."""
    cov = report["coverage"]
    curve = [r for r in cov["curve"] if r["precision"] is not None]
    t = [r["threshold"] for r in curve]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(t, [r["precision"] for r in curve], label="precision of auto-tagged", lw=2)
    ax.plot(t, [r["coverage"] for r in curve], label="coverage (auto-tagged share)", lw=2)
    ax.axhline(
        cov["precision_target"],
        ls="--",
        color="grey",
        label=f"precision target {cov['precision_target']:.2f}",
    )
    if isinstance(cov["threshold"], dict):  # per-tag thresholds: one tick per tag
        for k, (tag, thr) in enumerate(sorted(cov["threshold"].items(), key=lambda x: x[1])):
            if thr is not None and thr <= 1.0:
                ax.axvline(thr, ls=":", color="black", lw=0.8)
                ax.text(thr, 0.03 + 0.06 * k, tag, fontsize=6, rotation=0, ha="right")
    elif cov["threshold"] is not None:
        ax.axvline(
            cov["threshold"],
            ls=":",
            color="black",
            label=f"review threshold {cov['threshold']:.3f}",
        )
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Precision–coverage {title}".strip())
    return _save(fig, Path(path))


def reliability_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the perfect-calibration diagonal."""
    cal = report["calibration"]
    bins = [b for b in cal["bins"] if b["num_samples"]]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    if bins:
        centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = bins[0]["upper"] - bins[0]["lower"]
        ax.bar(
            centers,
            [b["accuracy"] for b in bins],
            width=width * 0.9,
            alpha=0.7,
            edgecolor="black",
            label="accuracy in bin",
        )
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o",
            color="C1",
            label="mean confidence",
        )
    ece = cal["ece"]
    ax.set_title(f"Reliability {title} (ECE {ece:.3f})".strip() if ece is not None else title)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, Path(path))


def training_curves(history: list[dict], monitor: str, path: str | Path) -> Path:
    """Training loss and the monitored validation metric per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(epochs, [h["train/epoch_loss"] for h in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h.get(monitor) for h in history], "s-", color="C1", label=monitor)
    ax2.set_ylabel(monitor)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    ax.set_title("Training")
    return _save(fig, Path(path))


def scope_tradeoff_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """Topic precision and coverage against out-of-scope items auto-tagged with a topic.

    One threshold moves all three; the applied threshold is marked, so a reader sees what a
    higher or lower one would buy and cost.
    """
    scope = report["scope"]
    curve = scope["curve"]
    t = [r["threshold"] for r in curve]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    prec = [r["topic_precision"] if r["topic_precision"] is not None else np.nan for r in curve]
    ax.plot(t, prec, label="topic items: auto-tag precision", lw=2)
    ax.plot(t, [r["topic_coverage"] for r in curve], label="topic items: coverage", lw=2)
    ax.plot(
        t,
        [r["oos_auto_topic"] for r in curve],
        label="out-of-scope items auto-tagged with a topic",
        lw=2,
        color="crimson",
    )
    applied = report["coverage"].get("threshold")
    if isinstance(applied, dict):  # the curve moves one global threshold; per-tag is not on it
        applied = None
    if applied is not None:
        ax.axvline(applied, color="grey", ls=":", label=f"applied threshold {applied:.2f}")
    ax.set_xlabel("review threshold (confidence)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Out-of-scope trade-off {title}".strip())
    return _save(fig, Path(path))
