"""Pure pieces of the training loop: loss weights, temperature, checkpoints, model paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mltagger.core.errors import ConfigError, DataError
from mltagger.models.modelio import ModelNotAvailable, resolve_model_path
from mltagger.models.rule import softmax
from mltagger.training.batches import class_weights
from mltagger.training.calibrate import fit_temperature
from mltagger.training.checkpoints import find_checkpoint


def test_class_weights_balanced_and_sqrt():
    labels = [0] * 6 + [1] * 2  # n=8, K=2
    assert class_weights(labels, 2, "none") is None
    torch.testing.assert_close(class_weights(labels, 2, "balanced"), torch.tensor([8 / 12, 8 / 4]))
    torch.testing.assert_close(
        class_weights(labels, 2, "sqrt"), torch.tensor([(8 / 12) ** 0.5, 2**0.5])
    )
    with pytest.raises(DataError, match="no training items"):
        class_weights([0, 0], 2, "balanced")
    with pytest.raises(ConfigError, match="none, balanced or sqrt"):
        class_weights(labels, 2, "log")


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    # A model 3x over-confident: its logits are the true ones times 3.
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)


def test_find_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no epoch_"):
        find_checkpoint(str((tmp_path / "checkpoints").mkdir() or tmp_path))
    for n in (2, 10):
        (tmp_path / "checkpoints" / f"epoch_{n}").mkdir()
        (tmp_path / "checkpoints" / f"epoch_{n}" / "train_state.json").write_text("{}")
    assert find_checkpoint(str(tmp_path)).name == "epoch_10"
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        find_checkpoint(str(tmp_path / "checkpoints" / "nope"))


def test_resolve_model_path(tmp_path, tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(ModelNotAvailable, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="is not installed"):
        resolve_model_path("package:no_such_package_here/model")
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        resolve_model_path("./missing/folder")
    with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE"):
        resolve_model_path("someone/some-model")  # conftest sets HF_HUB_OFFLINE=1


def test_softmax_divides_the_logits_by_the_temperature():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    for t in (0.5, 1.0, 4.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(softmax(logits, t), expected, rtol=1e-12)
    # A higher temperature flattens: the top probability falls.
    assert softmax(logits, 4.0)[0].max() < softmax(logits, 1.0)[0].max()


def test_the_model_artifact_metadata_stays_within_wandbs_limit():
    """The run of 2026-12-07 stopped at its very end: 105 metadata keys, W&B takes 100."""
    import json

    from mltagger.training.tracking import METADATA_MAX, model_metadata

    splits = ("val", "test", "fresh", "test_global", "fresh_global")
    metrics = {f"{s}/m{i}": float(i) for s in splits for i in range(18)}
    metrics |= {f"threshold/t{i}": 0.5 for i in range(7)} | {"temperature": 1.0, "gate/x": 1.0}
    meta = {"data_sha256": "abc", "git": "123"}
    got = model_metadata(meta, metrics)
    assert len(got) <= METADATA_MAX and got["data_sha256"] == "abc"
    assert "test/m3" in got and "fresh/m3" in got and "gate/x" in got and "temperature" in got
    assert not any(k.startswith(("val/", "test_global/", "fresh_global/")) for k in got)
    # more figures than the limit even after the filter: the fresh ones and the identity stay
    many = {f"fresh/f{i}": 1.0 for i in range(150)}
    kept = model_metadata(meta, many)
    assert len(kept) == METADATA_MAX and {"data_sha256", "git"} <= set(kept)
    assert json.loads(json.dumps(kept)) == kept  # plain JSON values
