"""The duplicate screen's index: exact up to `exact_max`, an HNSW graph beyond it, converted once,
grown item by item, and the same graph (so the same answers) however the same rows arrive."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.screen.index import ScreenIndex
from mltagger.screen.sketch import (
    ScreenError,
    Text,
    normalised,
    sketch,
    sketch_counts,
    unit_sketches,
)

N = 600


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 9))))


@pytest.fixture(scope="module")
def rows() -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """N distinct items, their sketches, and the sketches of a clear near copy of each (one
    typo, the last two words cut)."""
    rng = np.random.default_rng(7)
    vocab = [_word(rng) for _ in range(3000)]
    texts, copies = [], []
    for _ in range(N):
        words = list(rng.choice(vocab, size=int(rng.integers(12, 25))))
        title, desc = " ".join(words[:2]), " ".join(words[2:])
        texts.append((title, desc))
        w = words[3]
        typo = w[1] + w[0] + w[2:]
        copies.append((title, " ".join([words[2], typo, *words[4:-2]])))
    vecs = sketch([Text(normalised(t, d)) for t, d in texts])
    near = sketch([Text(normalised(t, d)) for t, d in copies])
    assert np.min(np.sum(vecs * near, axis=1)) > 0.7  # clear near copies, by construction
    return texts, vecs, near


def _grow(rows, batches: list[int], **kw) -> ScreenIndex:
    """An index fed the first sum(batches) rows in batches of the given sizes (ids 1000+i)."""
    texts, vecs, _ = rows
    index = ScreenIndex(**kw)
    start = 0
    for size in batches:
        stop = start + size
        index.add(list(range(1000 + start, 1000 + stop)), vecs[start:stop], texts[start:stop])
        start = stop
    return index


def test_exact_up_to_exact_max_then_hnsw_and_near_copies_keep_their_original(rows):
    _, vecs, near = rows
    index = _grow(rows, [50] * 4, exact_max=200)
    assert index.kind == "exact" and len(index) == 200
    before_ids, before_sims = index.search(near[:200], 3)
    # exact: the returned similarity is the true inner product with the original
    assert np.array_equal(before_ids[:, 0], np.arange(1000, 1200))
    assert np.allclose(before_sims[:, 0], np.sum(vecs[:200] * near[:200], axis=1), atol=1e-5)
    index.add([1200], vecs[200:201], [rows[0][200]])  # one item past exact_max converts
    assert index.kind == "hnsw" and len(index) == 201
    assert index._flat is None and index._hnsw.ntotal == 201  # no second copy of the vectors
    after_ids, after_sims = index.search(near[:200], 3)
    assert np.array_equal(after_ids[:, 0], before_ids[:, 0])
    # the graph keeps float16 vectors by default: similarities within 1e-3
    assert np.allclose(after_sims[:, 0], before_sims[:, 0], atol=2e-3)


def test_items_added_after_the_switch_are_found(rows):
    texts, vecs, near = rows
    index = _grow(rows, [150, 100, *[7] * 50], exact_max=200)
    assert index.kind == "hnsw" and len(index) == 600 and index.max_id == 1599
    ids, _ = index.search(near, 1)
    assert np.array_equal(ids[:, 0], np.arange(1000, 1600))
    assert index.text(1555) == texts[555]
    ids, _ = index.search(vecs[590:600], 1)  # an exact copy of the newest items
    assert list(ids[:, 0]) == list(range(1590, 1600))


def test_the_index_rebuilt_from_the_same_rows_gives_the_same_answers(rows):
    """What a restart does: one add of every stored row, against the index that grew batch by
    batch. A small, greedy graph (M 4, efSearch 8), whose answers depend on its links, so a
    graph built in another order would show here."""
    _, vecs, _ = rows
    settings = {"m": 4, "ef_search": 8, "ef_construction": 8, "exact_max": 100}
    grown = _grow(rows, [60, 90, 1, 33, 200, 16, 200], **settings)
    rebuilt = _grow(rows, [N], **settings)
    queries = np.random.default_rng(3).standard_normal((200, vecs.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for q in (queries, vecs):
        gi, gs = grown.search(q, 5)
        ri, rs = rebuilt.search(q, 5)
        assert np.array_equal(gi, ri) and np.array_equal(gs, rs)


def test_the_graph_does_not_depend_on_threads(rows):
    """Built on one thread whatever `threads` says, and searched the same on 1 or 2 threads."""
    import faiss

    _, vecs, near = rows
    settings = {"m": 4, "ef_search": 8, "ef_construction": 8, "exact_max": 0}
    faiss.omp_set_num_threads(2)
    a = _grow(rows, [300, 300], threads=2, **settings)
    b = _grow(rows, [300, 300], threads=1, **settings)
    for q in (near, vecs[::-1]):
        batch = a.search(q, 5)  # >= 8 queries: searched on `threads`
        assert all(np.array_equal(x, y) for x, y in zip(batch, b.search(q, 5), strict=True))
        for j in range(0, len(q), 97):  # one query: searched on one thread
            single = a.search(q[j : j + 1], 5)
            assert all(np.array_equal(x[j], y[0]) for x, y in zip(batch, single, strict=True))


def test_texts_round_trip_in_any_id_order():
    index = ScreenIndex()
    assert index.max_id is None and index.kind == "exact"
    ids, _ = index.search(np.zeros((2, 256), np.float32), 3)
    assert (ids == -1).all()
    vecs = sketch([Text("a b c d"), Text("e f g h"), Text("x y z w")])
    index.add([30, 10], vecs[:2], [("Café ☕", None), ("t", "")])
    index.add([20], vecs[2:], [("title", "dé scription")])
    assert index.text(30) == ("Café ☕", None)
    assert index.text(10) == ("t", "")
    assert index.text(20) == ("title", "dé scription")
    assert index.max_id == 30 and len(index) == 3
    with pytest.raises(KeyError):
        index.text(11)
    ids, _ = index.search(vecs, 1)
    assert list(ids[:, 0]) == [30, 10, 20]
    with pytest.raises(ValueError):
        index.add([1, 2], vecs[:2], [("only one", "")])


@pytest.mark.parametrize("storage, per_value", [("float16", 2), ("float32", 4)])
def test_memory_counts_one_copy_of_the_vectors(rows, storage, per_value):
    index = _grow(rows, [N], exact_max=100, storage=storage)
    mem = index.memory()
    assert mem["vectors"] == per_value * 256 * N
    import faiss  # what FAISS itself keeps per item

    assert faiss.downcast_index(index._hnsw.storage).code_size == per_value * 256
    ids, sims = index.search(rows[1][:50], 1)
    assert np.array_equal(ids[:, 0], np.arange(1000, 1050))
    assert np.allclose(sims[:, 0], 1.0, atol=1e-6 if storage == "float32" else 2e-3)
    assert 0 < mem["graph"] < mem["vectors"]
    assert mem["texts"] < 4 * sum(len(t) + len(d) for t, d in rows[0])


def test_cached_int8_counts_give_the_same_sketches_bit_for_bit(rows):
    texts = [Text(normalised(t, d)) for t, d in rows[0][:50]]
    counts = sketch_counts(texts)
    assert np.array_equal(counts, np.round(counts)) and np.abs(counts).max() < 128
    assert np.array_equal(unit_sketches(counts.astype(np.int8)), sketch(texts))


def test_a_saved_index_plus_the_newer_rows_answers_as_a_full_rebuild(rows, tmp_path):
    """What a start can do instead of rebuilding: load the saved index and add the items stored
    after its `max_id`. FAISS does not save the generator of the items' levels; without its
    replay the graph would drift from the rebuilt one."""
    _, vecs, near = rows
    settings = {"m": 4, "ef_construction": 8, "exact_max": 100}
    rebuilt = _grow(rows, [N], ef_search=8, **settings)
    _grow(rows, [250], ef_search=8, **settings).save(tmp_path / "exact")
    grown = _grow(rows, [150, 250], ef_search=8, **settings)
    grown.save(tmp_path / "graph")
    for folder, done in (("exact", 250), ("graph", 400)):
        loaded = ScreenIndex.load(tmp_path / folder, ef_search=8, **settings)
        assert loaded.max_id == 1000 + done - 1 and len(loaded) == done
        texts = rows[0][done:]
        loaded.add(list(range(1000 + done, 1000 + N)), vecs[done:], texts)
        assert loaded.kind == "hnsw" and loaded.text(1000 + N - 1) == rows[0][-1]
        queries = np.random.default_rng(5).standard_normal((200, vecs.shape[1]))
        for q in (queries.astype(np.float32), near):
            assert all(
                np.array_equal(x, y)
                for x, y in zip(loaded.search(q, 5), rebuilt.search(q, 5), strict=True)
            )
    # mapped read-only (shared by the processes that map it): the saved graph's answers, and
    # no add (FAISS would abort the process on one)
    mapped = ScreenIndex.load(tmp_path / "graph", ef_search=8, mapped=True, **settings)
    for q in (near, vecs[::3]):
        assert all(
            np.array_equal(x, y)
            for x, y in zip(mapped.search(q, 5), grown.search(q, 5), strict=True)
        )
    assert mapped.text(1399) == rows[0][399]
    with pytest.raises(ScreenError, match="read-only"):
        mapped.add([5000], vecs[:1], rows[0][:1])
    with pytest.raises(ScreenError, match="written with"):
        ScreenIndex.load(tmp_path / "graph", m=8, ef_construction=8, exact_max=100)


def test_ef_search_follows_the_store_size_unless_set(rows, monkeypatch):
    import mltagger.screen.index as screen

    assert screen.auto_ef_search(100_000) == 64 and screen.auto_ef_search(1_000_000) == 128
    monkeypatch.setattr(screen, "EF_SEARCH_BY_SIZE", ((300, 16), (None, 40)))
    index = _grow(rows, [250], exact_max=100)
    assert index.ef_search == 16 and index._hnsw.hnsw.efSearch == 16
    index.add(list(range(2000, 2100)), rows[1][:100], rows[0][:100])
    assert index.ef_search == 40 and index._hnsw.hnsw.efSearch == 40
    index.ef_search = 24
    assert index._hnsw.hnsw.efSearch == 24
    fixed = _grow(rows, [400], exact_max=100, ef_search=12)
    assert fixed.ef_search == 12 and fixed._hnsw.hnsw.efSearch == 12
