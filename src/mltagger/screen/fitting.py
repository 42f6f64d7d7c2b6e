"""Fitting and measuring the duplicate screen (`mltagger dedup-eval`); screening itself runs in
`mltagger.screen.screening`. Is a new item a copy of one already stored, or of one earlier in its
batch? Two stages, cheapest first:

1. exact: the same normalised text (sha256 of `mltagger.data.duplicates.dedup_key`) or the same
   link (`mltagger.screen.screening.url_key`), looked up in the store's indexes;
2. near: the lexical screen (`mltagger.screen.sketch`, `.index`, `.pairs`: its own sketch, FAISS
   index and calibrated pair model; nothing of the classifier), against stored items and earlier
   batch items.

The benchmark behind its threshold (`ScreenBench`, `make dedup-eval`) screens genuinely new items
against whole stores of 1k / 10k / 100k items and true copies of stored items
(`mltagger.screen.bench_data`); `mltagger.screen.copies.make_duplicate` makes the edited kinds of
copy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.errors import ConfigError, DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import content_hash
from mltagger.screen.index import ScreenIndex
from mltagger.screen.pairs import FEATURES, PairModel, best, candidates, pair_features
from mltagger.screen.screening import url_key
from mltagger.screen.sketch import LazyProfiles, Text, normalised, profile, sketch


def precision_recall(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """Precision/recall of `score >= threshold` as the duplicate call."""
    pred = scores >= threshold
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "threshold": float(threshold),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


EDITED_KINDS = ("format", "typos", "truncated", "reworded", "reposted")
ADJUDICATED_FILE = "data/dedup/adjudicated.json"


def query_key(q: dict) -> str:
    return f"{q['source']}:{q['ref']}"


def load_adjudicated(root=None) -> dict[str, dict]:
    """Queries a person read and found to be real copies of a stored item (a fork, a rename, the
    same project under another name): they are not genuinely new, so they leave the
    false-duplicate count (and are reported)."""

    path = resolve_path(ADJUDICATED_FILE, root)
    if not path.is_file():
        return {}
    decisions = json.loads(path.read_text())["decisions"]
    return {d["query"]: d for d in decisions if d["verdict"] == "copy"}


class ScreenBench:
    """One benchmark store, grown size by size, with every query's and copy's candidates and
    exact matches at each size (`rows[size]`)."""

    def __init__(self, bench, store: str, k: int = 5) -> None:
        self.bench, self.store, self.k = bench, store, k
        self.items = bench.stores[store]
        self.index = ScreenIndex()
        self.qp = [profile(q["title"], q["description"]) for q in bench.queries]
        self.cp = [profile(c["title"], c["description"]) for c in bench.copies]
        self.qs, self.cs = sketch(self.qp), sketch(self.cp)
        self.hashes: dict[str, int] = {}
        self.urls: dict[str, int] = {}
        self.rows: dict[int, dict] = {}

    def _exact(self, it: dict) -> int | None:
        found = self.hashes.get(content_hash(it["title"], it["description"] or ""))
        url = url_key(it.get("url"))
        if found is None and url:
            found = self.urls.get(url)
        return found

    def run(self, sizes) -> None:

        for size in sorted(sizes):
            new = range(len(self.index), min(size, len(self.items)))
            for start in tqdm(
                range(new.start, new.stop, 5000),
                desc=f"index {self.store} {size}",
                unit="5k",
                disable=len(new) < 20000,
            ):
                chunk = [self.items[i] for i in range(start, min(start + 5000, new.stop))]
                ids = list(range(start, start + len(chunk)))
                texts = [Text(normalised(it["title"], it["description"])) for it in chunk]
                self.index.add(
                    ids, sketch(texts), [(it["title"], it["description"]) for it in chunk]
                )
                for i, it in zip(ids, chunk, strict=True):
                    self.hashes.setdefault(content_hash(it["title"], it["description"] or ""), i)
                    url = url_key(it.get("url"))
                    if url:
                        self.urls.setdefault(url, i)
            self.rows[size] = {
                "stored": len(self.index),
                "queries": candidates(self.qp, self.qs, self.index, self.k, 0.0, False),
                "copies": candidates(self.cp, self.cs, self.index, self.k, 0.0, False),
                "query_exact": [self._exact(q) for q in self.bench.queries],
                "copy_exact": [self._exact(c) for c in self.bench.copies],
            }

    def screen_items(self, items, model) -> list[float]:
        """The whole screen for a batch, as the service runs it (for the cost figure)."""
        sketches = sketch([Text(normalised(it["title"], it["description"])) for it in items])
        cands = candidates(LazyProfiles(items), sketches, self.index, model.k, model.floor)
        for it in items:
            self._exact(it)
        return [best(model, c)[1] for c in cands]


def _scores(model, cands_per_item, exact) -> np.ndarray:
    """Each item's duplicate score: 1 for an exact match, else the best candidate's
    probability among candidates at or above the model's floor."""
    out = np.zeros(len(cands_per_item))
    for j, cands in enumerate(cands_per_item):
        if exact[j] is not None:
            out[j] = 1.0
            continue
        kept = [c for c in cands if c.sketch_similarity >= model.floor]
        if kept:
            out[j] = float(model.probability(np.stack([c.features for c in kept])).max())
    return out


def choose_floor(rows_list, split: str = "a", max_loss: float = 0.005) -> float:
    """The highest sketch similarity a candidate must reach (fewer candidates to rescore, a
    cheaper screen) at which at most `max_loss` of the edited copies of `split` lose their
    original from their candidates."""
    sims = []
    for rows, b in rows_list:
        for c, cands in zip(b.copies, rows["copies"], strict=True):
            if c["split"] == split and c["kind"] in EDITED_KINDS:
                own = [x.sketch_similarity for x in cands if x.item_id == c["of"]]
                if own:  # an original the index did not return is lost whatever the floor
                    sims.append(own[0])
    sims = np.array(sims)
    ok = [f for f in np.arange(0.30, 0.801, 0.05) if (sims < f).mean() <= max_loss]
    return round(float(max(ok)), 2) if ok else 0.0


def fit_pair_model(
    rows_list, split: str = "a", k: int = 5, floor: float = 0.3, features: Sequence[str] = ()
):
    """Logistic regression on split `split`: edited copies against their own original
    (positives) and genuinely new queries against each of their candidates (negatives); the
    floor is stored with it (candidates below it are never scored). `features` (names of
    `FEATURES`) fits on those alone, the others weighted 0 (ablations)."""
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ConfigError(f"unknown features {sorted(unknown)}; choose from {list(FEATURES)}")
    cols = [FEATURES.index(f) for f in features] if features else list(range(len(FEATURES)))
    from sklearn.linear_model import LogisticRegression

    adjudicated = load_adjudicated()
    X, y = [], []
    for rows, sb_bench in rows_list:
        for q, cands in zip(sb_bench.queries, rows["queries"], strict=True):
            if q["split"] == split and query_key(q) not in adjudicated:
                X += [c.features for c in cands if c.sketch_similarity >= floor]
                y += [0] * sum(c.sketch_similarity >= floor for c in cands)
        for c, cands in zip(sb_bench.copies, rows["copies"], strict=True):
            if c["split"] == split and c["kind"] in EDITED_KINDS:
                X += [x.features for x in cands if x.item_id == c["of"]]
                y += [1] * sum(x.item_id == c["of"] for x in cands)
    if 0 not in y or 1 not in y:
        raise DataError(
            f"split {split!r} gives no genuinely new candidates (or no copies) at floor {floor}: "
            "nothing to fit the pair model on"
        )
    lr = LogisticRegression(C=10.0, class_weight="balanced", max_iter=5000)
    lr.fit(np.stack(X)[:, cols], np.array(y))
    weights = np.zeros(len(FEATURES))
    weights[cols] = lr.coef_[0]
    return PairModel(weights, float(lr.intercept_[0]), 0.5, k, floor)


def choose_screen_threshold(model, rows_list, max_fdr: float, split: str = "a") -> float:
    """The lowest threshold at which, in every store, at most `max_fdr` of the genuinely new
    queries of `split` are called duplicates."""
    adjudicated = load_adjudicated()
    best = 0.0
    for rows, b in rows_list:
        keep = [
            j
            for j, q in enumerate(b.queries)
            if q["split"] == split and query_key(q) not in adjudicated
        ]
        scores = _scores(
            model, [rows["queries"][j] for j in keep], [rows["query_exact"][j] for j in keep]
        )
        allowed = int(np.floor(max_fdr * len(scores)))
        ranked = np.sort(scores)[::-1]
        best = max(best, float(ranked[allowed]) + 1e-6 if allowed < len(ranked) else 0.0)
    return min(best, 1.0)


def screen_rates(benches: dict, model, sizes, split: str = "b") -> dict:
    """False-duplicate rates, recall per kind, curves and flagged examples on `split`."""
    adjudicated = load_adjudicated()
    thr = model.threshold
    grid = np.round(np.linspace(0.05, 0.995, 96), 4)
    largest = max(sizes)
    out: dict = {
        "threshold": thr,
        "features": list(FEATURES),
        "split": split,
        "false_duplicates": [],
        "recall": [],
        "flagged_examples": [],
        "adjudicated_copies": sorted(adjudicated),
        "curve": {"thresholds": grid.tolist(), "false_duplicate_rate": {}, "recall": {}},
    }
    for name, sb in benches.items():
        queries, copies = sb.bench.queries, sb.bench.copies
        qmask = np.array([q["split"] == split for q in queries])
        adj = np.array([query_key(q) in adjudicated for q in queries])
        kinds = np.array([c["kind"] for c in copies])
        cmask = np.array([c["split"] == split for c in copies])
        for size in sorted(sizes):
            rows = sb.rows[size]
            qs = _scores(model, rows["queries"], rows["query_exact"])
            cs = _scores(model, rows["copies"], rows["copy_exact"])
            genuine = qmask & ~adj
            out["false_duplicates"].append(
                {
                    "store": name,
                    "stored": rows["stored"],
                    "queries": int(genuine.sum()),
                    "flagged": int((qs[genuine] >= thr).sum()),
                    "rate": float((qs[genuine] >= thr).mean()),
                    "adjudicated_copies": int((qmask & adj).sum()),
                    "median_score": float(np.median(qs[genuine])),
                }
            )
            in_store = np.array([c["of"] < rows["stored"] for c in copies])
            # the copies of each kind (and the edited kinds pooled) whose original is stored
            masks = {
                kind: cmask
                & in_store
                & (np.isin(kinds, EDITED_KINDS) if kind == "edited (pooled)" else kinds == kind)
                for kind in [*sorted(set(kinds)), "edited (pooled)"]
            }
            for kind, m in masks.items():
                if m.any():
                    out["recall"].append(
                        {
                            "store": name,
                            "stored": rows["stored"],
                            "kind": kind,
                            "copies": int(m.sum()),
                            "recall": float((cs[m] >= thr).mean()),
                        }
                    )
            if size == largest:
                out["curve"]["false_duplicate_rate"][f"{name} {rows['stored']}"] = [
                    float((qs[genuine] >= t).mean()) for t in grid
                ]
                for kind, m in masks.items():
                    out["curve"]["recall"][f"{name}: {kind}"] = [
                        float((cs[m] >= t).mean()) for t in grid
                    ]
                for j in np.flatnonzero(genuine & (qs >= thr)):
                    cands = [c for c in rows["queries"][j] if c.sketch_similarity >= model.floor]
                    top = (
                        rows["query_exact"][j]
                        if rows["query_exact"][j] is not None
                        else max(
                            cands, key=lambda c: model.probability(c.features[None])[0]
                        ).item_id
                    )
                    m_it = sb.items[top]
                    out["flagged_examples"].append(
                        {
                            "store": name,
                            "probability": float(qs[j]),
                            "query_key": query_key(queries[j]),
                            "query": f"{queries[j]['title']} :: {queries[j]['description']}",
                            "match": f"{m_it['title']} :: {m_it['description']}",
                        }
                    )
    return out


def pair_figures(pairs: Sequence[dict], model) -> dict:
    """The screen on labelled pairs (`build_eval_pairs`: an item and its edited copy, an item and
    a random or a hard same-tag neighbour): 1 for an exact match (text or link), else the pair
    model's probability when the sketches reach its floor, else 0; precision and recall at the
    model's threshold, and the share called duplicate per kind of pair."""
    scores = []
    for p in pairs:
        a, b = p["a"], p["b"]
        if content_hash(a["title"], a["description"]) == content_hash(b["title"], b["description"]):
            scores.append(1.0)
            continue
        pa, pb = profile(a["title"], a["description"]), profile(b["title"], b["description"])
        sa, sb = sketch([pa, pb])
        if float(sa @ sb) < model.floor:
            scores.append(0.0)
            continue
        scores.append(float(model.probability(pair_features(pa, pb)[None])[0]))
    scores = np.array(scores)
    truth = np.array([p["duplicate"] for p in pairs])
    kinds = np.array([p["kind"] for p in pairs])
    return {
        **precision_recall(scores, truth, model.threshold),
        "by_kind": {
            k: {
                "pairs": int((kinds == k).sum()),
                "called_duplicate": float((scores[kinds == k] >= model.threshold).mean()),
            }
            for k in sorted(set(kinds))
        },
    }


def dump_review(benches: dict, model: PairModel, size: int, path: Path) -> None:
    """Every query (both splits) whose best probability at store size `size` reaches 0.3 in any
    store, with its best match, written to `path` for a person to adjudicate (what
    `ADJUDICATED_FILE` records)."""
    seen: dict[str, dict] = {}
    for name, sb in benches.items():
        rows = sb.rows[size]
        for q, cands, exact in zip(
            sb.bench.queries, rows["queries"], rows["query_exact"], strict=True
        ):
            kept = [c for c in cands if c.sketch_similarity >= model.floor]
            probs = model.probability(np.stack([c.features for c in kept])) if kept else []
            if exact is not None:
                top, p = exact, 1.0
            elif len(probs) and probs.max() >= 0.3:
                top, p = kept[int(np.argmax(probs))].item_id, float(probs.max())
            else:
                continue
            key = query_key(q)
            if key not in seen or seen[key]["probability"] < p:
                m = sb.items[top]
                seen[key] = {
                    "query": key,
                    "store": name,
                    "probability": round(p, 4),
                    "split": q["split"],
                    "query_text": f"{q['title']} :: {q['description']}",
                    "match_text": f"{m['title']} :: {m['description']}",
                }
    path.write_text(json.dumps(sorted(seen.values(), key=lambda d: -d["probability"]), indent=1))
    print(f"{len(seen)} queries to adjudicate written to {path}")


def plot_curves(results: dict, path: Path) -> None:
    """`screen_rates`' curves: false-duplicate rate per store and recall per kind of copy
    against the threshold, with the chosen threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    thr = np.array(results["curve"]["thresholds"])
    for name, curve in results["curve"]["false_duplicate_rate"].items():
        axes[0].plot(thr, 100 * np.array(curve), label=f"store {name}")
    axes[0].axhline(0.5, color="grey", ls=":", label="target 0.5%")
    axes[0].axvline(results["threshold"], color="k", ls="--", label="chosen on split a")
    axes[0].set(
        xlabel="duplicate score threshold",
        ylabel="% of genuinely new items called duplicates",
        title="false duplicates (split b, 100k stores)",
    )
    axes[0].legend(fontsize=8)
    for kind, curve in results["curve"]["recall"].items():
        if kind.startswith("ml: "):  # the harder store; the other's curves lie on top of these
            axes[1].plot(thr, curve, label=kind[4:], lw=2.5 if "pooled" in kind else 1.2)
    axes[1].axhline(0.95, color="grey", ls=":", label="target 0.95")
    axes[1].axvline(results["threshold"], color="k", ls="--")
    axes[1].set(
        xlabel="duplicate score threshold",
        ylabel="recall",
        title="true copies caught, by kind (split b, ML store, 100k)",
    )
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
