"""The product's one way to tag and store content, shared by the HTTP service and the batch job.

`Tagger` holds the model (loaded once), the store and the duplicate screen's index. For a batch
of items it runs one forward pass (tag scores, secondary tags), screens duplicates against the
store and within the batch with the lexical screen (`mltagger.screen`, independent of the
classifier), and either only answers (`analyze`, for /predict) or also stores (`add`).

What happens to a duplicate (`add`):
- an exact copy (same normalised text or same link) of a stored item or of an earlier item of the
  batch is not stored again: the item already is (`Outcome.stored` False, the id it repeats);
- a near duplicate is stored, `status="duplicate"` (held out of what is published),
  `duplicate_of` set and `needs_review`, so a person decides; nothing is lost for a guess.
  With policy `reject` (POST /items only) it is refused instead and the caller gets the id.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mltagger.core.errors import ConfigError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import content_hash
from mltagger.data.text import clean_text, join_text
from mltagger.models.rule import AUTO_REASONS
from mltagger.screen.index import ScreenIndex
from mltagger.screen.pairs import CALIBRATION_FILE, PairModel, load_model
from mltagger.screen.persist import LayeredIndex
from mltagger.screen.screening import EXACT, Duplicate, screen_batch, url_key
from mltagger.screen.sketch import VERSION, ScreenError
from mltagger.serving.rollout import (
    RELOAD_SECONDS,
    SHADOW,
    Rollout,
    ShadowWorker,
    audit_pick,
    deployed,
    store_rollout,
)
from mltagger.serving.screen_files import open_index, save_index
from mltagger.serving.store import ACTIVE, HELD_DUPLICATE, MODEL, Store
from mltagger.serving.tag_list import admit_start

log = logging.getLogger(__name__)

REJECT = "reject"
FLAG = "flag"
POLICIES = (FLAG, REJECT)
# outcomes of `add`, counted by the ingest summary and /metrics
STORED = "stored"
HELD = "stored_held_duplicate"
SKIPPED_EXACT = "skipped_exact_copy"
REJECTED_NEAR = "rejected_near_duplicate"
OUTCOMES = (STORED, HELD, SKIPPED_EXACT, REJECTED_NEAR)


def check_policy(policy: str) -> str:
    """The one rule of `dedup.on_duplicate` (the serve config's rule table names POLICIES too)."""
    if policy not in POLICIES:
        raise ConfigError(f"dedup.on_duplicate must be one of {POLICIES}, got {policy!r}")
    return policy


def prepare(
    title: str, description: str = "", url: str | None = None, author_tag: str | None = None
) -> dict:
    """An item as the model and the store see it: cleaned fields and the joined text, and the
    tag its author chose, if any (already checked against the approved tags)."""
    title, description = clean_text(title), clean_text(description or "")
    return {
        "title": title,
        "description": description,
        "url": url,
        "author_tag": author_tag,
        "text": join_text(title, description),
    }


def _brief(pred: dict) -> dict:
    """What is kept of the other model's answer under a rollout (items.shadow)."""
    return {k: pred[k] for k in ("model_version", "tag", "confidence", "needs_review")}


@dataclass
class Outcome:
    """One item of an `add` call: what happened (`outcome`), its id when stored, what it repeats."""

    stored: bool
    prediction: dict
    duplicate: Duplicate | None
    item_id: int | None = None
    outcome: str = STORED


class Tagger:
    batcher = None  # a serving.batching.MicroBatcher: concurrent requests share forward passes

    def __init__(
        self,
        predictor,
        store: Store,
        *,
        dedup: bool = True,
        near_threshold: float | None = None,
        screen_file: str | Path | None = None,
        candidate=None,
        rollout: Rollout | None = None,
        audit_share: float = 0.0,
        model_link: str | Path | None = None,
        loader: Callable[[Path], object] | None = None,
        index_dir: str | Path | None = None,
        index_shared: bool = True,
        save_at_exit: bool = False,
    ) -> None:
        self.predictor = predictor
        self.store = store
        self.dedup = dedup
        # A candidate beside the current model (shadow or canary), the audit share, and where the
        # current model comes from, so a promote or rollback is picked up without a restart.
        self.candidate = candidate
        self.rollout = rollout or Rollout(SHADOW)
        self.audit_share = float(audit_share)
        self.model_link = Path(model_link) if model_link is not None else None
        self.loader = loader
        self._serving = (
            Path(predictor.folder).resolve()
            if getattr(predictor, "folder", None) is not None
            else self.model_link.resolve()
            if self.model_link is not None
            else None
        )
        self.tags = admit_start(store.engine, predictor)  # the store's tag list must accept it
        self._checked = time.monotonic()
        self._rollout_row: int | None = None  # the store's rollout row this worker follows
        self.shadow = ShadowWorker()
        self._index_lock = threading.Lock()  # FAISS: no search while another thread adds
        self._synced = 0
        self.index: ScreenIndex | LayeredIndex | None = None
        self.index_dir, self.index_shared = index_dir, index_shared  # serving.screen_files
        self.model: PairModel | None = None
        self.screen_file = screen_file
        if not dedup:
            return
        if screen_file is None:  # the shipped calibration
            screen_file = self.screen_file = resolve_path(CALIBRATION_FILE)
        try:
            model = load_model(screen_file)
        except ScreenError as e:
            raise ConfigError(str(e)) from None
        if near_threshold is not None:
            model = PairModel(
                model.weights, model.bias, float(near_threshold), model.k, model.floor
            )
        self.model = model
        # The saved index caught up with the store, else rebuilt from it and saved; the model
        # plays no part: a new model never re-screens the store.
        self.index, self._synced = open_index(store, index_dir, index_shared)
        if save_at_exit and index_dir is not None:  # `mltagger ingest` (serve: the app's stop)
            atexit.register(self.save_index)

    @property
    def near_threshold(self) -> float | None:
        return self.model.threshold if self.model is not None else None

    def save_index(self) -> None:
        """Save the index, caught up with the store, in `index_dir` (at shutdown or exit)."""
        if self.index is not None and self.index_dir is not None:
            with self._index_lock:
                self._sync_index()
                got = save_index(self.store, self.index, self.index_dir, self.index_shared)
                self.index, self._synced = got or (self.index, self._synced)

    def _sync_index(self) -> None:
        """Add what was stored since the index last looked: by this worker, by other workers or
        replicas, or by `mltagger ingest`. One indexed query (`id > last seen`) per call.

        Every writer stores under `Store.exclusive`, so ids become visible in order: once id n
        is seen, no smaller id can still appear."""
        if self.index is None:
            return
        ids, vectors, texts, last = self.store.screen_rows_after(self._synced, VERSION)
        if ids:
            self.index.add(ids, vectors, texts)
        self._synced = last

    def maybe_reload(self) -> None:
        """Load the model that should serve now, if a promote or rollback moved it (checked at
        most every RELOAD_SECONDS): the newest deployment recorded in the store, so every worker
        and replica follows one promote; without one, the model_dir link. A candidate that
        became the current model is dropped: nothing is left to compare."""
        if self.loader is None:
            return
        if time.monotonic() - self._checked < RELOAD_SECONDS:
            return
        self._checked = time.monotonic()
        self._follow_rollout()
        target = self.wanted_model()
        if target is None or target == self._serving or not self.tags.serves(target):
            return
        log.info("now serving %s (promote or rollback): loading it", target)
        self.predictor = self.loader(target)
        self._serving = target
        if self.candidate is not None and Path(self.candidate.folder).resolve() == target:
            self.candidate = None

    def reload_now(self) -> None:
        """maybe_reload without waiting for RELOAD_SECONDS (batch jobs and replays)."""
        self._checked = float("-inf")
        self.maybe_reload()

    def _follow_rollout(self) -> None:
        """Run the candidate the store's newest rollout row names (`mltagger cycle` sets it)."""
        got = store_rollout(
            self.store.engine,
            self._rollout_row,
            self.candidate,
            list(self.predictor.labels),
            self.loader,
        )
        if got is not None:
            self._rollout_row, self.candidate, rollout = got
            self.rollout = rollout or self.rollout

    def wanted_model(self) -> Path | None:
        """What should serve: the store's newest deployment, else where the link points."""
        recorded = deployed(self.store.engine)
        if recorded is not None:
            return recorded.resolve()
        return self.model_link.resolve() if self.model_link is not None else None

    def _predict(self, predictor, items: Sequence[dict], texts: list[str]) -> list[dict]:
        batcher = self.batcher
        logits, _ = batcher.encode(predictor, texts) if batcher else predictor.encode(texts)
        return predictor.decide(items, predictor.probabilities(logits))

    def _split_predict(self, items, texts, picks, when_picked, otherwise) -> list[dict]:
        """`when_picked` answers the items whose pick is true, `otherwise` the rest."""
        out: list = [None] * len(items)
        for model, want in ((when_picked, True), (otherwise, False)):
            idx = [i for i, p in enumerate(picks) if p is want]
            if idx:
                preds = self._predict(model, [items[i] for i in idx], [texts[i] for i in idx])
                for i, pred in zip(idx, preds, strict=True):
                    out[i] = pred
        return out

    def _store_shadow(self, ids: list[int], kept: list[int], compute: Callable) -> None:
        answers = compute()
        self.store.set_shadow(ids, [_brief(answers[j]) for j in kept])

    def wait_for_shadow(self) -> None:
        """Wait until the other model's answers of everything added so far are stored."""
        self.shadow.wait()

    def _tag(self, items: Sequence[dict]) -> tuple[list[dict], list[str], Callable | None]:
        """Predictions (one forward pass per item, by the model that answers it), the items'
        content hashes, and under a rollout a function computing the other model's answers."""
        self.maybe_reload()
        texts = [it["text"] for it in items]
        hashes = [content_hash(it["title"], it["description"]) for it in items]
        other = None
        if self.candidate is None:
            preds = self._predict(self.predictor, items, texts)
        else:
            current, candidate = self.predictor, self.candidate
            picks = [self.rollout.serves_candidate(h) for h in hashes]
            preds = self._split_predict(items, texts, picks, candidate, current)

            def other() -> list[dict]:
                return self._split_predict(items, texts, picks, current, candidate)

        return preds, hashes, other

    def _screen(self, items: Sequence[dict], hashes: list[str]) -> tuple[list, np.ndarray | None]:
        if not self.dedup:
            return [None] * len(items), None
        with self._index_lock:
            self._sync_index()
            return screen_batch(
                items, hashes, self.store.ids_by_hash_or_url, self.index, self.model
            )

    def analyze(self, items: Sequence[dict]) -> tuple[list[dict], list[Duplicate | None], dict]:
        """Predictions and duplicates for prepared items; nothing is stored.

        Each item costs one forward pass on the request path, by the model that answers it (the
        candidate for its canary share). Under a rollout, `extra["other"]` is a function that
        computes the other model's answers: `add` and `/predict` hand it to the shadow worker."""
        preds, hashes, other = self._tag(items)
        dups, sketches = self._screen(items, hashes)
        return preds, dups, {"hashes": hashes, "sketches": sketches, "other": other}

    def add(
        self,
        items: Sequence[dict],
        *,
        source: str,
        policy: str = FLAG,
        written_by: str | None = None,
    ) -> list[Outcome]:
        """Screen, tag and store a batch in one transaction (see the module docstring for what
        happens to duplicates).

        The forward pass runs first, outside any lock; the screen and the insert run inside
        `Store.exclusive()`, so workers and replicas over one store screen against everything
        stored before them and two copies of one item can never both be stored as new."""
        check_policy(policy)
        preds, hashes, other = self._tag(items)
        with self.store.exclusive() as conn:
            dups, sketches = self._screen(items, hashes)
            extra = {"hashes": hashes, "sketches": sketches, "other": other}
            rows: list[dict] = []
            positions: dict[int, int] = {}  # batch index -> its row in `rows` (stored items)

            def origin(j: int) -> tuple[str, int | None]:
                """What batch item j is or repeats: ("row", position) or ("id", stored id)."""
                if j in positions:
                    return "row", positions[j]
                dup = dups[j]
                return ("id", dup.item_id) if dup.item_id is not None else origin(dup.batch_index)

            for j, (it, pred, dup) in enumerate(zip(items, preds, dups, strict=True)):
                if dup is not None and (dup.kind == EXACT or policy == REJECT):
                    continue
                row = {
                    "title": it["title"],
                    "description": it["description"],
                    "url": it.get("url"),
                    "url_key": url_key(it.get("url")),
                    "content_hash": extra["hashes"][j],
                    "tag": pred["tag"],
                    "tagged_by": MODEL,
                    "model_version": pred["model_version"],
                    "confidence": pred["confidence"],
                    "reason": pred["reason"],
                    "scores": pred["scores"],
                    "needs_review": pred["needs_review"],
                    "secondary_tags": [t["tag"] for t in pred.get("tags", [])[1:]] or None,
                    "model_tag": pred["tag"],
                    "author_tag": it.get("author_tag"),
                    "status": ACTIVE,
                    "source": source,
                    "written_by": written_by,
                    "embedding": None if extra["sketches"] is None else extra["sketches"][j],
                    "embedding_model": VERSION if extra["sketches"] is not None else None,
                }
                if (
                    dup is None
                    and pred["reason"] in AUTO_REASONS
                    and audit_pick(extra["hashes"][j], self.audit_share)
                ):  # auto-tagged and drawn for the audit: published, and a person checks it
                    row["audit"] = True
                    row["needs_review"] = True
                if dup is not None:  # a near duplicate: stored, held, for a person to decide
                    kind, ref = (
                        ("id", dup.item_id) if dup.item_id is not None else origin(dup.batch_index)
                    )
                    row["duplicate_of" if kind == "id" else "duplicate_of_position"] = ref
                    row["duplicate_kind"] = dup.kind
                    row["duplicate_similarity"] = dup.similarity
                    row["status"] = HELD_DUPLICATE
                    row["needs_review"] = True
                positions[j] = len(rows)
                rows.append(row)
            ids = self.store.add_items(rows, conn=conn)
            if extra["other"] is not None and ids:
                # Bound now (partial): the job runs later, after this function has moved on.
                self.shadow.submit(
                    partial(self._store_shadow, list(ids), list(positions), extra["other"])
                )

        def stored_id(j: int) -> int | None:
            kind, ref = origin(j)
            return ids[ref] if kind == "row" else ref

        outcomes = []
        for j, (pred, dup) in enumerate(zip(preds, dups, strict=True)):
            if dup is not None and dup.item_id is None:  # name the stored item it repeats
                dup = Duplicate(
                    dup.kind, dup.similarity, item_id=stored_id(dup.batch_index), how=dup.how
                )
            stored = j in positions
            if stored:
                outcome = HELD if dup is not None else STORED
            else:
                outcome = SKIPPED_EXACT if dup.kind == EXACT else REJECTED_NEAR
            if stored and dup is not None:
                pred = {**pred, "needs_review": True}
            outcomes.append(Outcome(stored, pred, dup, stored_id(j) if stored else None, outcome))
        return outcomes

    def health(self) -> dict:
        return {
            "model_version": self.predictor.inference.model_version,
            "backend": self.predictor.backend,
            "labels": list(self.predictor.labels),
            "candidate": None
            if self.candidate is None
            else {
                "model_version": self.candidate.inference.model_version,
                "rollout": str(self.rollout),
            },
            "audit_share": self.audit_share,
            "gate_threshold": self.predictor.inference.gate_threshold,
            "duplicate_screen": {
                "enabled": self.dedup,
                "version": VERSION if self.dedup else None,
                "near_threshold": self.near_threshold,
                "calibration": str(self.screen_file) if self.dedup else None,
                "indexed_items": len(self.index) if self.index is not None else 0,
            },
        }
