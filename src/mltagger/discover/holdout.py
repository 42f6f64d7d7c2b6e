"""`mltagger discover-eval`: does a topic the classifier never learned come back as one cluster?

For each of the six topics in turn: a classifier that never saw it (logistic regression on the
base encoder's embeddings of the default recipe's train split minus that topic's items; its
review threshold is the lowest where the precision of its applied tags on its own val split, the
val split minus that topic, reaches `discover.eval.precision`) replays a set of items; those it
tags `other` or sends to review form the window, exactly what `mltagger discover` reads from the
store; the window is clustered with the fixed parameters of conf/discover.yaml. The best cluster
for the held-out topic is the one holding most of its items; the topic is met when that cluster
holds >= 60% of ALL the topic's items in the replayed set (those the classifier placed elsewhere
count as missed) with purity >= 0.8.

Fine-tuning the transformer six times does not fit a 2-core machine, hence the frozen-embedding
classifier; it stands in for "the model without that topic", and its window is what matters.

`--replay val --select` replays the val split for every parameter set of `discover.eval.grid`:
how the parameters were chosen, before the fresh set was ever replayed. `--replay fresh` (the
default) is the measurement, with the parameters of `discover.cluster` only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from mltagger.core.config import compose_config
from mltagger.core.errors import user_errors
from mltagger.core.paths import resolve_path
from mltagger.core.runinfo import git_commit
from mltagger.data.prepare import prepare_data
from mltagger.discover.clusters import ClusterParams, cluster
from mltagger.evaluation.thresholds import choose_precision_threshold
from mltagger.models.encoder import sentence_embedder
from mltagger.models.rule import apply_threshold

TARGET_SHARE = 0.6
TARGET_PURITY = 0.8
TARGET_TOPICS = 5


@dataclass
class HeldOut:
    """One held-out topic's replay: the window's embeddings and gold tags, and how many of the
    topic's items the whole replayed set holds."""

    topic: str
    x: np.ndarray
    gold: np.ndarray
    n_topic: int
    threshold: float
    val_accuracy: float


def held_out_windows(
    emb: dict[str, np.ndarray],
    gold: dict[str, np.ndarray],
    replay: str,
    *,
    fallback: str = "other",
    precision: float = 0.85,
    c: float = 10.0,
) -> list[HeldOut]:
    """The window of each held-out topic (every tag but the fallback), replaying `replay`."""
    from sklearn.linear_model import LogisticRegression

    out = []
    for topic in sorted(set(gold["train"]) - {fallback}):
        keep = gold["train"] != topic
        model = LogisticRegression(C=c, max_iter=3000).fit(emb["train"][keep], gold["train"][keep])
        labels = [str(v) for v in model.classes_]
        vk = gold["val"] != topic
        pv = model.predict_proba(emb["val"][vk])
        correct = np.array(labels)[pv.argmax(axis=1)] == gold["val"][vk]
        thr = choose_precision_threshold(pv.max(axis=1), correct, precision)
        thr = 1.0 + 1e-9 if thr is None else thr  # no threshold reaches it: everything reviewed
        tags, _, review = apply_threshold(model.predict_proba(emb[replay]), labels, thr, fallback)
        window = (np.array(tags) == fallback) | review
        out.append(
            HeldOut(topic, emb[replay][window], gold[replay][window],
                    int((gold[replay] == topic).sum()), float(thr), float(correct.mean()))
        )  # fmt: skip
    return out


def best_cluster(labels: np.ndarray, gold: np.ndarray, topic: str, n_topic: int) -> dict:
    """The cluster holding most of `topic`'s items (ties: the purer), its share of all
    `n_topic` items and its purity; met when share >= 0.6 and purity >= 0.8."""
    best = {"cluster": None, "held": 0, "size": 0, "share": 0.0, "purity": 0.0}
    for k in sorted({int(v) for v in labels if v >= 0}):
        inside = labels == k
        held = int((gold[inside] == topic).sum())
        purity = held / int(inside.sum())
        if (held, purity) > (best["held"], best["purity"]):
            best = {"cluster": k, "held": held, "size": int(inside.sum()),
                    "share": held / max(n_topic, 1), "purity": purity}  # fmt: skip
    best["met"] = best["share"] >= TARGET_SHARE and best["purity"] >= TARGET_PURITY
    return best


def score(windows: Sequence[HeldOut], params: ClusterParams) -> dict:
    """Every held-out topic's best cluster under `params`, and how many met the target."""
    topics = []
    for w in windows:
        labels = cluster(w.x, params)
        b = best_cluster(labels, w.gold, w.topic, w.n_topic)
        in_window = int((w.gold == w.topic).sum())
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in b.items()}
        topics.append({"topic": w.topic, "window": len(w.gold), "in_window": in_window,
                       "n_topic": w.n_topic, "clusters": len(set(labels.tolist()) - {-1}),
                       "threshold": round(w.threshold, 4), "val_accuracy": round(w.val_accuracy, 4),
                       **rounded})  # fmt: skip
    met = sum(t["met"] for t in topics)
    closeness = float(
        np.mean([min(t["share"] / TARGET_SHARE, t["purity"] / TARGET_PURITY, 1.0) for t in topics])
    )
    return {"params": params.as_dict(), "met": met, "closeness": round(closeness, 4),
            "target_met": met >= TARGET_TOPICS, "topics": topics}  # fmt: skip


def grid(cfg) -> list[ClusterParams]:
    """The parameter sets of `discover.eval.grid`: each entry a mapping whose list values are
    crossed (a list of one value is that value)."""
    out: list[ClusterParams] = []
    for entry in cfg:
        combos: list[dict] = [{}]
        for key, values in dict(entry).items():
            vals = (
                list(values)
                if isinstance(values, Sequence) and not isinstance(values, str)
                else [values]
            )
            combos = [{**c, key: v} for c in combos for v in vals]
        out += [ClusterParams.from_config(c) for c in combos]
    return out


def embed_splits(cfg, names: Sequence[str]) -> tuple[dict, dict, str]:
    """Base-encoder embeddings and gold tags of the default recipe's splits (and the fresh set),
    cached under runs/discover-eval/ by data sha256 and encoder, since the train split takes
    minutes to embed on 2 cores."""
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    sets = {**data.splits, "fresh": data.fresh}
    gold = {n: np.array([i["tag"] for i in sets[n]]) for n in names}
    d = cfg.discover
    key = f"{data.data_sha256[:16]}_{Path(str(d.encoder)).name}"
    cache = resolve_path(f"runs/discover-eval/cache/{key}.npz", cfg.paths.root_dir)
    stored = dict(np.load(cache)) if cache.exists() else {}
    missing = [n for n in names if n not in stored]
    if missing:
        embed = sentence_embedder(str(d.encoder), max_length=int(d.max_length))
        for n in missing:
            stored[n] = embed([i["text"] for i in sets[n]])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return {n: stored[n] for n in names}, gold, data.data_sha256


def report(result: dict) -> str:
    """report.md of one evaluation run."""
    lines = [f"# discover-eval: held-out topics replayed on `{result['replay']}`", "",
             f"Target: for >= {TARGET_TOPICS} of 6 topics, one cluster with purity >= "
             f"{TARGET_PURITY} holds >= {TARGET_SHARE:.0%} of the topic's items.", ""]  # fmt: skip
    for r in result["runs"]:
        lines += [f"## `{r['params']}`", "", f"met {r['met']}/6 (target "
                  f"{'met' if r['target_met'] else 'missed'}); closeness {r['closeness']}", "",
                  "| topic | items | in window | window | clusters | best share | purity | met |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for t in r["topics"]:
            lines.append(f"| {t['topic']} | {t['n_topic']} | {t['in_window']} | {t['window']} | "
                         f"{t['clusters']} | {t['share']:.2f} | {t['purity']:.2f} | "
                         f"{'yes' if t['met'] else 'no'} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The job: parse, replay, write runs/discover-eval/<time>/{metrics.json,report.md}."""
    p = argparse.ArgumentParser(prog="mltagger discover-eval", description=__doc__.split("\n")[0])
    p.add_argument("--replay", choices=("val", "test", "fresh"), default="fresh")
    p.add_argument("--select", action="store_true", help="score every set of discover.eval.grid")
    p.add_argument("--output", help="run folder (default runs/discover-eval/<time>)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. discover.cluster.pca=10")
    args = p.parse_args(argv)
    started = time.perf_counter()
    with user_errors():
        cfg = compose_config("discover", args.overrides)
        ev = cfg.discover.eval
        params = grid(ev.grid) if args.select else [ClusterParams.from_config(cfg.discover.cluster)]
        emb, gold, sha = embed_splits(cfg, sorted({"train", "val", args.replay}))
    windows = held_out_windows(emb, gold, args.replay, precision=float(ev.precision), c=float(ev.c))
    runs = sorted((score(windows, q) for q in params), key=lambda r: (-r["met"], -r["closeness"]))
    result = {"replay": args.replay, "data_sha256": sha, "git": git_commit(),
              "classifier": {"c": float(ev.c), "precision": float(ev.precision)},
              "seconds": round(time.perf_counter() - started, 1), "runs": runs}  # fmt: skip
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out = Path(args.output) if args.output else resolve_path(f"runs/discover-eval/{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "report.md").write_text(report(result))
    best = runs[0]
    print(f"{args.replay}: {len(runs)} parameter set(s); best met {best['met']}/6 "
          f"({best['params']})")  # fmt: skip
    for t in best["topics"]:
        print(f"  {t['topic']}: share {t['share']:.2f} purity {t['purity']:.2f} "
              f"{'met' if t['met'] else 'missed'}")  # fmt: skip
    print(f"report: {out / 'report.md'}")
    return 0
