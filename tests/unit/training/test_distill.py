"""The distillation loss: the hard loss alone at alpha 0, the T²-scaled KL alone at alpha 1."""

import math

import pytest
import torch

from mltagger.training.distill import distillation_loss


def test_alpha_mixes_the_soft_and_the_hard_loss():
    student = torch.tensor([[2.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    hard = torch.tensor(0.7)
    assert distillation_loss(student, teacher, hard, 2.0, 0.0).item() == pytest.approx(0.7)
    # At T=2 the softened distributions are softmax([1, 0]) and softmax([0, 1]).
    p_s = [math.exp(1) / (1 + math.exp(1)), 1 / (1 + math.exp(1))]
    p_t = p_s[::-1]
    kl = sum(t * math.log(t / s) for t, s in zip(p_t, p_s, strict=True))
    soft = distillation_loss(student, teacher, hard, 2.0, 1.0).item()
    assert soft == pytest.approx(4 * kl, rel=1e-5)
    half = distillation_loss(student, teacher, hard, 2.0, 0.5).item()
    assert half == pytest.approx(0.5 * 4 * kl + 0.5 * 0.7, rel=1e-5)


def test_a_student_that_matches_its_teacher_pays_only_the_hard_part():
    logits = torch.tensor([[1.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    loss = distillation_loss(logits, logits.clone(), torch.tensor(0.3), 3.0, 0.4)
    assert loss.item() == pytest.approx(0.6 * 0.3, abs=1e-6)
