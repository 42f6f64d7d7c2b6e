"""The service's screen index across restarts, workers and replicas
(`mltagger.serving.screen_files`): a save that matches the store is loaded and caught up, and
gives what a full rebuild gives; one that does not is named in one warning line, rebuilt and
never used as it is. Real SQLite stores in tmp dirs, a small graph (20 items exact, then HNSW)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError
from mltagger.screen import persist
from mltagger.screen.persist import LayeredIndex
from mltagger.screen.sketch import Text, normalised, sketch
from mltagger.serving import screen_files
from mltagger.serving.config_rules import check_serve_config
from mltagger.serving.screen_files import AUTO, index_folder, index_options
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from mltagger.serving.tables import items
from tests.conftest import REPO
from tests.fakes import FakePredictor, make_model_folder, write_screen

GRAPH = {"m": 4, "ef_construction": 8, "ef_search": 8, "exact_max": 20}
LOGGER = "mltagger.serving.screen_files"


@pytest.fixture(autouse=True)
def small_graph(monkeypatch):
    monkeypatch.setattr(screen_files, "SETTINGS", dict(GRAPH))


def _texts(seed: int, n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice(list("abcdefghijklmnop"), size=6)) for _ in range(800)]
    return [
        (" ".join(rng.choice(vocab, 2)), " ".join(rng.choice(vocab, int(rng.integers(10, 18)))))
        for _ in range(n)
    ]


@pytest.fixture
def make(tmp_path):
    """Taggers over SQLite stores in tmp_path (several may share one store or one folder)."""
    model, screen = make_model_folder(tmp_path / "model"), write_screen(tmp_path / "screen.json")
    stores = []

    def tagger(db: str = "store.db", folder="index", shared: bool = True) -> Tagger:
        store = Store(f"sqlite:///{tmp_path / db}")
        stores.append(store)
        return Tagger(
            FakePredictor(model),
            store,
            screen_file=screen,
            index_dir=None if folder is None else tmp_path / folder,
            index_shared=shared,
        )

    yield tagger
    for store in stores:
        store.close()


def _store(tagger: Tagger, texts: list[tuple[str, str]]) -> None:
    for title, description in texts:  # one a call: each is screened against all before it
        tagger.add([prepare(title, description)], source="test")


def _same(a, b, queries: np.ndarray) -> bool:
    (ai, asim), (bi, bsim) = a.search(queries, 5), b.search(queries, 5)
    return np.array_equal(ai, bi) and np.allclose(asim, bsim, atol=1e-6)


def _queries(texts) -> np.ndarray:
    near = [(t, d.rsplit(" ", 2)[0]) for t, d in texts]  # the last two words cut
    return sketch([Text(normalised(t, d)) for t, d in texts + near])


@pytest.mark.parametrize("shared", [True, False])
def test_a_restart_loads_the_save_and_adds_only_the_newer_items(make, caplog, shared):
    texts = _texts(1, 60)
    first = make(shared=shared)
    _store(first, texts[:40])  # past exact_max: a graph
    first.save_index()
    _store(first, texts[40:])
    caplog.set_level(logging.INFO, LOGGER)
    restarted = make(shared=shared)  # loads the save, adds the 20 items stored after it
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "20 stored since added" in caplog.text
    assert len(restarted.index) == 60 and restarted._synced == 60
    assert isinstance(restarted.index, LayeredIndex) == shared
    rebuilt, _ = screen_files.rebuild(restarted.store)
    queries = _queries(texts)
    if not shared:  # the new items inserted into the loaded graph: the full rebuild's graph
        assert _same(restarted.index, rebuilt, queries)
    # shared: every worker serving that save answers alike; saved at stop, the delta is merged
    # in id order, so the new save is the full rebuild's graph
    assert _same(restarted.index, make(shared=shared).index, queries)
    restarted.save_index()
    merged, manifest = persist.open_saved(restarted.index_dir, mapped=True, **GRAPH)
    assert manifest["max_id"] == 60 and _same(merged, rebuilt, queries)
    if shared:
        assert restarted.index.base.max_id == 60 and not len(restarted.index.delta)
    # a duplicate stored after the save is found by the restarted worker
    (out,) = restarted.add([prepare(texts[55][0], texts[55][1].rsplit(" ", 2)[0])], source="t")
    assert out.duplicate is not None and out.duplicate.item_id == 56


def test_the_first_start_builds_and_saves_and_a_stop_with_nothing_new_writes_nothing(make):
    texts = _texts(2, 30)
    _store(make(folder=None), texts)  # items stored before the index had a folder
    tagger = make()
    saved = persist.published(tagger.index_dir)
    assert saved is not None and isinstance(tagger.index, LayeredIndex)
    assert tagger.index.base.max_id == 30 and not len(tagger.index.delta)
    tagger.save_index()
    assert persist.published(tagger.index_dir) == saved


def _newer_than_store(tmp_path, make) -> None:
    """The store restored from a backup older than the save."""
    texts = _texts(3, 40)
    tagger = make()
    _store(tagger, texts[:25])
    _copy_db(tmp_path / "store.db", tmp_path / "backup.db")
    _store(tagger, texts[25:])
    tagger.save_index()
    tagger.store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"store.db{suffix}").unlink(missing_ok=True)
    _copy_db(tmp_path / "backup.db", tmp_path / "store.db")


def _copy_db(source, target) -> None:
    """A consistent copy of an SQLite file in WAL mode (its -wal file included)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def _another_store(tmp_path, make) -> None:
    """A save made from another store, with fewer items than this one."""
    _store(make(db="other.db"), _texts(4, 22))
    make(db="other.db").save_index()
    _store(make(folder=None), _texts(5, 30))


def _saved(make, seed: int, n: int = 30) -> Tagger:
    """A worker that stored n items and saved its index (as at stop)."""
    tagger = make()
    _store(tagger, _texts(seed, n))
    tagger.save_index()
    return tagger


def _other_settings(tmp_path, make, monkeypatch) -> None:
    _saved(make, 6)
    monkeypatch.setattr(screen_files, "SETTINGS", {**GRAPH, "m": 6})


def _unsketched(tmp_path, make) -> None:
    """An item up to the mark lost its current sketch (stored by a writer without the screen)."""
    tagger = _saved(make, 7)
    with tagger.store.engine.begin() as conn:
        conn.execute(items.update().where(items.c.id == 12).values(embedding_model="older"))


def _corrupt(tmp_path, make) -> None:
    _saved(make, 8)
    path = persist.published(tmp_path / "index") / "index"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x55
    path.write_bytes(bytes(data))


def _truncated(tmp_path, make) -> None:
    _saved(make, 9)
    path = persist.published(tmp_path / "index") / "texts.bin"
    path.write_bytes(path.read_bytes()[:-3])


def _missing(tmp_path, make) -> None:
    _saved(make, 10)
    (persist.published(tmp_path / "index") / "text_ends.npy").unlink()


@pytest.mark.parametrize(
    "case, why",
    [
        (_newer_than_store, "indexes items up to id 40 but the store's newest is 25"),
        (_another_store, "is not the item it indexed (another store)"),
        (_other_settings, "other screen settings (m 4 not 6)"),
        (_unsketched, "1 stored items up to its mark 30 (first: 12) have no lexical-1 sketch"),
        (_corrupt, "does not match its sha256 (corrupt)"),
        (_truncated, "texts.bin has"),
        (_missing, "text_ends.npy is missing"),
    ],
)
def test_a_save_that_does_not_match_is_named_in_one_warning_and_rebuilt(
    tmp_path, make, caplog, monkeypatch, case, why
):
    if case is _other_settings:
        case(tmp_path, make, monkeypatch)
    else:
        case(tmp_path, make)
    caplog.set_level(logging.INFO, LOGGER)
    tagger = make()
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert why in warning.getMessage() and "rebuilding it from the store" in warning.getMessage()
    assert "\n" not in warning.getMessage() and warning.exc_info is None
    # rebuilt from this store (never the save as it was), saved again, and the new save loads
    rebuilt, _ = screen_files.rebuild(tagger.store)
    stored = tagger.store.count_items()
    assert len(tagger.index) == len(rebuilt) == stored and tagger.index.max_id == stored
    queries = _queries(_texts(5, 5) + _texts(7, 5))
    assert _same(tagger.index, rebuilt, queries)
    caplog.clear()
    assert len(make().index) == stored
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_replicas_over_one_store_share_the_save_through_one_folder(make, caplog):
    """Two machines over one store (here one SQLite file; PostgreSQL in production): one saves
    into the shared folder (a volume both mount), the other starts from it and catches up."""
    texts = _texts(12, 50)
    publisher = make(folder="shared")
    _store(publisher, texts[:35])
    publisher.save_index()
    _store(publisher, texts[35:45])  # after the save
    caplog.set_level(logging.INFO, LOGGER)
    replica = make(folder="shared")
    assert "10 stored since added" in caplog.text and "rebuild" not in caplog.text
    _store(replica, texts[45:])  # the replica stores; the publisher sees them on its next screen
    (out,) = publisher.add([prepare(texts[47][0], texts[47][1].rsplit(" ", 2)[0])], source="t")
    assert out.duplicate is not None and out.duplicate.item_id == 48
    (out,) = replica.add([prepare(texts[40][0], texts[40][1].rsplit(" ", 2)[0])], source="t")
    assert out.duplicate is not None and out.duplicate.item_id == 41
    for worker in (publisher, replica):  # as their next screen would
        worker._sync_index()
    assert len(replica.index) == len(publisher.index) == 52
    assert _same(replica.index, publisher.index, _queries(texts))


def test_a_worker_that_cannot_write_the_folder_still_serves(make, tmp_path, caplog, monkeypatch):
    _store(make(folder=None), _texts(13, 25))

    def refuse(*_a, **_k):
        raise OSError("read-only file system")

    monkeypatch.setattr(screen_files, "save", refuse)
    caplog.set_level(logging.INFO, LOGGER)
    tagger = make()
    assert len(tagger.index) == 25 and not isinstance(tagger.index, LayeredIndex)
    assert "not saved" in caplog.text and "read-only file system" in caplog.text


def test_without_a_folder_the_index_is_rebuilt_at_every_start_as_before(make, tmp_path):
    texts = _texts(14, 25)
    _store(make(folder=None), texts)
    tagger = make(folder=None)
    assert len(tagger.index) == 25 and not (tmp_path / "index").exists()
    tagger.save_index()  # nothing to save into
    with tagger.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 25


def test_the_folder_the_serve_config_names(tmp_path):
    root = tmp_path / "repo"
    assert index_folder(AUTO, f"sqlite:///{tmp_path}/var/mltagger.db", root) == (
        tmp_path / "var" / "mltagger.screen-index"
    )  # one folder per SQLite store: a test's throw-away store gets its own
    assert index_folder(AUTO, "postgresql+psycopg://u:p@db/tags", root) == (
        root / "var" / "screen-index"
    )
    assert index_folder(AUTO, "sqlite://", root) is None  # in memory: nothing to keep
    assert index_folder(None, "sqlite:///x.db", root) is None
    assert index_folder("/mnt/shared/idx", "sqlite:///x.db", root) == Path("/mnt/shared/idx")
    assert index_folder("var/idx", "sqlite:///x.db", root) == root / "var" / "idx"
    cfg = compose_config("serve", [f"model_dir={tmp_path}", f"store.url=sqlite:///{tmp_path}/s.db"])
    check_serve_config(cfg)
    assert index_options(cfg) == {
        "index_dir": tmp_path / "s.screen-index",
        "index_shared": True,
        "save_at_exit": True,
    }
    for override, key in (("dedup.index_shared=maybe", "dedup.index_shared"),
                          ("dedup.index_dir=''", "dedup.index_dir")):  # fmt: skip
        cfg = compose_config("serve", [f"model_dir={tmp_path}", override])
        with pytest.raises(ConfigError, match=key):
            check_serve_config(cfg)


def test_a_process_that_ends_saves_what_it_stored(tmp_path):
    """save_at_exit (`mltagger serve`, `ingest`): the items stored since the start's save are
    in the save once the process has ended normally."""
    code = f"""
from pathlib import Path
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from tests.conftest import REPO
from tests.fakes import FakePredictor, make_model_folder, write_screen
t = Path({str(tmp_path)!r})
tagger = Tagger(FakePredictor(make_model_folder(t / "model")), Store(f"sqlite:///{{t}}/s.db"),
                screen_file=write_screen(t / "screen.json"), index_dir=t / "index",
                save_at_exit=True)
assert tagger.index.max_id is None
for i in range(5):
    tagger.add([prepare(f"title {{i}} here", f"the description of item {{i}}")], source="t")
"""
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    assert persist.peek(tmp_path / "index")["max_id"] == 5


def test_a_shared_start_far_behind_its_save_merges_the_new_items_into_it_first(
    make, caplog, monkeypatch
):
    """More new items than MERGE_AT (after a crash that skipped the save at exit): the first
    worker merges them into the save, in id order, and every worker maps the new save."""
    texts = _texts(15, 45)
    first = make()
    _store(first, texts[:30])
    first.save_index()
    _store(first, texts[30:])  # not saved: the process "crashed"
    monkeypatch.setattr(screen_files, "MERGE_AT", 10)
    caplog.set_level(logging.INFO, LOGGER)
    worker = make()
    assert "merging 15 items stored since the save" in caplog.text
    assert worker.index.base.max_id == 45 and not len(worker.index.delta)
    rebuilt, _ = screen_files.rebuild(worker.store)
    assert _same(worker.index, rebuilt, _queries(texts))
