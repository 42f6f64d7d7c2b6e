"""The duplicate screen's index as the service keeps it: saved in `dedup.index_dir`, checked
against the store, caught up, and shared by the workers of one machine.

At start (`open_index`), under a lock on the folder (the first worker of a machine builds or
checks while the others wait, then map what it saved): the published save
(`mltagger.screen.persist`) is used when it was made from this store, by this screen version and
settings, and every file matches its manifest; then only the items stored after its high-water
mark (the highest id it indexes) are added. Anything else is logged as one warning line that
says why, and the index is rebuilt from the store (in id order, as before) and saved.

"Made from this store" is read from the store itself, not from its URL (replicas reach one
PostgreSQL under different host names; an SQLite file can move): the mark must not be newer than
the store's newest item (else it is another or an older store, e.g. restored from a backup), the
content hashes of 16 indexed items spread over the ids must be the ones stored under those ids
(else another store), and no item up to the mark may lack a sketch of this screen version (a full
rebuild would index it, in its place). The URL (without password) is kept in the manifest for a
person.

`shared` (`dedup.index_shared`, the default): the save is mapped read-only and the items after its
mark go to a private delta (`mltagger.screen.persist.LayeredIndex`): the workers of a machine hold
one copy. Not shared: each worker reads its own copy and inserts the new items into the graph,
which then is exactly the graph a full rebuild gives.

Saves (`save_index`): after a rebuild; at stop (`Tagger.save_index`: the app's shutdown in each
`mltagger serve` worker, the process's exit for `mltagger ingest`), where a shared index's delta is
merged into a private copy of the save, in id order (so the new save is again what a full rebuild
gives), written beside it and published atomically; and at a shared start that finds more than
MERGE_AT new items (after a crash skipped the save at stop), once for the machine's workers.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from tqdm.auto import tqdm

from mltagger.core.paths import resolve_path
from mltagger.screen.index import EXACT_MAX, ScreenIndex
from mltagger.screen.persist import (
    LayeredIndex,
    SavedIndexError,
    locked,
    open_saved,
    peek,
    save,
)
from mltagger.screen.sketch import VERSION, Text, normalised, sketch
from mltagger.serving.store import Store, describe

log = logging.getLogger(__name__)

SAMPLES = 16  # indexed items whose content hashes identify the store
# ScreenIndex keywords of the service's index (none: the defaults). A save made with others is
# rebuilt; tests set a small graph here.
SETTINGS: dict = {}
AUTO = "auto"  # dedup.index_dir: beside an SQLite store's file, else var/screen-index
# A shared start that finds more new items than this merges them into the save first (under
# the folder's lock, once for the machine's workers), so the private deltas stay exact searches
# (ScreenIndex is exact up to EXACT_MAX): after a crash that skipped the save at exit, say.
MERGE_AT = EXACT_MAX
BEHIND = "behind"


def index_folder(where: str | None, store_url: str, root: str | Path | None = None) -> Path | None:
    """The folder `dedup.index_dir` names: None (null) saves nothing; `auto` puts the index
    beside an SQLite store's file (`var/mltagger.db` -> `var/mltagger.screen-index`: one folder
    per store, also for a test's throw-away store) and under `var/screen-index` for a server
    database; anything else is a folder (relative to the project root)."""
    if where is None:
        return None
    if where != AUTO:
        return resolve_path(where, root)
    url = sa.engine.make_url(store_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        db = Path(url.database)
        return db.with_name(f"{db.stem}.screen-index")
    return resolve_path("var/screen-index", root)


def index_options(cfg: Any) -> dict:
    """The Tagger keywords of the serve config's `dedup.index_dir` and `dedup.index_shared`, for
    the long-running commands (`mltagger serve`, `ingest`), which also save at exit."""
    root = cfg.paths.root_dir
    return {
        "index_dir": index_folder(cfg.dedup.get("index_dir", AUTO), str(cfg.store.url), root),
        "index_shared": bool(cfg.dedup.get("index_shared", True)),
        "save_at_exit": True,
    }


def sketch_unsketched(store: Store, rows: list[dict]) -> None:
    """Sketch items stored before the screen existed, or by another screen version, and store
    the sketches (once: the store then has them)."""
    if not rows:
        return
    log.info("sketching %d stored items for duplicate screen %s", len(rows), VERSION)
    for start in tqdm(range(0, len(rows), 1000), desc="sketch", unit="1k"):
        chunk = rows[start : start + 1000]
        vecs = sketch([Text(normalised(r["title"], r["description"])) for r in chunk])
        store.set_embeddings([r["id"] for r in chunk], vecs, VERSION)


def rebuild(store: Store) -> tuple[ScreenIndex, int]:
    """Every stored item's sketch into a new index, in id order; (index, highest id seen)."""
    stale = store.unsketched(VERSION)
    sketch_unsketched(store, stale)
    ids, vectors, texts, _ = store.screen_rows(VERSION)
    index = ScreenIndex(**SETTINGS)
    if ids:
        index.add(ids, vectors, texts)
    return index, max([*ids, *(int(r["id"]) for r in stale), 0])


def _sample(index: ScreenIndex | LayeredIndex) -> list[int]:
    base = index.base if isinstance(index, LayeredIndex) else index
    ids = base._ids.values
    if not len(ids):
        return []
    picks = np.unique(np.linspace(0, len(ids) - 1, SAMPLES).round().astype(int))
    return [int(ids[p]) for p in picks]


def store_source(store: Store, index: ScreenIndex) -> dict:
    """What a save records of its store: the marks `mismatch` checks, and the URL for people."""
    _, hashes = store.screen_marks(_sample(index))
    url = describe(store.url)
    return {
        "store": url,
        "store_url_sha256": hashlib.sha256(url.encode()).hexdigest()[:16],
        "content_hashes": {str(i): h for i, h in sorted(hashes.items())},
    }


def mismatch(store: Store, manifest: dict, unsketched: list[dict]) -> str | None:
    """Why a save cannot serve this store (None: it can); see the module doc."""
    mark = manifest["max_id"] or 0
    checks = {int(i): h for i, h in manifest["source"].get("content_hashes", {}).items()}
    newest, stored = store.screen_marks(checks)
    if mark > newest:
        return (
            f"it indexes items up to id {mark} but the store's newest is {newest} (another or an "
            f"older store; saved from {manifest['source'].get('store')})"
        )
    if manifest["items"] and not checks:
        return "its manifest records no content hashes of the store it was made from"
    for item_id, content in sorted(checks.items()):
        if stored.get(item_id) != content:
            return f"item {item_id} in the store is not the item it indexed (another store)"
    behind = [r["id"] for r in unsketched if r["id"] <= mark]
    if behind:
        return (
            f"{len(behind)} stored items up to its mark {mark} (first: {behind[0]}) have no "
            f"{VERSION} sketch, which a rebuild would index in their place"
        )
    return None


def _try_saved(store: Store, folder: Path, shared: bool) -> tuple[object, int] | str | None:
    """The save in `folder` caught up with the store; else why not (a line), BEHIND (a shared
    start with more than MERGE_AT new items: merge them into the save first), or None (nothing
    saved). Logs nothing: the caller says it once."""
    try:
        opened = open_saved(folder, mapped=shared, **SETTINGS)
    except SavedIndexError as e:
        return str(e)
    if opened is None:
        return None
    index, manifest = opened
    stale = store.unsketched(VERSION)
    why = mismatch(store, manifest, stale)
    if why is not None:
        return why
    sketch_unsketched(store, stale)
    ids, vectors, texts, last = store.screen_rows_after(manifest["max_id"] or 0, VERSION)
    if shared and len(ids) > MERGE_AT:
        return BEHIND
    served = LayeredIndex(index, **SETTINGS) if shared else index
    if ids:
        served.add(ids, vectors, texts)
    log.info(
        "screen index: %d items from %s (%s), %d stored since added",
        len(index), folder, "shared" if shared else "private", len(ids),
    )  # fmt: skip
    return served, last


def open_index(
    store: Store, folder: str | Path | None, shared: bool = True
) -> tuple[ScreenIndex | LayeredIndex, int]:
    """The index the screen serves and the highest store id it has seen (see the module doc);
    without a folder, rebuilt from the store as at every start before.

    The workers of a machine load a good save side by side; the lock on the folder is taken
    only to build, merge or save, and the others wait for it, then load what it saved."""
    if folder is None:
        return rebuild(store)
    folder = Path(folder)
    got = _try_saved(store, folder, shared)
    if isinstance(got, tuple):
        return got  # type: ignore[return-value]
    with locked(folder):
        got = _try_saved(store, folder, shared)  # another process may have saved meanwhile
        if got == BEHIND and _merge(store, folder):
            got = _try_saved(store, folder, shared)
        if isinstance(got, tuple):
            return got  # type: ignore[return-value]
        if got is None:
            log.info("no screen index saved in %s yet: building it from the store", folder)
        else:
            log.warning(
                "screen index in %s not used (%s): rebuilding it from the store", folder, got
            )
        index, seen = rebuild(store)
        if _save(store, index, folder) and shared:
            got = _try_saved(store, folder, shared)
            if isinstance(got, tuple):
                return got  # type: ignore[return-value]
    return index, seen


def _save(store: Store, index: ScreenIndex, folder: Path) -> bool:
    try:
        save(index, folder, store_source(store, index))
    except (OSError, RuntimeError) as e:  # FAISS raises RuntimeError when a write fails
        log.warning("screen index not saved in %s (%s)", folder, e)
        return False
    return True


def _merge(store: Store, folder: Path, base_max: int | None = None) -> bool:
    """A private copy of the save with the items stored after its mark inserted (in id order:
    the full rebuild's graph), saved. False if the save is not `base_max`'s any more (another
    process published a newer one) or cannot be read or written."""
    try:
        opened = open_saved(folder, mapped=False, **SETTINGS)
    except SavedIndexError as e:
        log.warning("screen index in %s not saved (%s)", folder, e)
        return False
    if opened is None or (base_max is not None and opened[0].max_id != base_max):
        return False
    merged = opened[0]
    ids, vectors, texts, _ = store.screen_rows_after(merged.max_id or 0, VERSION)
    log.info("screen index: merging %d items stored since the save into it", len(ids))
    if ids:
        merged.add(ids, vectors, texts)
    return _save(store, merged, folder)


def save_index(
    store: Store, index: ScreenIndex | LayeredIndex, folder: str | Path, shared: bool = True
) -> tuple[ScreenIndex | LayeredIndex, int] | None:
    """Save what `index` holds beyond the published save (nothing to do: None). A shared
    index's delta is merged into a private copy of its save first; then the new save is served
    (mapped). Skipped (None) while another process of the machine is saving."""
    folder = Path(folder)
    with locked(folder, wait=False) as mine:
        if not mine:
            return None
        saved = peek(folder)
        if saved is not None and saved["max_id"] == index.max_id:
            return None  # nothing new since the save
        if isinstance(index, LayeredIndex):
            if not _merge(store, folder, index.base.max_id):
                return None
        elif not _save(store, index, folder):
            return None
        got = _try_saved(store, folder, shared) if shared else None
        return got if isinstance(got, tuple) else None  # type: ignore[return-value]
