"""Duplicates, rare tags and the split: reproducible, stratified, and leak-free."""

from __future__ import annotations

from collections import Counter

import pytest

from mltagger.core.errors import DataError
from mltagger.data.duplicates import dedup_key, near_duplicate_groups, remove_exact_duplicates
from mltagger.data.prepare import prepare_data
from mltagger.data.split import fold_rare_tags, stratified_group_split
from mltagger.data.validation import RawRow, validate_rows, verify_checksum


def clean(raw_rows, tags):
    return validate_rows([RawRow(i, r) for i, r in enumerate(raw_rows, 1)], tags).items


def test_exact_duplicates_ignore_case_space_and_punctuation(raw_items, tags):
    dup = {
        **raw_items[0],
        "id": 999,
        "title": raw_items[0]["title"].upper() + "!!",
        "description": "  " + raw_items[0]["description"] + "  ",
    }
    kept, removed = remove_exact_duplicates(clean([*raw_items, dup], tags))
    assert removed == [
        {"id": 999, "duplicate_of": 1, "tag": raw_items[0]["tag"], "kept_tag": raw_items[0]["tag"]}
    ]
    assert len(kept) == len(raw_items)


def test_near_duplicates_are_grouped(raw_items, tags):
    edited = {**raw_items[0], "id": 500, "description": raw_items[0]["description"] + " Code."}
    same_title = {**raw_items[8], "id": 501, "description": "A completely different text here."}
    groups = near_duplicate_groups(
        clean([*raw_items, edited, same_title], tags), threshold=0.7, same_title_min_chars=12
    )
    assert [1, 500] in groups and [9, 501] in groups


def test_split_is_reproducible_and_seed_dependent(raw_items, tags):
    items = clean(raw_items, tags)
    a = stratified_group_split(items, val_size=0.2, test_size=0.2, seed=1)
    b = stratified_group_split(list(reversed(items)), val_size=0.2, test_size=0.2, seed=1)
    c = stratified_group_split(items, val_size=0.2, test_size=0.2, seed=2)
    ids = lambda s: {k: [it["id"] for it in v] for k, v in s.items()}  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_split_is_stratified_and_covers_every_item(raw_items, tags):
    items = clean(raw_items, tags)
    split = stratified_group_split(items, val_size=0.2, test_size=0.2, seed=0)
    assert sum(len(v) for v in split.values()) == len(items)
    for name in ("val", "test"):
        counts = Counter(it["tag"] for it in split[name])
        assert set(counts) == {it["tag"] for it in items}, name  # every tag in every split
        assert all(n == 1 or n == 2 for n in counts.values())  # 7 per tag * 0.2 -> 1-2


def test_groups_stay_in_one_split(raw_items, tags):
    items = clean(raw_items, tags)
    groups = [[1, 2, 3], [8, 9]]
    split = stratified_group_split(items, val_size=0.3, test_size=0.3, seed=3, groups=groups)
    where = {it["id"]: name for name, v in split.items() for it in v}
    for g in groups:
        assert len({where[i] for i in g}) == 1


def test_bad_split_sizes_are_refused(raw_items, tags):
    with pytest.raises(DataError, match="sum below 1"):
        stratified_group_split(clean(raw_items, tags), val_size=0.5, test_size=0.5, seed=0)


def test_fold_rare_tags():
    items = [{"tag": "a"}] * 5 + [{"tag": "b"}] * 2
    folded, rare = fold_rare_tags(items, min_freq=3, fallback="other")
    assert rare == {"b": 2}
    assert Counter(it["tag"] for it in folded) == {"a": 5, "other": 2}


def test_prepare_data_leaks_no_text_between_splits(data_cfg, raw_items, items_file):
    import json

    # Add an exact and a near duplicate of the same item: neither may leak.
    rows = [
        *raw_items,
        {**raw_items[0], "id": 100},
        {**raw_items[0], "id": 101, "description": raw_items[0]["description"] + " Now."},
    ]
    items_file.write_text(json.dumps(rows))
    data_cfg.sources[0].sha256 = None
    data = prepare_data(data_cfg)
    assert [r["id"] for r in data.removed_duplicates] == [100]
    assert [1, 101] in data.near_duplicate_groups
    keys = {name: {dedup_key(it["text"]) for it in items} for name, items in data.splits.items()}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    manifest = data.manifest()
    assert manifest["data_sha256"] == data.sources[0]["sha256"]
    assert sum(len(v) for v in manifest["ids"].values()) == len(raw_items) + 1


def test_changed_file_fails_the_checksum_with_a_clear_message(items_file):
    expected = "0" * 64
    with pytest.raises(DataError, match=r"was changed: its sha256 is .* expects 0000"):
        verify_checksum(items_file, expected)


def test_prepare_data_stops_on_bad_rows_unless_skip_invalid(
    data_cfg, raw_items, items_file, tmp_path
):
    import json

    items_file.write_text(json.dumps([*raw_items, {**raw_items[0], "id": 200, "tag": "nlp"}]))
    data_cfg.sources[0].sha256 = None
    with pytest.raises(DataError, match="row 43 \\(id 200\\): tag: unknown tag 'nlp'"):
        prepare_data(data_cfg)
    data_cfg.skip_invalid = True
    data = prepare_data(data_cfg, rejects_dir=tmp_path / "run")
    assert (tmp_path / "run" / "rejects_tiny.jsonl").read_text().count("\n") == 1
    assert data.manifest()["rejected_rows"] == 1


def test_to_hf_dataset(data_cfg):
    from mltagger.data.prepare import to_hf_dataset

    data = prepare_data(data_cfg)
    ds = to_hf_dataset(data.splits["train"], data.label_names())
    assert ds.num_rows == len(data.splits["train"])
    assert set(ds.column_names) >= {"id", "text", "label", "tag"}
    assert data.label_names()[ds[0]["label"]] == ds[0]["tag"]


def test_adding_a_tag_leaves_the_other_tags_split_unchanged(raw_items, tags):
    items = clean(raw_items, tags)
    extra = [
        {**it, "id": 1000 + k, "tag": "other", "text": f"unrelated thing {k}"}
        for k, it in enumerate(items[:12])
    ]
    before = stratified_group_split(items, val_size=0.2, test_size=0.2, seed=3)
    after = stratified_group_split([*items, *extra], val_size=0.2, test_size=0.2, seed=3)
    for split in before:
        assert [it["id"] for it in before[split]] == [
            it["id"] for it in after[split] if it["tag"] != "other"
        ]
    assert sum(it["tag"] == "other" for s in after.values() for it in s) == 12


def test_prepare_data_refuses_a_source_whose_sha256_differs(data_cfg, items_file):
    from mltagger.data.validation import sha256_file

    assert prepare_data(data_cfg).sources[0]["sha256"] == sha256_file(items_file)
    data_cfg.sources[0].sha256 = "0" * 64
    with pytest.raises(DataError, match=r"tiny\.json|items\.json"):
        prepare_data(data_cfg)
    with pytest.raises(DataError, match="expects 0000"):
        prepare_data(data_cfg)


def _near_copies(raw_items):
    """Six near-copies of item 1 (its text with one extra word each) and five of item 15."""
    rows = list(raw_items)
    for k, word in enumerate(["Code.", "Notebook.", "Slides.", "Video.", "Demo.", "Paper."]):
        rows.append(
            {**raw_items[0], "id": 300 + k, "description": f"{raw_items[0]['description']} {word}"}
        )
    for k, word in enumerate(["Code.", "Notebook.", "Slides.", "Video.", "Demo."]):
        rows.append(
            {
                **raw_items[14],
                "id": 400 + k,
                "description": f"{raw_items[14]['description']} {word}",
            }
        )
    return rows


def test_near_duplicate_groups_land_in_one_split(data_cfg, raw_items, items_file, tags):
    import json

    rows = _near_copies(raw_items)
    items_file.write_text(json.dumps(rows))
    data_cfg.sources[0].sha256 = None
    data = prepare_data(data_cfg)
    groups = data.near_duplicate_groups
    assert [1, 300, 301, 302, 303, 304, 305] in groups
    assert [15, 400, 401, 402, 403, 404] in groups
    where = {it["id"]: name for name, split in data.splits.items() for it in split}
    for g in groups:
        assert len({where[i] for i in g}) == 1, {i: where[i] for i in g}
    # The check has teeth: split without the groups, these copies do not stay together.
    loose = stratified_group_split(clean(rows, tags), val_size=0.2, test_size=0.2, seed=0)
    loose_where = {it["id"]: name for name, split in loose.items() for it in split}
    assert len({loose_where[i] for i in [1, 300, 301, 302, 303, 304, 305]}) > 1


def test_split_sources_in_order_keeps_groups_across_sources_together(raw_items, tags):
    from mltagger.data.split import split_sources_in_order

    rows = _near_copies(raw_items)
    items = [{**it, "source": "second" if it["id"] >= 300 else "first"} for it in clean(rows, tags)]
    groups = [[1, 300, 301, 302, 303, 304, 305], [15, 400, 401, 402, 403, 404]]
    split = split_sources_in_order(
        items, ["first", "second"], val_size=0.2, test_size=0.2, seed=0, groups=groups
    )
    where = {it["id"]: name for name, s in split.items() for it in s}
    assert sorted(where) == sorted(it["id"] for it in items)
    assert sum(len(s) for s in split.values()) == len(items)  # each item once
    for g in groups:
        assert len({where[i] for i in g}) == 1, {i: where[i] for i in g}


def test_a_tag_with_exactly_min_freq_items_is_kept():
    items = [{"tag": "a"}] * 3 + [{"tag": "b"}] * 2
    folded, rare = fold_rare_tags(items, min_freq=3, fallback="other")
    assert rare == {"b": 2} and Counter(it["tag"] for it in folded) == {"a": 3, "other": 2}
    assert fold_rare_tags(items, min_freq=2, fallback="other") == (items, {})


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (1.0, 0.0), (0.2, -0.1), (0.0, 1.0)])
def test_each_split_size_is_checked_on_its_own(raw_items, tags, val, test):
    with pytest.raises(DataError, match="split sizes"):
        stratified_group_split(clean(raw_items, tags), val_size=val, test_size=test, seed=0)


def test_checksum_message_says_how_to_fix_it(items_file):
    with pytest.raises(DataError) as err:
        verify_checksum(items_file, "0" * 64)
    msg = str(err.value)
    assert (
        "Restore the shipped file (git checkout -- <file>), or, if the change is intended, " in msg
    )
    assert "put the new sha256 in the data config so runs record which data they saw." in msg
    assert verify_checksum(items_file, None) == verify_checksum(items_file, "")
    from mltagger.data.validation import sha256_file

    assert msg == (
        f"{items_file} was changed: its sha256 is {sha256_file(items_file)}, the data config "
        f"expects {'0' * 64}. Restore the shipped file (git checkout -- <file>), or, if the "
        "change is intended, put the new sha256 in the data config so runs record which data "
        "they saw."
    )


def _one_tag(n: int, tag: str = "a") -> list[dict]:
    return [{"id": k + 1, "tag": tag, "text": f"t{k}"} for k in range(n)]


@pytest.mark.parametrize(
    ("n", "counts"),
    [
        # (test, val, train): each unit goes to the split furthest below its target share,
        # ties in the order test, val, train, so the smallest tags get evaluation items first.
        (1, (1, 0, 0)),
        (2, (1, 1, 0)),
        (3, (1, 1, 1)),
        (5, (1, 1, 3)),
        (10, (2, 2, 6)),
        (100, (20, 20, 60)),
    ],
)
def test_split_sizes_per_tag(n, counts):
    split = stratified_group_split(_one_tag(n), val_size=0.2, test_size=0.2, seed=0)
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == counts


def test_a_split_of_size_zero_gets_nothing_and_uneven_sizes_are_kept():
    split = stratified_group_split(_one_tag(50), val_size=0.1, test_size=0.0, seed=0)
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == (0, 5, 45)
    split = stratified_group_split(_one_tag(50), val_size=0.3, test_size=0.1, seed=0)
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == (5, 15, 30)
    grouped = stratified_group_split(
        _one_tag(50), val_size=0.2, test_size=0.2, seed=0, groups=[list(range(1, 11))]
    )
    sizes = sorted(len(v) for v in grouped.values())
    assert sum(sizes) == 50 and sizes[-1] >= 28  # the 10-item group lands whole somewhere


def test_one_source_splits_as_the_plain_split_and_pairs_stay_together(raw_items, tags):
    from mltagger.data.split import split_sources_in_order

    items = clean(raw_items, tags)
    plain = stratified_group_split(items, val_size=0.2, test_size=0.2, seed=5, groups=[[1, 2]])
    ordered = split_sources_in_order(
        items, ["only"], val_size=0.2, test_size=0.2, seed=5, groups=[[1, 2]]
    )
    ids = lambda s: {k: [it["id"] for it in v] for k, v in s.items()}  # noqa: E731
    assert ids(ordered) == ids(plain)
    where = {it["id"]: name for name, v in ordered.items() for it in v}
    assert where[1] == where[2]


def test_no_validation_split_is_allowed_and_unknown_group_members_are_ignored():
    split = stratified_group_split(_one_tag(10), val_size=0.0, test_size=0.2, seed=0)
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == (2, 0, 8)
    # A group may name items that are gone (e.g. dropped as exact duplicates).
    grouped = stratified_group_split(
        _one_tag(10), val_size=0.2, test_size=0.2, seed=0, groups=[[1, 2, 999]]
    )
    where = {it["id"]: name for name, v in grouped.items() for it in v}
    assert sorted(where) == list(range(1, 11)) and where[1] == where[2]


@pytest.mark.parametrize("seed", range(5))
def test_a_split_of_size_zero_stays_empty_with_groups(seed):
    groups = [list(range(1, 6)), list(range(6, 9))]
    split = stratified_group_split(
        _one_tag(12), val_size=0.1, test_size=0.0, seed=seed, groups=groups
    )
    assert split["test"] == []


def test_a_train_only_source_trains_whole_except_its_copies_of_evaluation_items():
    from mltagger.data.split import split_sources_in_order

    own = [{"id": k + 1, "tag": "ab"[k % 2], "source": "own"} for k in range(20)]
    first = split_sources_in_order(own, ["own"], val_size=0.2, test_size=0.2, seed=0)
    test_id, val_id, train_id = (first[s][0]["id"] for s in ("test", "val", "train"))
    weak = [{"id": 100 + k, "tag": "a", "source": "weak"} for k in range(4)]
    late = [{"id": 200, "tag": "b", "source": "late"}]
    groups = [[test_id, 100], [val_id, 101], [train_id, 102], [103, 200]]
    dropped: list[dict] = []
    splits = split_sources_in_order(
        own + weak + late,
        ["own", "weak", "late"],
        val_size=0.2,
        test_size=0.2,
        seed=0,
        groups=groups,
        train_only=["weak"],
        dropped=dropped,
    )
    where = {it["id"]: s for s, v in splits.items() for it in v}
    # a weak item goes to train, unless it copies a val or test item: then it is left out
    assert dropped == [
        {"id": 100, "source": "weak", "near_copy_in": "test"},
        {"id": 101, "source": "weak", "near_copy_in": "val"},
    ]
    assert sorted(i for i in where if i >= 100) == [102, 103, 200]
    assert where[102] == where[103] == "train"
    assert where[200] == "train"  # a later source's copy follows the weak item into train
    for s in splits:  # the platform's own items are split as without the other sources
        assert [it["id"] for it in splits[s] if it["source"] == "own"] == [
            it["id"] for it in first[s]
        ]
    # without a list to report to, the copies are still left out
    quiet = split_sources_in_order(
        own + weak, ["own", "weak"], val_size=0.2, test_size=0.2, seed=0,
        groups=groups, train_only=["weak"],
    )  # fmt: skip
    assert sorted(it["id"] for it in quiet["train"] if it["id"] >= 100) == [102, 103]


def test_a_trainval_source_never_reaches_test_and_leaves_its_copies_of_test_items_out():
    from mltagger.data.split import split_sources_in_order

    own = [{"id": k + 1, "tag": "ab"[k % 2], "source": "own"} for k in range(20)]
    first = split_sources_in_order(own, ["own"], val_size=0.2, test_size=0.2, seed=0)
    test_id, val_id = first["test"][0]["id"], first["val"][0]["id"]
    pool = [{"id": 100 + k, "tag": "ab"[k % 2], "source": "pool"} for k in range(30)]
    dropped: list[dict] = []
    splits = split_sources_in_order(
        own + pool, ["own", "pool"], val_size=0.2, test_size=0.2, seed=0,
        groups=[[test_id, 100], [val_id, 101]], no_test=["pool"], dropped=dropped,
    )  # fmt: skip
    where = {it["id"]: s for s, v in splits.items() for it in v}
    assert dropped == [{"id": 100, "source": "pool", "near_copy_in": "test"}]
    assert 100 not in where and where[101] == "val"  # a copy of a val item follows it
    pool_where = Counter(where[i] for i in range(101, 130))
    assert pool_where["test"] == 0 and 4 <= pool_where["val"] <= 8
    for s in splits:  # the earlier source is split as without the pool
        assert [it["id"] for it in splits[s] if it["source"] == "own"] == [
            it["id"] for it in first[s]
        ]
