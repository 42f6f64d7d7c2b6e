"""The drift tests on synthetic windows: quiet on the reference's own distribution, loud on a
shift, and the profile survives a round trip through its files."""

import numpy as np
import pytest

from mltagger.evaluation.drift import Profile, drift_tests, mmd_test, unknown_share

TAGS = ["nlp", "cv", "other"]
WORDS = [f"w{i}" for i in range(200)]


def sample(rng, n, shift=0.0, long=False, new_words=False):
    emb = rng.normal(size=(n, 8)) + shift
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    vocab = [f"z{i}" for i in range(200)] if new_words else WORDS
    size = 60 if long else 12
    texts = [" ".join(rng.choice(vocab, size=size)) for _ in range(n)]
    tags = rng.choice(TAGS, size=n, p=[0.5, 0.3, 0.2] if not shift else [0.1, 0.1, 0.8])
    conf = rng.uniform(0.5, 1.0, size=n) * (0.7 if shift else 1.0)
    preds = [
        {"tag": t, "confidence": c, "needs_review": c < 0.7}
        for t, c in zip(tags, conf, strict=True)
    ]
    return texts, emb.astype(np.float32), preds


def profile_from(rng, n=200):
    texts, emb, preds = sample(rng, n)
    return Profile(
        embeddings=emb,
        confidences=np.array([p["confidence"] for p in preds]),
        lengths=np.array([len(t) for t in texts]),
        unknown=np.array([unknown_share(t, set(WORDS)) for t in texts]),
        tags={t: sum(p["tag"] == t for p in preds) for t in TAGS},
        review_rate=float(np.mean([p["needs_review"] for p in preds])),
        vocabulary=set(WORDS),
        model_version="m1",
    )


def test_windows_from_the_reference_distribution_raise_no_alarm():
    rng = np.random.default_rng(0)
    profile = profile_from(rng)
    alarms = [drift_tests(profile, *sample(rng, 50), seed=s)["alarm"]
              for s in range(10)]  # fmt: skip
    assert sum(alarms) == 0


def test_a_shifted_window_fires_the_tests_that_see_it():
    rng = np.random.default_rng(1)
    profile = profile_from(rng)
    out = drift_tests(profile, *sample(rng, 50, shift=1.5, long=True, new_words=True))
    assert out["alarm"]
    assert {"embedding", "tags", "length", "vocabulary", "confidence"} <= set(out["fired"])
    assert all(0 <= p <= 1 for p in out["pvalues"].values())
    assert out["pvalues"]["embedding"] == pytest.approx(
        min(1.0, out["raw_pvalues"]["embedding"] * 6)
    )


def test_mmd_permutation_p_value_is_small_only_for_different_samples():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    assert mmd_test(a, b, permutations=100)[1] > 0.05
    assert mmd_test(a, b + 2.0, permutations=100)[1] == pytest.approx(1 / 101)


def test_unknown_share_counts_words_training_never_saw():
    assert unknown_share("Graph nets for graphs", {"graph", "nets", "for"}) == 0.25
    assert unknown_share("", {"a"}) == 0.0


def test_profile_round_trip_and_a_clear_error_without_one(tmp_path):
    profile = profile_from(np.random.default_rng(3))
    profile.save(tmp_path)
    back = Profile.load(tmp_path)
    assert back.tags == profile.tags and back.vocabulary == profile.vocabulary
    assert np.allclose(back.embeddings, profile.embeddings, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="mltagger profile"):
        Profile.load(tmp_path / "nothing")
