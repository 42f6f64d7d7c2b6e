"""The screen index on disk (`mltagger.screen.persist`): saves published whole or not at all,
every file checked before FAISS reads it, and the served index (a mapped, shared save plus a
private delta) answering as exact search would over the same items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mltagger.screen import persist
from mltagger.screen.index import ScreenIndex
from mltagger.screen.persist import LayeredIndex, SavedIndexError, open_saved, save
from mltagger.screen.sketch import ScreenError, Text, normalised, sketch

N = 300
GRAPH = {"m": 4, "ef_construction": 8, "ef_search": 8, "exact_max": 100}


@pytest.fixture(scope="module")
def rows() -> tuple[list[tuple[str, str]], np.ndarray]:
    rng = np.random.default_rng(11)
    vocab = ["".join(rng.choice(list("abcdefghij"), size=5)) for _ in range(2000)]
    texts = [
        (" ".join(rng.choice(vocab, 2)), " ".join(rng.choice(vocab, int(rng.integers(8, 20)))))
        for _ in range(N)
    ]
    return texts, sketch([Text(normalised(t, d)) for t, d in texts])


def _index(rows, n: int, start: int = 0, **settings) -> ScreenIndex:
    texts, vecs = rows
    index = ScreenIndex(**settings)
    index.add(list(range(1 + start, 1 + n)), vecs[start:n], texts[start:n])
    return index


def test_a_mapped_save_answers_as_the_index_it_was_and_takes_no_add(rows, tmp_path):
    for settings, n in (({}, 80), (GRAPH, 250)):  # exact (flat) and graph
        index = _index(rows, n, **settings)
        version = save(index, tmp_path / str(n), {"note": "x"})
        mapped, manifest = open_saved(tmp_path / str(n), mapped=True, **settings)
        assert manifest["source"] == {"note": "x"} and manifest["max_id"] == n
        assert mapped.read_only and mapped.kind == index.kind and len(mapped) == n
        maps = Path("/proc/self/maps").read_text()
        assert str(version / "index") in maps and str(version / "texts.bin") in maps
        q = rows[1][::7]
        assert all(
            np.array_equal(a, b)
            for a, b in zip(mapped.search(q, 5), index.search(q, 5), strict=True)
        )
        assert mapped.text(n) == rows[0][n - 1]
        with pytest.raises(ScreenError, match="read-only"):  # FAISS itself would abort
            mapped.add([n + 1], rows[1][:1], [("t", "d")])


def test_base_and_delta_together_answer_as_exact_search_over_all_items(rows, tmp_path):
    texts, vecs = rows
    save(_index(rows, 60, exact_max=N), tmp_path)
    base, _ = open_saved(tmp_path, mapped=True, exact_max=N)
    served = LayeredIndex(base, exact_max=N)
    served.add(list(range(61, 91)), vecs[60:90], texts[60:90])
    assert len(served) == 90 and served.max_id == 90 and len(served.delta) == 30
    exact = _index(rows, 90, exact_max=N)
    queries = np.concatenate([vecs[:90:3], vecs[50:70]])
    got, want = served.search(queries, 5), exact.search(queries, 5)
    assert np.array_equal(got[0], want[0]) and np.allclose(got[1], want[1], atol=1e-6)
    assert served.text(10) == texts[9] and served.text(75) == texts[74]
    with pytest.raises(ValueError, match="saved index already"):
        served.add([60], vecs[:1], [("t", "d")])
    assert set(served.memory()) == {"shared", "delta"}


def test_a_save_that_fails_midway_leaves_the_published_one(rows, tmp_path, monkeypatch):
    first = save(_index(rows, 50), tmp_path)

    def broken(self, folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "index").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ScreenIndex, "save", broken)
    with pytest.raises(OSError):
        save(_index(rows, 70), tmp_path)
    monkeypatch.undo()
    assert persist.published(tmp_path) == first
    index, manifest = open_saved(tmp_path, mapped=True)
    assert len(index) == 50 and manifest["max_id"] == 50
    # later saves replace it; the one before stays (a process may be opening it), older go
    second, third = save(_index(rows, 60), tmp_path), save(_index(rows, 70), tmp_path)
    assert persist.published(tmp_path) == third
    assert sorted(p.name for p in tmp_path.glob("v-*")) == sorted([second.name, third.name])


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda v: (v / "ids.npy").unlink(), "ids.npy is missing"),
        (lambda v: (v / "index").write_bytes((v / "index").read_bytes()[:-10]), "truncated"),
        (lambda v: _flip(v / "texts.bin"), "corrupt"),
        (lambda v: (v / "manifest.json").write_text("{"), "unreadable"),
        (lambda v: (v / "manifest.json").unlink(), "no manifest.json"),
        (lambda v: _edit(v, format=0), "format 0"),
        (lambda v: _edit(v, settings={"version": "lexical-0"}), "version 'lexical-0'"),
        (lambda v: (v.parent / "current").write_text("../etc\n"), "does not name a save"),
    ],
)
def test_a_damaged_or_foreign_save_is_refused_with_one_line_why(rows, tmp_path, damage, why):
    version = save(_index(rows, 120, **GRAPH), tmp_path)
    damage(version)
    with pytest.raises(SavedIndexError, match=why) as err:
        open_saved(tmp_path, mapped=True, **GRAPH)
    assert "\n" not in str(err.value)


def test_other_settings_are_refused_and_nothing_saved_is_none(rows, tmp_path):
    assert open_saved(tmp_path, mapped=True) is None
    save(_index(rows, 120, **GRAPH), tmp_path)
    with pytest.raises(SavedIndexError, match="m 4 not 8"):
        open_saved(tmp_path, mapped=True, **{**GRAPH, "m": 8})


def test_the_lock_lets_one_process_write(tmp_path):
    with persist.locked(tmp_path) as first:
        assert first
        # flock is per open file: a second open in this process contends like another process
        with persist.locked(tmp_path, wait=False) as second:
            assert not second


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit(version: Path, **changes) -> None:
    manifest = json.loads((version / "manifest.json").read_text())
    for key, value in changes.items():
        manifest[key] = {**manifest[key], **value} if isinstance(value, dict) else value
    (version / "manifest.json").write_text(json.dumps(manifest))
