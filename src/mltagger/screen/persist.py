"""The screen's index on disk, and the index a process serves from it.

On disk (`save`, `open_saved`): each save is a whole folder of its own (`v-...`, written under a
temporary name, its files synced, then renamed), published by replacing one small pointer file
(`current`) with `os.replace`. A crash at any point leaves the previous save published and
intact; a reader never sees a half-written index. The folder's `manifest.json` holds every file's
size and sha256 (a truncated or corrupt file is refused before FAISS reads it: FAISS may abort the
process on bad bytes rather than raise), the screen version and settings, and what the caller
says about the index's source (the service: the store's high-water mark and identity).

Served (`LayeredIndex`): the saved index memory-mapped read-only, so every process on the machine
that maps the same save shares one copy of its vectors, graph links, ids and texts (the page
cache's), plus a small private delta (a `ScreenIndex`: exact up to `EXACT_MAX` items) of the items
stored after the save. A query searches both and keeps the k most similar. The saved graph is the
one a full rebuild of the items up to its mark gives (`ScreenIndex`: the graph depends only on the
items' order), and the delta is searched exactly, so the answers are a function of the store and
the save's mark, the same in every process that serves that save.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mltagger.screen.index import ScreenIndex, auto_ef_search
from mltagger.screen.sketch import ScreenError

FORMAT = 1  # bump when the folder's layout or the manifest changes: older saves are rebuilt
POINTER = "current"
MANIFEST = "manifest.json"
LOCK = ".lock"
KEEP = 2  # saves kept: the published one and the one before (a process may still be opening it)


class SavedIndexError(ScreenError):
    """A saved index that must not be used as it is; the message says why, in one line."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(index: ScreenIndex, folder: str | Path, source: dict | None = None) -> Path:
    """Write `index` as a new save under `folder` and publish it (see the module doc); older
    saves but the one before are removed. `source`: what the caller checks at load (JSON)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
    tmp = folder / f".tmp-{name}"
    index.save(tmp)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in tmp.iterdir()}
    manifest = {
        "format": FORMAT,
        "settings": index._settings(),
        "kind": index.kind,
        "items": len(index),
        "max_id": index.max_id,
        "files": files,
        "source": source or {},
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for path in tmp.iterdir():
        _fsync(path)
    _fsync(tmp)
    os.rename(tmp, folder / name)
    pointer = folder / f".{POINTER}.{name}"
    pointer.write_text(name + "\n")
    _fsync(pointer)
    os.replace(pointer, folder / POINTER)
    _fsync(folder)
    _prune(folder)
    return folder / name


def _prune(folder: Path) -> None:
    """Remove all saves but the newest KEEP, and temporary folders older than a day (a writer
    that crashed); a process still mapping a removed file keeps its pages (Linux)."""
    saves = sorted((p for p in folder.glob("v-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in saves[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in folder.glob(".tmp-*"):
        if time.time() - tmp.stat().st_mtime > 86400:
            shutil.rmtree(tmp, ignore_errors=True)


def published(folder: str | Path) -> Path | None:
    """The save `folder`'s pointer names (None: nothing saved there yet)."""
    pointer = Path(folder) / POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not name.startswith("v-") or "/" in name:
        raise SavedIndexError(f"{pointer} does not name a save ({name[:40]!r})")
    return Path(folder) / name


def peek(folder: str | Path) -> dict | None:
    """The published save's manifest as written, its files unchecked (None: none readable)."""
    try:
        version = published(folder)
        return None if version is None else json.loads((version / MANIFEST).read_text())
    except (SavedIndexError, OSError, ValueError):
        return None


def read_manifest(version: Path) -> dict:
    """A save's manifest, its files checked against it (present, size, sha256)."""
    try:
        manifest = json.loads((version / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise SavedIndexError(f"{version.name} has no {MANIFEST}") from None
    except (ValueError, KeyError, TypeError):
        raise SavedIndexError(f"{version.name}/{MANIFEST} is unreadable") from None
    if manifest.get("format") != FORMAT:
        raise SavedIndexError(f"saved in format {manifest.get('format')}, not {FORMAT}")
    for name, want in sorted(files.items()):
        path = version / name
        if not path.is_file():
            raise SavedIndexError(f"{version.name}/{name} is missing")
        if path.stat().st_size != want["bytes"]:
            raise SavedIndexError(
                f"{version.name}/{name} has {path.stat().st_size} bytes, not {want['bytes']} "
                "(truncated or rewritten)"
            )
        if _sha256(path) != want["sha256"]:
            raise SavedIndexError(f"{version.name}/{name} does not match its sha256 (corrupt)")
    return manifest


def open_saved(folder: str | Path, *, mapped: bool, **settings) -> tuple[ScreenIndex, dict] | None:
    """The published save in `folder` and its manifest; None when nothing is saved there.
    Raises SavedIndexError (one line: why) for a save of another format, screen version or
    settings (`settings`: `ScreenIndex`'s keywords), or with a missing, truncated or corrupt
    file. `mapped`: read-only and shared (`ScreenIndex.load`), else a private copy that
    takes adds."""
    for attempt in range(3):
        version = published(folder)
        if version is None:
            return None
        try:
            manifest = read_manifest(version)
            break
        except SavedIndexError:
            # a writer may have published a newer save and pruned this one meanwhile
            if attempt == 2 or published(folder) == version:
                raise
    wanted = ScreenIndex(**settings)._settings()
    if manifest["settings"] != wanted:
        differ = sorted(k for k in wanted if manifest["settings"].get(k) != wanted[k])
        got = ", ".join(f"{k} {manifest['settings'].get(k)!r} not {wanted[k]!r}" for k in differ)
        raise SavedIndexError(f"saved with other screen settings ({got})")
    try:
        index = ScreenIndex.load(version, mapped=mapped, **settings)
    except (RuntimeError, ValueError, OSError, KeyError, ScreenError) as e:
        raise SavedIndexError(f"{version.name} cannot be read: {str(e).splitlines()[0]}") from e
    if len(index) != manifest["items"] or index.max_id != manifest["max_id"]:
        raise SavedIndexError(f"{version.name} holds other items than its manifest says")
    return index, manifest


@contextlib.contextmanager
def locked(folder: str | Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on `folder` among the processes of this machine (flock): one builds or
    writes while the others wait (`wait`) or go on without (yields False). Yields True without
    a lock where the folder cannot hold the lock file (a read-only shared volume)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = (folder / LOCK).open("a")
    except OSError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LayeredIndex:
    """A saved index mapped read-only (`base`, shared) and a private `delta` of the items stored
    after it, searched together (see the module doc). `ScreenIndex`'s interface, as the screen
    uses it."""

    def __init__(self, base: ScreenIndex, **settings) -> None:
        if not base.read_only:
            raise ValueError("the base of a LayeredIndex is a mapped (read-only) ScreenIndex")
        self.base = base
        self.delta = ScreenIndex(**settings)
        self._auto_ef = settings.get("ef_search") is None
        self._sync_ef()

    def __len__(self) -> int:
        return len(self.base) + len(self.delta)

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def ef_search(self) -> int:
        return self.base.ef_search

    @property
    def max_id(self) -> int | None:
        return self.delta.max_id if len(self.delta) else self.base.max_id

    def _sync_ef(self) -> None:
        # efSearch follows the whole index's size, as one graph of it would (a search
        # parameter, not part of the mapped data)
        if self._auto_ef and self.base._hnsw is not None:
            self.base._hnsw.hnsw.efSearch = auto_ef_search(len(self))

    def add(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        texts: Sequence[tuple[str, str | None]],
        progress: bool | None = None,
    ) -> None:
        """Items stored after the base's mark, into the delta."""
        if len(ids) and self.base.max_id is not None and min(ids) <= self.base.max_id:
            raise ValueError(f"ids up to {self.base.max_id} are in the saved index already")
        self.delta.add(ids, vectors, texts, progress)
        self._sync_ef()

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's k most similar of base and delta (ties: the base's, the older, first)."""
        ids, sims = self.base.search(vectors, k)
        if not len(self.delta):
            return ids, sims
        d_ids, d_sims = self.delta.search(vectors, k)
        ids, sims = np.concatenate([ids, d_ids], 1), np.concatenate([sims, d_sims], 1)
        order = np.argsort(-np.where(ids >= 0, sims, -np.inf), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)

    def text(self, item_id: int) -> tuple[str, str | None]:
        base_max = self.base.max_id
        if base_max is not None and int(item_id) <= base_max:
            return self.base.text(item_id)
        return self.delta.text(item_id)

    def memory(self) -> dict[str, int]:
        """Bytes of the shared (mapped) base and of this process's own delta."""
        return {
            "shared": sum(self.base.memory().values()),
            "delta": sum(self.delta.memory().values()),
        }
