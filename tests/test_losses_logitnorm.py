"""LogitNorm (logitnorm.py) against a hand-worked case, its closed-form gradient and its scale invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from olsmooth.cli import main
from olsmooth.errors import UserInputError
from olsmooth.losses import LogitNormLoss, build_loss, logitnorm_loss

EPS = 1e-7


def test_a_3_4_5_triangle_by_hand():
    # ||(3, 4)|| = 5: with tau 0.5 the normalised logits are (1.2, 1.6); the loss of label 1 is log(1 + e^-0.4)
    z = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert logitnorm_loss(z, torch.tensor([1]), temperature=0.5).item() == pytest.approx(
        math.log(1 + math.exp(-0.4)), abs=1e-7)


def reference_gradient(z: np.ndarray, y: int, tau: float) -> np.ndarray:
    """d CE(f(z)) / dz for f(z) = z / (tau (||z|| + eps)): J^T (softmax(f) - onehot), with
    J_ij = delta_ij / (tau (n + eps)) - z_i z_j / (tau (n + eps)^2 n)."""
    n = np.linalg.norm(z)
    f = z / (tau * (n + EPS))
    q = np.exp(f - f.max()) / np.exp(f - f.max()).sum()
    jacobian = np.eye(len(z)) / (tau * (n + EPS)) - np.outer(z, z) / (tau * (n + EPS) ** 2 * n)
    return jacobian.T @ (q - np.eye(len(z))[y])


@pytest.mark.parametrize("tau", [0.04, 0.5, 1.0])
def test_gradient_matches_the_closed_form(tau):
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(4, 5)), np.array([0, 4, 2, 2])
    z = torch.tensor(logits, requires_grad=True)
    logitnorm_loss(z, torch.tensor(labels), tau).backward()
    expected = np.stack([reference_gradient(row, y, tau) for row, y in zip(logits, labels)]) / len(labels)
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-7, atol=1e-10)


def test_the_loss_ignores_the_logit_norm():
    z, y = torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 10, (8,))
    torch.testing.assert_close(logitnorm_loss(7.5 * z, y), logitnorm_loss(z, y), rtol=1e-6, atol=1e-9)
    assert torch.isfinite(logitnorm_loss(torch.zeros(2, 3), torch.tensor([0, 1])))  # a zero vector stays finite


def test_defaults_and_options():
    assert build_loss("logitnorm", 3).temperature == 0.04
    with pytest.raises(UserInputError, match=r"option temperature of method logitnorm must be > 0, got 0"):
        build_loss("logitnorm", 3, temperature=0)
    with pytest.raises(ValueError, match="LogitNormLoss option temperature must be > 0"):
        LogitNormLoss(3, temperature=-1.0)
    dense = torch.softmax(torch.randn(4, 3), dim=1)
    z = torch.randn(4, 3)
    expected = -(dense * torch.log_softmax(z / (z.norm(dim=1, keepdim=True) + EPS) / 0.04, dim=1)).sum(1).mean()
    torch.testing.assert_close(LogitNormLoss(3)(z, dense), expected)


def test_the_command_line_trains_it(tmp_path):
    assert main(["train", "--method", "logitnorm", "--loss-opt", "temperature=0.1", "--epochs", "1",
                 "--train-subset", "100", "--threads", "1", "--out", str(tmp_path / "run")]) == 0
