"""The pure steps of the training recipe (mltagger.training.build, loop, finish) and the one
place the training config is checked (config_rules), without training anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mltagger.core.errors import ConfigError
from mltagger.training import loop
from mltagger.training.build import check_device, parameter_groups, plan_updates
from mltagger.training.finish import BestLogits, calibrate
from mltagger.training.loop import stop_as_configured, stop_early


@pytest.mark.parametrize(
    ("loader", "limit", "accumulation", "epochs", "expected"),
    [
        (10, None, 1, 3, (10, 10, 30)),
        (10, 4, 1, 2, (4, 4, 8)),
        (10, 20, 1, 1, (10, 10, 10)),  # a limit above the loader's length changes nothing
        (10, None, 3, 2, (10, 4, 8)),  # a last partial group of batches is one update too
        (9, None, 3, 1, (9, 3, 3)),
    ],
)
def test_plan_updates(loader, limit, accumulation, epochs, expected):
    assert tuple(plan_updates(loader, limit, accumulation, epochs)) == expected


def test_parameter_groups_decay_weights_but_not_biases_or_layer_norms():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(2, 2)
            self.LayerNorm = torch.nn.LayerNorm(2)

    model = Tiny()
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p is model.dense.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {
        id(model.dense.bias),
        id(model.LayerNorm.weight),
        id(model.LayerNorm.bias),
    }


def test_stop_early_after_patience_epochs_without_gain():
    tcfg = OmegaConf.create({"early_stopping_patience": 2, "monitor": "val/f1_weighted"})
    assert not stop_early(1, tcfg)
    assert stop_early(2, tcfg)


def test_stop_as_configured_only_when_asked():
    never = OmegaConf.create({"stop_after_epochs": None})
    after_two = OmegaConf.create({"stop_after_epochs": 2})
    assert not stop_as_configured(5, never, "runs/x")
    assert not stop_as_configured(1, after_two, "runs/x")
    assert stop_as_configured(2, after_two, "runs/x")


def test_calibrate_is_one_when_temperature_scaling_is_off():
    logits = BestLogits(np.array([[3.0, 0.0]]), np.array([1]), np.zeros((1, 2)), np.array([0]))
    assert calibrate(logits, False) == 1.0
    assert calibrate(logits, True) > 1.0  # a confident mistake: softer probabilities fit better


def test_gpu_without_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device(OmegaConf.create({"accelerator": "cpu"}))
    with pytest.raises(ConfigError, match="no CUDA device is visible; use trainer=cpu"):
        check_device(OmegaConf.create({"accelerator": "gpu"}))


def test_the_recipe_checks_the_config_once_and_only_when_not_already_checked(monkeypatch):
    """train() runs the config rules unless told its caller did; then nothing else checks."""
    calls = []

    def fake_check(cfg, *, layer_must_exist=True):
        calls.append(layer_must_exist)
        raise ConfigError("stop here")

    monkeypatch.setattr(loop, "check_train_config", fake_check)
    cfg = OmegaConf.create({})
    with pytest.raises(ConfigError, match="stop here"):
        loop.train(cfg)
    with pytest.raises(ConfigError, match="stop here"):
        loop.train(cfg, data=object())  # a CV fold's own splits: no label-issue layer needed
    assert calls == [True, False]

    def started(cfg):
        raise RuntimeError("started")

    monkeypatch.setattr(loop, "start_run", started)
    with pytest.raises(RuntimeError, match="started"):  # the CLI checked it: straight to work
        loop.train(OmegaConf.create({"trainer": {}}), checked=True)
    assert calls == [True, False]
    assert not hasattr(loop, "check_config")  # the second checking path is gone
