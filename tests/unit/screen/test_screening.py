"""Duplicate screening logic: hashing and links, the lexical screen's features, sketch and index,
batch/store screening, the pair model and the benchmark arithmetic, on hand-made items."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from mltagger.core.errors import DataError
from mltagger.data.duplicates import content_hash
from mltagger.screen.copies import KINDS, make_duplicate
from mltagger.screen.fitting import (
    EDITED_KINDS,
    ScreenBench,
    _scores,
    choose_floor,
    choose_screen_threshold,
    fit_pair_model,
    precision_recall,
    screen_rates,
)
from mltagger.screen.index import ScreenIndex
from mltagger.screen.pairs import (
    FEATURES,
    Candidate,
    PairModel,
    best,
    candidates,
    load_model,
    pair_features,
)
from mltagger.screen.screening import EXACT, NEAR, Duplicate, screen_batch, url_key
from mltagger.screen.sketch import (
    SKETCH_DIM,
    VERSION,
    ScreenError,
    Text,
    normalised,
    profile,
    sketch,
    sketch_counts,
)

ITEM = {
    "title": "Image classification using a simple model",
    "description": "A tutorial on how to train a network on a large image dataset, with "
    "code and a paper explaining the approach step by step.",
}
OTHER = {
    "title": "Graph neural networks for molecules",
    "description": "Message passing on molecular graphs predicts quantum chemistry properties "
    "from atoms and bonds.",
}


def cosine_only(threshold: float = 0.5, floor: float = 0.0) -> PairModel:
    """A pair model that is a steep step at char4_cosine 0.8: probability > 0.5 above it."""
    w = np.zeros(len(FEATURES))
    w[0] = 50.0
    return PairModel(w, -40.0, threshold, k=5, floor=floor)


def test_content_hash_folds_case_punctuation_spacing_and_accents():
    a = content_hash("Object Detection with YOLO!", "Real-time, fast.")
    assert a == content_hash("object detection   with yolo", "real time fast")
    assert a == content_hash("OBJECT DETECTION WITH YÓLO", "real-time fast")
    assert a != content_hash("Object detection with YOLO", "Real-time, slow.")


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://www.GitHub.com/Org/Repo/", "github.com/org/repo"),
        ("https://x.org/a#readme", "x.org/a"),  # a fragment alone
        ("https://x.org/a#b#c", "x.org/a"),  # everything from the first "#"
        ("/just/a/path", None),  # no site: no page of its own
        ("https://x.org/a?b=1?c=2", "x.org/a"),  # everything from the first "?"
        ("http://github.com/org/repo?utm_source=x#readme", "github.com/org/repo"),
        ("github.com/org/repo", "github.com/org/repo"),
        ("https://arxiv.org", None),  # a bare site is not one item
        ("https://example.com/", None),
        ("", None),
        (None, None),
    ],
)
def test_url_key_names_the_page_not_the_way_it_was_written(url, key):
    assert url_key(url) == key


def test_identical_items_have_every_similarity_one_and_distinct_ones_low():
    a = profile(ITEM["title"], ITEM["description"])
    same = pair_features(a, profile(ITEM["title"].upper(), ITEM["description"] + " !"))
    assert same == pytest.approx(np.ones(len(FEATURES)))
    far = pair_features(a, profile(OTHER["title"], OTHER["description"]))
    assert far.shape == (len(FEATURES),) and far[0] < 0.3 and far[-1] == 0.0
    # symmetric
    b = profile(OTHER["title"], OTHER["description"])
    assert pair_features(a, b) == pytest.approx(pair_features(b, a))


def test_a_profile_holds_every_4_gram_of_the_padded_text_and_the_word_pairs():
    p = profile("Graph Nets", "For molecules")
    grams = {" gra", "grap", "raph", "aph ", "ph n", "h ne", " net", "nets", "ets "}
    assert p.title == grams  # the last gram ends with the padding
    assert p.words == {"graph", "nets", "for", "molecules", "graph nets", "nets for",
                       "for molecules"}  # fmt: skip
    assert (p.title_key, p.text) == ("graph nets", "graph nets for molecules")
    assert profile("ab", None).title == {" ab "} and profile("ab", None).description == set()


def test_a_cut_copy_is_contained_and_an_empty_description_scores_zero_there():
    full = profile(ITEM["title"], ITEM["description"])
    cut = profile(ITEM["title"], ITEM["description"][:60])
    f = dict(zip(FEATURES, pair_features(full, cut), strict=True))
    # every gram of the cut copy is in the full one, but the few at the cut
    assert f["char4_overlap"] > 0.97
    assert f["char4_jaccard"] < f["char4_overlap"] and f["length_ratio"] < 0.7
    assert f["same_title"] == 1.0 and f["title_cosine"] == pytest.approx(1.0)
    no_desc = dict(zip(FEATURES, pair_features(full, profile(ITEM["title"], "")), strict=True))
    assert no_desc["description_cosine"] == 0.0


def test_sketches_are_unit_stable_and_rank_a_copy_above_a_stranger():
    profs = [
        profile(**ITEM),
        profile(**make_duplicate(ITEM, "typos", random.Random(3))),
        profile(**OTHER),
        profile("", ""),
    ]
    v = sketch(profs)
    assert v.shape == (4, SKETCH_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-5)
    assert not v[3].any()  # nothing to sketch: a zero vector, never NaN
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]
    np.testing.assert_array_equal(sketch(profs[:1]), v[:1])  # the same text, the same sketch


def reference_counts(text: str) -> np.ndarray:
    """The sketch as `sketch_counts` documents it, one window at a time: each distinct 4-byte
    window of the padded text, read as a big-endian number, times 0x9E3779B97F4A7C15 modulo
    2**64; bit 20 of that picks +1 or -1, its top 8 bits the bucket."""
    padded = f" {text} ".encode()
    out = np.zeros(SKETCH_DIM, dtype=np.float32)
    for window in {padded[i : i + 4] for i in range(len(padded) - 3)}:
        h = int.from_bytes(window, "big") * 0x9E3779B97F4A7C15 % 2**64
        out[h >> 56] += 1.0 if (h >> 20) & 1 else -1.0
    return out


def test_sketch_counts_are_the_documented_hash_bit_for_bit():
    """Stored sketches and the calibration depend on these exact numbers: a change to the hash
    must come with a new screen VERSION, never silently."""
    texts = ["graph nets for molecules", "ab", "", "image segmentation with u net"]
    together = sketch_counts([Text(t) for t in texts])  # windows never span two texts
    for row, text in zip(together, texts, strict=True):
        np.testing.assert_array_equal(row, reference_counts(text))
        np.testing.assert_array_equal(sketch_counts([Text(text)])[0], reference_counts(text))
    assert np.abs(reference_counts("ab")).sum() == 1  # " ab ": exactly one window
    assert not sketch_counts([Text("")]).any()  # "  ": no window at all


def test_the_text_read_is_title_then_description_folded():
    assert normalised("Graph Nets!", None) == normalised("graph nets", "") == "graph nets"
    assert normalised("Graph Nets", "For Molecules.") == "graph nets for molecules"


def test_index_returns_nearest_ids_and_minus_one_when_empty():
    index = ScreenIndex()
    ids, sims = index.search(sketch([profile(**ITEM)]), 3)
    assert ids.tolist() == [[-1, -1, -1]]
    profs = [profile(**ITEM), profile(**OTHER)]
    index.add([10, 0], sketch(profs), [(ITEM["title"], ITEM["description"]), ("g", "")])
    assert len(index) == 2 and index.text(0) == ("g", "")
    ids, sims = index.search(sketch(profs), 2)
    assert ids[:, 0].tolist() == [10, 0]  # id 0 is an id like any other
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_pair_model_round_trips_and_refuses_another_version(tmp_path):
    m = cosine_only(0.7, floor=0.4)
    again = PairModel.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.threshold == 0.7 and again.floor == 0.4 and again.k == 5
    np.testing.assert_array_equal(again.weights, m.weights)
    f = np.zeros(len(FEATURES))
    f[0] = 0.8
    assert m.probability(f[None])[0] == pytest.approx(0.5)
    with pytest.raises(ScreenError, match="make dedup-eval"):
        PairModel.from_dict({**m.to_dict(), "version": "lexical-0"})
    with pytest.raises(ScreenError, match="no screen calibration"):
        load_model(tmp_path / "missing.json")
    (tmp_path / "s.json").write_text(json.dumps({"model": m.to_dict()}))
    assert load_model(tmp_path / "s.json").threshold == 0.7


def test_best_picks_the_most_probable_candidate():
    f = np.zeros(len(FEATURES))
    lo, hi = f.copy(), f.copy()
    lo[0], hi[0] = 0.5, 0.95
    cands = [Candidate(0.9, lo, item_id=1), Candidate(0.6, hi, batch_index=0)]
    top, p = best(cosine_only(), cands)
    assert top.batch_index == 0 and p > 0.99
    assert best(cosine_only(), []) == (None, 0.0)


def stored_index(items: list[dict], ids: list[int]) -> ScreenIndex:
    index = ScreenIndex()
    profs = [profile(it["title"], it["description"]) for it in items]
    index.add(ids, sketch(profs), [(it["title"], it["description"]) for it in items])
    return index


def test_screen_batch_order_exact_text_then_link_then_near_store_before_batch():
    stored = [ITEM, OTHER]
    index = stored_index(stored, [7, 8])
    hashes_known = {content_hash(**OTHER): 8}
    typo = make_duplicate(ITEM, "typos", random.Random(3))
    batch = [
        {**OTHER},  # exact text of stored 8
        {"title": "Totally new", "description": "About ponies.", "url": "https://x.org/a"},
        {"title": "Another new one", "description": "Trains dogs.", "url": "http://X.org/a/"},
        {**typo},  # near copy of stored 7
        {"title": "Fresh", "description": "Unrelated words here entirely."},
        {"title": "fresh!", "description": "unrelated words here, entirely"},  # exact of batch 4
        {"title": "Fresh", "description": "Unrelated words here entirely. Plus more."},
    ]
    hashes = [content_hash(it["title"], it["description"]) for it in batch]
    out, sketches = screen_batch(
        batch,
        hashes,
        lambda hs, us: ({h: i for h, i in hashes_known.items() if h in hs}, {}),
        index,
        cosine_only(),
    )
    assert out[0] == Duplicate(EXACT, 1.0, item_id=8, how="text")
    assert out[1] is None
    assert out[2] == Duplicate(EXACT, 1.0, batch_index=1, how="link")  # same page, other words
    assert out[3].kind == NEAR and out[3].item_id == 7 and out[3].similarity >= 0.5
    assert out[4] is None
    assert out[5] == Duplicate(EXACT, 1.0, batch_index=4, how="text")
    assert out[6].kind == NEAR and out[6].batch_index in (4, 5)  # 5 repeats 4's text
    assert sketches.shape == (len(batch), SKETCH_DIM)
    # A stored link is found by the store's lookup, before any batch match.
    out2, _ = screen_batch(
        batch[1:3],
        hashes[1:3],
        lambda hs, us: ({}, {"x.org/a": 3} if "x.org/a" in us else {}),
        index,
        None,
    )
    assert out2 == [Duplicate(EXACT, 1.0, item_id=3, how="link")] * 2
    # Without a model only the exact stage runs.
    exact_only, _ = screen_batch(batch, hashes, lambda hs, us: ({}, {}), index, None)
    assert [d and d.kind for d in exact_only] == [None, None, EXACT, None, None, EXACT, None]


def test_screen_batch_refuses_hashes_that_do_not_match_the_items():
    def nothing_stored(hashes, keys):
        return {}, {}

    items = [dict(ITEM, url=None), dict(OTHER, url=None)]
    hashes = [content_hash(it["title"], it["description"]) for it in items]
    with pytest.raises(ValueError):  # never screened against another item's hash
        screen_batch(items, hashes[:1], nothing_stored, None, None)


def test_the_threshold_and_the_floor_decide_near_calls():
    index = stored_index([ITEM], [1])
    copy = make_duplicate(ITEM, "truncated", random.Random(0))
    h = [content_hash(**copy)]
    args = (lambda hs, us: ({}, {}), index)
    (near,), _ = screen_batch([copy], h, *args, cosine_only(0.5))
    assert near is not None and near.item_id == 1
    (strict,), _ = screen_batch([copy], h, *args, cosine_only(near.similarity + 1e-3))
    assert strict is None  # above its probability: not a duplicate
    (below,), _ = screen_batch([copy], h, *args, cosine_only(near.similarity - 1e-4))
    assert below == near  # the answer's probability is rounded to 4 decimals
    (floored,), _ = screen_batch([copy], h, *args, cosine_only(0.5, floor=1.01))
    assert floored is None  # no candidate reaches the floor: never scored


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_copy_changes_the_text_but_keeps_it_recognisable(kind):
    copy = make_duplicate(ITEM, kind, random.Random(1))
    assert copy != ITEM
    same_hash = content_hash(**copy) == content_hash(**ITEM)
    assert same_hash == (kind == "format")  # only the format-only copy is an exact duplicate
    f = pair_features(profile(**ITEM), profile(**copy))
    assert f[0] > 0.6  # lexically close, whatever the kind
    with pytest.raises(ValueError, match="unknown duplicate kind"):
        make_duplicate(ITEM, "shuffled", random.Random(0))


def test_precision_recall_full_record_and_empty_cases():
    scores = np.array([0.9, 0.8, 0.4, 0.95])
    truth = np.array([True, False, True, True])
    assert precision_recall(scores, truth, 0.85) == {
        "threshold": 0.85,
        "precision": 1.0,
        "recall": 2 / 3,
        "tp": 2,
        "fp": 0,
        "fn": 1,
    }
    none_called = precision_recall(scores, truth, 0.99)
    assert (none_called["precision"], none_called["recall"]) == (1.0, 0.0)


def test_precision_recall_counts_a_score_at_the_threshold_as_called():
    scores = np.array([0.9, 0.5, 0.5, 0.2, 0.7])
    truth = np.array([True, False, True, True, False])
    # called: 0.9, 0.5, 0.5 and 0.7 (at the threshold counts); 2 right, 2 wrong, 1 missed
    assert precision_recall(scores, truth, 0.5) == {
        "threshold": 0.5,
        "precision": 0.5,
        "recall": 2 / 3,
        "tp": 2,
        "fp": 2,
        "fn": 1,
    }
    half_found = precision_recall(np.array([0.8, 0.3]), np.array([True, True]), 0.5)
    assert (half_found["precision"], half_found["recall"]) == (1.0, 0.5)
    # nothing to find: recall is 1 (nothing missed), precision counts the false call
    nothing = precision_recall(np.array([0.8, 0.3]), np.array([False, False]), 0.5)
    assert (nothing["precision"], nothing["recall"], nothing["fp"]) == (0.0, 1.0, 1)


def _copy_rows(sims: dict[str, list[float]], kind: str = "typos") -> tuple[dict, SimpleNamespace]:
    """A bench whose copies (split -> the sketch similarity at which each finds its original)
    also meet a closer stranger, as `ScreenBench.run` records them."""
    copies, rows = [], []
    for split, values in sims.items():
        for s in values:
            k = len(copies)
            copies.append({"split": split, "kind": kind, "of": k})
            stranger = Candidate(0.99, np.zeros(len(FEATURES)), item_id=10_000 + k)
            rows.append([stranger, Candidate(s, np.zeros(len(FEATURES)), item_id=k)])
    return {"copies": rows}, SimpleNamespace(copies=copies)


# no copy of the split: numpy warns about the mean of nothing, and no step qualifies
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_choose_floor_is_the_highest_step_that_keeps_every_edited_copy_of_the_split():
    bench = _copy_rows({"a": [0.62, 0.47, 0.91, 0.55], "b": [0.1]})
    unedited = _copy_rows({"a": [0.1]}, kind="exact")  # not an edited copy: not counted
    # steps of 0.05 from 0.30 to 0.80; 0.47 is the lowest: 0.45 keeps it, 0.50 would lose it
    assert choose_floor([bench, unedited]) == 0.45  # split a, no loss allowed
    assert choose_floor([bench], "b") == 0.0  # 0.1 is below every step
    assert choose_floor([_copy_rows({"a": [0.95, 0.97]})]) == 0.8  # the highest step
    # a copy exactly at a step keeps its original there (candidates at the floor are scored)
    at_step = float(np.arange(0.30, 0.801, 0.05)[3])
    assert choose_floor([_copy_rows({"a": [at_step, 0.9]})]) == 0.45
    # the share that may be lost is a bound, reached exactly: 1 of 4
    one_low = _copy_rows({"a": [0.2, 0.62, 0.66, 0.71]})
    assert choose_floor([one_low], max_loss=0.25) == 0.6
    assert choose_floor([one_low]) == 0.0
    assert choose_floor([_copy_rows({"b": [0.5]})], "a") == 0.0  # no copy of the split
    # an original the index did not return is lost at any floor: it does not count
    missed = _copy_rows({"a": [0.62]})
    missed[0]["copies"][0] = missed[0]["copies"][0][:1]
    assert choose_floor([missed, bench]) == 0.45


def test_choose_floor_refuses_rows_that_do_not_match_their_bench():
    rows, bench = _copy_rows({"a": [0.5, 0.6]})
    with pytest.raises(ValueError):
        choose_floor([({"copies": rows["copies"][:1]}, bench)])


def _scored(p: float, sim: float = 0.9) -> Candidate:
    """A candidate that `_logit_model` scores `p`."""
    features = np.zeros(len(FEATURES))
    features[0] = np.log(p / (1 - p))
    return Candidate(sim, features, item_id=1)


def _logit_model(floor: float = 0.0) -> PairModel:
    w = np.zeros(len(FEATURES))
    w[0] = 1.0
    return PairModel(w, 0.0, 0.5, k=5, floor=floor)


def test_scores_are_one_for_an_exact_match_and_count_candidates_at_the_floor():
    model = _logit_model(floor=0.4)
    cands = [[_scored(0.3), _scored(0.8, sim=0.4)], [_scored(0.8, sim=0.39)], [], [_scored(0.2)]]
    out = _scores(model, cands, [None, None, 7, 3])
    assert out == pytest.approx([0.8, 0.0, 1.0, 1.0])


def test_choose_threshold_ranks_each_store_apart_and_reads_only_its_split(monkeypatch):
    queries = [{"source": "t", "ref": k, "split": "a"} for k in range(4)]
    queries += [{"source": "t", "ref": 4, "split": "b"}, {"source": "t", "ref": 5, "split": "a"}]
    adjudicated = {"t:5": {"verdict": "copy"}}  # a person found it is a copy after all
    monkeypatch.setattr("mltagger.screen.fitting.load_adjudicated", lambda root=None: adjudicated)
    rows = {
        "queries": [[_scored(p)] for p in (0.3, 0.9, 0.5, 0.7, 0.99, 0.98)],
        "query_exact": [None] * 6,
    }
    at = [(rows, SimpleNamespace(queries=queries))]
    model = _logit_model()
    # split a, without the adjudicated one: 0.9, 0.7, 0.5, 0.3
    assert choose_screen_threshold(model, at, 0.0) == pytest.approx(0.9 + 1e-6)
    assert choose_screen_threshold(model, at, 0.25) == pytest.approx(0.7 + 1e-6)
    assert choose_screen_threshold(model, at, 0.5) == pytest.approx(0.5 + 1e-6)
    assert choose_screen_threshold(model, at, 1.0) == 0.0  # every new item may be called
    # the strictest store decides
    other = {"queries": [[_scored(0.2)]] * 6, "query_exact": [None] * 6}
    both = [*at, (other, SimpleNamespace(queries=queries))]
    assert choose_screen_threshold(model, both, 0.25) == pytest.approx(0.7 + 1e-6)
    assert choose_screen_threshold(model, both[::-1], 0.25) == pytest.approx(0.7 + 1e-6)
    # an exact match scores 1: the threshold stays at 1, never above it
    exact = {**rows, "query_exact": [None, 3, None, None, None, None]}
    assert choose_screen_threshold(model, [(exact, at[0][1])], 0.0) == 1.0


# -- the benchmark arithmetic, on a tiny hand-made bench ----------------------------------------


def tiny_bench() -> SimpleNamespace:
    rng = random.Random(0)

    def sentence(k: int) -> str:  # made-up words: distinct items share next to nothing
        r = random.Random(k)
        return " ".join("".join(r.choice("bcdfghklmnprstvz") for _ in range(6)) for _ in range(12))

    store = [
        {"title": sentence(5000 + k)[:20], "description": sentence(k), "url": None}
        for k in range(60)
    ]
    queries = [
        {
            "title": sentence(9000 + k)[:20],
            "description": sentence(1000 + k),
            "url": None,
            "source": "t",
            "ref": k,
            "split": "ab"[k % 2],
        }
        for k in range(40)
    ]
    copies = []
    for k in range(40):
        kind = EDITED_KINDS[k % len(EDITED_KINDS)]
        copies.append(
            {
                **make_duplicate(store[k], kind, rng),
                "url": None,
                "kind": kind,
                "of": k,
                "split": "ab"[(k // len(EDITED_KINDS)) % 2],
            }
        )
    return SimpleNamespace(stores={"s": store}, queries=queries, copies=copies, info={})


def test_bench_fit_choose_and_report_on_the_other_split(monkeypatch):
    monkeypatch.setattr("mltagger.screen.fitting.load_adjudicated", lambda root=None: {})
    bench = tiny_bench()
    sb = ScreenBench(bench, "s")
    sb.run([30, 60])
    assert sb.rows[30]["stored"] == 30 and sb.rows[60]["stored"] == 60
    at = [(sb.rows[60], bench)]
    floor = choose_floor(at, "a")
    assert 0.3 <= floor <= 0.8
    with pytest.raises(DataError, match="no genuinely new"):
        fit_pair_model(at, "a", floor=1.0)  # nothing reaches the floor: nothing to learn from
    model = fit_pair_model(at, "a", floor=0.0)
    thr = choose_screen_threshold(model, at, max_fdr=0.0)
    model = PairModel(model.weights, model.bias, thr, model.k, model.floor)
    out = screen_rates({"s": sb}, model, [30, 60])
    fd = {r["stored"]: r for r in out["false_duplicates"]}
    assert fd[60]["queries"] == 20 and fd[60]["rate"] == 0.0  # random sentences: all new
    rec = {(r["stored"], r["kind"]): r for r in out["recall"]}
    assert rec[(60, "edited (pooled)")]["recall"] >= 0.9
    # only copies whose original is stored count at the smaller size
    assert rec[(30, "edited (pooled)")]["copies"] < rec[(60, "edited (pooled)")]["copies"]
    assert len(out["curve"]["thresholds"]) == len(out["curve"]["recall"]["s: typos"])


def test_choose_threshold_allows_exactly_the_rate_asked_for(monkeypatch):
    monkeypatch.setattr("mltagger.screen.fitting.load_adjudicated", lambda root=None: {})
    f_hi, f_lo = np.zeros(len(FEATURES)), np.zeros(len(FEATURES))
    f_hi[0], f_lo[0] = 0.95, 0.5
    queries = [{"source": "t", "ref": k, "split": "a"} for k in range(4)]
    rows = {
        "queries": [[Candidate(0.9, f_hi, item_id=1)]] + [[Candidate(0.9, f_lo, item_id=1)]] * 3,
        "query_exact": [None] * 4,
    }
    bench = SimpleNamespace(queries=queries)
    m = cosine_only()
    p_hi = float(m.probability(f_hi[None])[0])
    p_lo = float(m.probability(f_lo[None])[0])
    # 0% allowed: just above the highest new item; 25% (1 of 4): just above the next one
    assert choose_screen_threshold(m, [(rows, bench)], 0.0) == pytest.approx(p_hi + 1e-6)
    assert choose_screen_threshold(m, [(rows, bench)], 0.25) == pytest.approx(p_lo + 1e-6)


def test_version_is_named_in_the_calibration_error():
    with pytest.raises(ScreenError, match=VERSION):
        PairModel.from_dict({"version": "old", "features": []})


def test_candidates_use_the_floor_and_batch_order():
    profs = [profile(**ITEM), profile(**ITEM), profile(**OTHER)]
    sk = sketch(profs)
    out = candidates(profs, sk, None, k=5, floor=0.5)
    assert out[0] == [] and [c.batch_index for c in out[1]] == [0] and out[2] == []
    assert candidates(profs, sk, None, k=5, floor=0.5, within_batch=False) == [[], [], []]


def test_a_candidate_at_exactly_the_floor_is_kept_and_an_id_of_0_is_an_item():
    profs = [profile(**ITEM), profile(ITEM["title"], ITEM["description"] + " Extra words.")]
    sk = sketch(profs)
    index = stored_index([ITEM], [0])  # only -1 marks an empty slot
    _, sims = index.search(sk[1:], 5)
    at = float(sims[0, 0])
    (found,) = candidates(profs[1:], sk[1:], index, k=5, floor=at)
    assert [(c.item_id, c.sketch_similarity) for c in found] == [(0, at)]
    within = float((sk @ sk.T)[1, 0])  # a batch of two: the second meets the first
    out = candidates(profs, sk, None, k=5, floor=within)
    assert out[0] == [] and [(c.batch_index, c.sketch_similarity) for c in out[1]] == [(0, within)]


def test_a_near_call_at_exactly_the_threshold_counts_and_keeps_4_decimals():
    index = stored_index([ITEM], [7])
    typo = make_duplicate(ITEM, "typos", random.Random(3))
    hashes = [content_hash(typo["title"], typo["description"])]

    def nothing_stored(hashes, keys):
        return {}, {}

    flat = PairModel(np.zeros(len(FEATURES)), 0.0, 0.5, k=5, floor=0.0)  # every pair: 0.5
    (dup,), _ = screen_batch([typo], hashes, nothing_stored, index, flat)
    assert dup == Duplicate(NEAR, 0.5, item_id=7)
    tilted = PairModel(np.zeros(len(FEATURES)), 0.3, 0.5, k=5, floor=0.0)  # 0.57444...
    (dup,), sketches = screen_batch([typo], hashes, nothing_stored, index, tilted)
    assert dup.similarity == 0.5744
    # the sketch stored for the next screen reads the title and the description
    assert np.array_equal(sketches, sketch([Text(normalised(typo["title"], typo["description"]))]))


def test_each_item_keeps_its_k_nearest_earlier_batch_items_and_its_stored_ones():
    rng = random.Random(5)
    batch = [make_duplicate(ITEM, kind, rng) for kind in ("typos", "truncated", "format")]
    profs = [profile(it["title"], it["description"]) for it in batch]
    sk = sketch(profs)
    within = sk @ sk.T
    nearest = int(np.argmax(within[2, :2]))
    assert within[2, 0] != within[2, 1]  # one earlier item is strictly nearer
    index = stored_index([ITEM], [7])
    out = candidates(profs, sk, index, k=1, floor=0.0)
    assert [c.item_id for c in out[2] if c.item_id is not None] == [7]  # stored: its own k
    assert [c.batch_index for c in out[2] if c.batch_index is not None] == [nearest]
    both = candidates(profs, sk, index, k=2, floor=0.0)[2]
    assert sorted(c.batch_index for c in both if c.batch_index is not None) == [0, 1]
