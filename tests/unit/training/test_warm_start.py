"""The warm-start fine-tune learner of the label replay, on a tiny BERT with an `other` class:
it learns from the answers, its gates work, and a rerun into the same folder resumes."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.evaluation.replay import ReplaySettings, Reviewer, replay
from mltagger.models.modelio import InferenceConfig, write_model_metadata

LABELS = ["computer-vision", "time-series", "other"]
WORDS = {0: "image pixels camera photo", 1: "forecast series sales weekly", 2: "recipe garden shoe"}


def texts(classes, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.permutation(WORDS[int(c)].split())[:3]) for c in classes]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tiny_model_dir):
    """The suite's tiny BERT with a fresh 3-class head (computer vision, time series, other)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("warm_start_model")
    words = sorted({w for v in WORDS.values() for w in v.split()})
    vocab = (tiny_model_dir / "vocab.txt").read_text().splitlines()
    (folder / "vocab.txt").write_text("\n".join(vocab + [w for w in words if w not in vocab]))
    from transformers import BertTokenizerFast

    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=3)
    config.vocab_size = len((folder / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    write_model_metadata(folder, LABELS, InferenceConfig(threshold=0.5, approved_tags=LABELS))
    assert AutoTokenizer.from_pretrained(folder).tokenize("forecast photo") == ["forecast", "photo"]
    return folder


def world():
    rng = np.random.default_rng(0)
    base_y = rng.choice(3, size=40)
    val_y = rng.choice(3, size=24)
    pool_y = rng.choice(3, size=48)
    t = {"pool": texts(pool_y, 1), "val": texts(val_y, 2), "base": texts(base_y, 3)}
    return t, base_y, val_y, pool_y


def run(folder, model, gate: str = "none"):
    from mltagger.training.warm_start import WarmStartLearner

    t, base_y, val_y, pool_y = world()
    s = ReplaySettings("breaking_ties", day_size=12, budget=6, min_support=3, gate=gate)
    frozen = None
    if gate == "logistic":  # stand-in frozen embeddings: one-hot of the gold class, noisy
        rng = np.random.default_rng(4)

        def emb(y):
            return np.eye(3)[y] + rng.normal(scale=0.3, size=(len(y), 3))

        frozen = {"pool": emb(pool_y), "val": emb(val_y), "base": emb(base_y),
                  "negatives": emb(np.full(20, 2)), "other": 2}  # fmt: skip
    learner = WarmStartLearner(model, {**t, "base_y": base_y}, s, folder, frozen=frozen, lr=5e-3)
    pool_x = np.zeros((len(pool_y), 1))  # the replay's own embeddings are not read
    log = replay(pool_x, Reviewer(pool_y, 3, 0.0, 0), (np.zeros((40, 1)), base_y),
                 (np.zeros((24, 1)), val_y), s, 3, learner=learner)  # fmt: skip
    return learner, log, pool_y


def test_it_learns_from_the_answers_and_resumes_without_training_again(tmp_path, tiny_classifier):
    learner, log, _gold = run(tmp_path / "state", tiny_classifier)
    assert learner.trained_days == 4  # a pass after each of the 4 days
    # the model changed: its scores on the last day are not the untrained head's
    start = np.asarray(learner._read(0)["val"])
    end = np.asarray(learner.record["val"])
    assert np.abs(start - end).max() > 0.05
    again, log2, _ = run(tmp_path / "state", tiny_classifier)
    assert again.trained_days == 0
    np.testing.assert_array_equal(log2.auto, log.auto)
    np.testing.assert_array_equal(log2.tag, log.tag)
    assert log2.reviewed == log.reviewed


def test_a_run_killed_after_a_pass_resumes_at_that_day(tmp_path, tiny_classifier, monkeypatch):
    from mltagger.training.warm_start import WarmStartLearner

    _, clean, _ = run(tmp_path / "clean", tiny_classifier)
    write = WarmStartLearner._write

    def killed(self):  # the pass of day 3 is saved, its record is not
        if self.step == 3 and self.record["val"] is None and not self.record["pool"]:
            raise KeyboardInterrupt
        write(self)

    monkeypatch.setattr(WarmStartLearner, "_write", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "state", tiny_classifier)
    monkeypatch.setattr(WarmStartLearner, "_write", write)
    resumed, log, _ = run(tmp_path / "state", tiny_classifier)
    assert resumed.trained_days == 2  # days 3 and 4 again, from day 2's saved state
    np.testing.assert_array_equal(log.auto, clean.auto)
    np.testing.assert_array_equal(log.tag, clean.tag)
    assert sorted(p.name for p in (tmp_path / "state").glob("model_*.pt")) == ["model_0004.pt"]


def test_the_logistic_gate_files_the_negatives_look_alikes_under_other(tmp_path, tiny_classifier):
    learner, _log, gold = run(tmp_path / "gated", tiny_classifier, gate="logistic")
    p = learner.proba(np.arange(len(gold)))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # the gate (on the stand-in embeddings) puts most of `other`'s mass on the `other` items
    assert p[gold == 2, 2].mean() > p[gold != 2, 2].mean() + 0.3
