"""`make cv`'s folds: stratified and seeded, with date-ordered blocks for `folds: date` sources."""

from __future__ import annotations

from collections import Counter

from mltagger.training.cv import make_folds


def _items():
    old = [{"id": i, "tag": "ab"[i % 2], "source": "old", "created_on": "2020"} for i in range(30)]
    pool = [
        {"id": 100 + i, "tag": "ab"[i % 2], "source": "pool",
         "created_on": f"2025-{1 + i // 3:02d}"}
        for i in range(30)
    ]  # fmt: skip
    return old + pool


def test_date_sources_are_cut_into_contiguous_periods_per_tag():
    items = _items()
    by_id = {it["id"]: it for it in items}
    folds = make_folds(items, 3, seed=0, date_sources={"pool"})
    assert sorted(i for f in folds for i in f) == sorted(by_id)
    for tag in "ab":
        spans = []
        for fold in folds:
            dates = sorted(by_id[i]["created_on"] for i in fold if by_id[i]["source"] == "pool"
                           and by_id[i]["tag"] == tag)  # fmt: skip
            assert len(dates) == 5
            spans.append((dates[0], dates[-1]))
        assert spans[0][1] <= spans[1][0] and spans[1][1] <= spans[2][0]  # oldest period first
    for fold in folds:  # every fold still holds each tag evenly
        assert Counter(by_id[i]["tag"] for i in fold) == {"a": 10, "b": 10}
    # the seed reshuffles only the other sources
    other = make_folds(items, 3, seed=1, date_sources={"pool"})

    def part(fs, pool):
        return [[i for i in f if (i >= 100) == pool] for f in fs]

    assert part(other, True) == part(folds, True)
    assert part(other, False) != part(folds, False)


def test_without_date_sources_the_pool_is_shuffled_like_any_other_source():
    items = _items()
    folds = make_folds(items, 3, seed=0)
    by_id = {it["id"]: it for it in items}
    first = [sorted(by_id[i]["created_on"] for i in f if i >= 100) for f in folds]
    assert not (first[0][-1] <= first[1][0] and first[1][-1] <= first[2][0])


def test_a_near_duplicate_group_mixing_sources_is_folded_as_one_unit():
    items = _items()
    folds = make_folds(items, 3, seed=0, groups=[[0, 100]], date_sources={"pool"})
    home = [k for k, f in enumerate(folds) if 0 in f]
    assert home == [k for k, f in enumerate(folds) if 100 in f]
