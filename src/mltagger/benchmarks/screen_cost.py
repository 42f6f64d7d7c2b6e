"""What the duplicate screen costs next to tagging (`mltagger dedup-eval`'s cost table): the whole
screen per item at the largest benchmark store, alone and in batches of 32, beside the classifier's
forward pass on the same items, including the exact stage's query of a real (SQLite) store. Here
in `benchmarks` rather than in `mltagger.screen` because it opens a store.
"""

from __future__ import annotations

import tempfile

import numpy as np

from mltagger.data.duplicates import content_hash
from mltagger.data.text import item_text
from mltagger.screen.fitting import ScreenBench
from mltagger.screen.pairs import PairModel
from mltagger.screen.scale_bench import median_ms_per_item
from mltagger.screen.screening import fill_store, url_key
from mltagger.serving.store import Store


def measure_cost(sb: ScreenBench, model: PairModel, predictor, repeats: int) -> list[dict]:
    """Median ms per item of the screen and of the classifier's forward pass, alone and in
    batches of 32, on the same queries, with the largest store in the index."""

    queries = sb.bench.queries
    rng = np.random.default_rng(0)
    picks = [queries[i] for i in rng.choice(len(queries), 32 * repeats, replace=False)]
    for q in picks:
        q["text"] = item_text(q["title"], q["description"])
    lookup = store_lookup_ms(sb.items[: len(sb.index)], picks, repeats)
    rows = []
    for batch in (1, 32):
        chunks = [picks[i : i + batch] for i in range(0, len(picks), batch)]
        sb.screen_items(chunks[0], model)  # warm up
        screen_ms = median_ms_per_item(lambda c: sb.screen_items(c, model), chunks)
        entry = {
            "batch": batch,
            "stored": len(sb.index),
            "screen_ms_per_item": screen_ms + lookup[batch],
            "of_which_store_lookups_ms_per_item": lookup[batch],
        }
        if predictor is not None:
            predictor.encode([q["text"] for q in chunks[0]])
            entry["classifier_ms_per_item"] = median_ms_per_item(
                lambda c: predictor.encode([q["text"] for q in c]), chunks
            )
            entry["screen_share_of_classifier"] = (
                entry["screen_ms_per_item"] / entry["classifier_ms_per_item"]
            )
        rows.append(entry)
    return rows


def store_lookup_ms(stored: list[dict], picks: list[dict], repeats: int) -> dict[int, float]:
    """Median ms per item of the exact stage's store query (content hash or link key,
    `Store.ids_by_hash_or_url`), on a SQLite store holding the same items (what the service
    runs next to the screen)."""

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/lookup.db")
        fill_store(store, stored)

        def lookup(c: list[dict]) -> None:
            store.ids_by_hash_or_url(
                [content_hash(q["title"], q["description"] or "") for q in c],
                [url_key(q.get("url")) for q in c],
            )

        for batch in (1, 32):
            chunks = [picks[i : i + batch] for i in range(0, len(picks), batch)]
            lookup(chunks[0])
            out[batch] = median_ms_per_item(lookup, chunks)
        store.close()
    return out
