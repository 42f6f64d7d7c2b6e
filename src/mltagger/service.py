"""The product's one way to tag and store content, shared by the HTTP service and the batch job.

`Tagger` holds the model (loaded once), the store and the in-memory embedding index. For a
batch of items it runs one forward pass (tag scores and the screening embedding together),
screens duplicates against the store and within the batch, and either only answers
(`analyze`, for /predict) or also stores (`add`, for /items and `mltagger ingest`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mltagger.data import clean_text, join_text
from mltagger.dedup import (
    EXACT,
    Duplicate,
    EmbeddingIndex,
    content_hash,
    embedding_id,
    read_screen_threshold,
    screen,
)
from mltagger.store import MODEL, Store

log = logging.getLogger(__name__)

REJECT = "reject"
FLAG = "flag"
POLICIES = (REJECT, FLAG)


class ConfigError(ValueError):
    """A service setting that cannot work (e.g. no duplicate threshold for this model)."""


def prepare(title: str, description: str = "", url: str | None = None) -> dict:
    """An item as the model and the store see it: cleaned fields and the joined text."""
    title, description = clean_text(title), clean_text(description or "")
    return {
        "title": title,
        "description": description,
        "url": url,
        "text": join_text(title, description),
    }


@dataclass
class Outcome:
    """One item of an `add` call: stored (with its id) or refused as a duplicate."""

    stored: bool
    prediction: dict
    duplicate: Duplicate | None
    item_id: int | None = None


class Tagger:
    def __init__(
        self,
        predictor,
        store: Store,
        *,
        dedup: bool = True,
        near_threshold: float | None = None,
    ) -> None:
        self.predictor = predictor
        self.store = store
        self.dedup = dedup
        self.lock = threading.Lock()
        self.index: EmbeddingIndex | None = None
        self.near_threshold = 1.01
        self.embedding_model = embedding_id(predictor)
        if not dedup:
            return
        if near_threshold is None:
            near_threshold = read_screen_threshold(predictor.folder)
            if near_threshold is None:
                raise ConfigError(
                    f"{predictor.folder} has no calibrated near-duplicate threshold (dedup.json): "
                    "run `make dedup-eval MODEL=<folder> DEDUP_ARGS=--write` (exports get one from "
                    "`make export`), "
                    "or set dedup.near_threshold"
                )
        if not predictor.has_embeddings:
            raise ConfigError(
                f"{predictor.folder} gives no sentence embeddings (an export made before they "
                "were added): re-export it with `make export`, or set dedup.enabled=false"
            )
        self.near_threshold = float(near_threshold)
        self._load_index()

    def _load_index(self) -> None:
        """Stored embeddings into memory; items embedded by another model are re-embedded."""
        ids, vectors, stale = self.store.embeddings(self.embedding_model)
        if stale:
            from tqdm.auto import tqdm

            log.info("re-embedding %d stored items for %s", len(stale), self.embedding_model)
            for start in tqdm(range(0, len(stale), 256), desc="re-embed", unit="batch"):
                chunk = stale[start : start + 256]
                texts = [prepare(r["title"], r["description"])["text"] for r in chunk]
                vecs = self.predictor.embed(texts)
                self.store.set_embeddings([r["id"] for r in chunk], vecs, self.embedding_model)
            ids, vectors, _ = self.store.embeddings(self.embedding_model)
        dim = vectors.shape[1] if vectors is not None else self._dim()
        self.index = EmbeddingIndex(dim, capacity=max(1024, 2 * len(ids)))
        if ids:
            self.index.add(ids, vectors)

    def _dim(self) -> int:
        return int(self.predictor.embed(["dimension probe"]).shape[1])

    def analyze(self, items: Sequence[dict]) -> tuple[list[dict], list[Duplicate | None], dict]:
        """Predictions and duplicates for prepared items; nothing is stored."""
        texts = [it["text"] for it in items]
        logits, emb = self.predictor.encode(texts)
        preds = self.predictor.decide(items, self.predictor.probabilities(logits))
        hashes = [content_hash(it["title"], it["description"]) for it in items]
        if self.dedup:
            dups = screen(hashes, emb, self.store.ids_by_hash, self.index, self.near_threshold)
        else:
            dups = [None] * len(items)
        return preds, dups, {"hashes": hashes, "embeddings": emb}

    def add(
        self, items: Sequence[dict], *, source: str, policy: str = REJECT, skip_exact: bool = False
    ) -> list[Outcome]:
        """Screen, tag and store a batch in one transaction.

        policy=reject: a duplicate is not stored (the outcome names what it duplicates);
        policy=flag: it is stored with duplicate_of set. skip_exact: exact copies of stored items
        are never stored again, whatever the policy (what makes `mltagger ingest` idempotent).
        """
        if policy not in POLICIES:
            raise ConfigError(f"duplicate policy must be one of {POLICIES}, got {policy!r}")
        with self.lock:  # screen + insert as one step, so two requests cannot both add an item
            preds, dups, extra = self.analyze(items)
            rows: list[dict] = []
            positions: dict[int, int] = {}  # batch index -> its row in `rows` (stored items)

            def origin(j: int) -> tuple[str, int | None]:
                """What batch item j is or repeats: ("row", position) or ("id", stored id)."""
                if j in positions:
                    return "row", positions[j]
                dup = dups[j]
                return ("id", dup.item_id) if dup.item_id is not None else origin(dup.batch_index)

            for j, (it, pred, dup) in enumerate(zip(items, preds, dups, strict=True)):
                if dup is not None and (
                    policy == REJECT or (skip_exact and dup.kind == EXACT and dup.item_id)
                ):
                    continue
                row = {
                    "title": it["title"],
                    "description": it["description"],
                    "url": it.get("url"),
                    "content_hash": extra["hashes"][j],
                    "tag": pred["tag"],
                    "tagged_by": MODEL,
                    "model_version": pred["model_version"],
                    "confidence": pred["confidence"],
                    "reason": pred["reason"],
                    "scores": pred["scores"],
                    "needs_review": pred["needs_review"],
                    "source": source,
                    "embedding": None if extra["embeddings"] is None else extra["embeddings"][j],
                    "embedding_model": self.embedding_model,
                }
                if dup is not None:  # policy=flag: stored, pointing at what it repeats
                    kind, ref = (
                        ("id", dup.item_id) if dup.item_id is not None else origin(dup.batch_index)
                    )
                    row["duplicate_of" if kind == "id" else "duplicate_of_position"] = ref
                    row["duplicate_kind"] = dup.kind
                    row["duplicate_similarity"] = dup.similarity
                positions[j] = len(rows)
                rows.append(row)
            ids = self.store.add_items(rows)
            if self.index is not None and extra["embeddings"] is not None and ids:
                self.index.add(ids, np.asarray(extra["embeddings"])[list(positions)])

        def stored_id(j: int) -> int | None:
            kind, ref = origin(j)
            return ids[ref] if kind == "row" else ref

        outcomes = []
        for j, (pred, dup) in enumerate(zip(preds, dups, strict=True)):
            if dup is not None and dup.item_id is None:  # name the stored item it repeats
                dup = Duplicate(dup.kind, dup.similarity, item_id=stored_id(dup.batch_index))
            stored = j in positions
            outcomes.append(Outcome(stored, pred, dup, stored_id(j) if stored else None))
        return outcomes

    def health(self) -> dict:
        return {
            "model_version": self.predictor.inference.model_version,
            "backend": self.predictor.backend,
            "labels": list(self.predictor.labels),
            "duplicate_screen": {
                "enabled": self.dedup,
                "near_threshold": self.near_threshold if self.dedup else None,
                "indexed_items": len(self.index) if self.index is not None else 0,
            },
        }
