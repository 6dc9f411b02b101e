"""Focal loss and FLSD-53 (focal.py) against hand-worked cases and a per-sample reference written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from olsmooth.cli import main
from olsmooth.errors import UserInputError
from olsmooth.losses import FocalLoss, build_loss, focal_loss


def reference(logits: np.ndarray, labels: np.ndarray, gamma: float, sample_dependent: bool):
    """The loss and its gradient, one sample at a time, as the authors' loop picks gamma (float64, closed form)."""
    total, grad = 0.0, np.zeros_like(logits)
    for i, (z, y) in enumerate(zip(logits, labels)):
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        g = gamma
        if sample_dependent and p[y] < 0.5:
            g = 5.0 if p[y] < 0.2 else 3.0
        total += -(1 - p[y]) ** g * math.log(p[y])
        # dL/dp_y = g (1 - p)^(g-1) log p - (1 - p)^g / p, and dp_y/dz_k = p_y (delta_yk - p_k)
        dl_dp = g * (1 - p[y]) ** (g - 1) * math.log(p[y]) - (1 - p[y]) ** g / p[y]
        grad[i] = dl_dp * p[y] * ((np.arange(len(z)) == y) - p)
    n = len(labels)
    return total / n, grad / n


def test_two_classes_at_equal_logits_by_hand():
    # p_y = 1/2: loss (1/2)^2 ln 2; dL/dz_y = g p (1-p)^g log p - (1-p)^(g+1) = -ln2/4 - 1/8, and the opposite
    logits = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    loss = focal_loss(logits, torch.tensor([0]), gamma=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-12)
    by_hand = -math.log(2) / 4 - 1 / 8
    torch.testing.assert_close(logits.grad, torch.tensor([[by_hand, -by_hand]], dtype=torch.float64))


@pytest.mark.parametrize("sample_dependent", [False, True])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.0])
def test_matches_the_per_sample_reference_with_gradients(gamma, sample_dependent):
    # p_y about 0.05, 0.3 and 0.9 lie in each row of FLSD's table
    logits = np.array([[0.0, 3.0, 0.0], [0.0, 0.8, 0.0], [3.0, 0.0, 0.2], [1.0, -1.0, 0.5]])
    labels = np.array([0, 0, 0, 2])
    expected, expected_grad = reference(logits, labels, gamma, sample_dependent)
    z = torch.tensor(logits, requires_grad=True)
    loss = focal_loss(z, torch.tensor(labels), gamma, sample_dependent)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(z.grad.numpy(), expected_grad, rtol=1e-9, atol=1e-12)


def test_flsd_53_uses_gamma_5_below_p_02_and_3_above():
    p = torch.tensor([0.1, 0.3, 0.9], dtype=torch.float64)
    logits = torch.log(torch.stack([p, 1 - p], dim=1))  # two classes: p_y = p for label 0
    per_sample = [focal_loss(logits[i:i + 1], torch.tensor([0]), 3.0, True).item() for i in range(3)]
    expected = [-(1 - q) ** g * math.log(q) for q, g in zip(p.tolist(), (5, 3, 3))]
    assert per_sample == pytest.approx(expected, rel=1e-12)


def test_gamma_zero_is_cross_entropy_and_dense_targets_weight_each_class():
    torch.manual_seed(0)
    z, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    torch.testing.assert_close(focal_loss(z, y, gamma=0.0), torch.nn.functional.cross_entropy(z, y))
    t = torch.softmax(torch.randn(6, 4), dim=1)
    p = torch.softmax(z, dim=1)
    expected = -(t * (1 - p) ** 2 * p.log()).sum(dim=1).mean()
    torch.testing.assert_close(focal_loss(z, t, gamma=2.0), expected)


def test_half_precision_logits_give_a_float32_loss_and_a_finite_gradient_at_certainty():
    z = torch.tensor([[40.0, 0.0]], requires_grad=True)  # p_y rounds to 1
    loss = focal_loss(z, torch.tensor([0]), gamma=0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    assert focal_loss(torch.randn(3, 4).half(), torch.tensor([0, 1, 2])).dtype == torch.float32


def test_options_are_declared_once_and_checked_everywhere():
    assert build_loss("focal", 3).gamma == 3.0
    assert build_loss("focal", 3, sample_dependent=True).sample_dependent is True
    with pytest.raises(UserInputError, match="option gamma of method focal must be >= 0, got -1"):
        build_loss("focal", 3, gamma=-1)
    with pytest.raises(ValueError, match="FocalLoss option gamma must be >= 0"):
        FocalLoss(3, gamma=-1.0)


def test_flsd_reports_the_share_of_each_gamma_per_epoch():
    loss = FocalLoss(2, sample_dependent=True)
    p = torch.tensor([0.1, 0.15, 0.3, 0.9])
    loss(torch.log(torch.stack([p, 1 - p], dim=1)), torch.zeros(4, dtype=torch.long))
    loss.next_epoch()
    assert loss.epoch_metrics() == pytest.approx({"gamma5_share": 0.5, "gamma3_share": 0.25})
    loss.eval()
    loss(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))  # evaluation batches count nothing
    loss.next_epoch()
    assert loss.epoch_metrics() == {"gamma5_share": 0.0, "gamma3_share": 0.0}


def test_the_command_line_trains_flsd_53_and_writes_its_shares(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--method", "focal", "--loss-opt", "sample_dependent=true", "--epochs", "2",
                 "--train-subset", "200", "--threads", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0.0 <= r["loss_gamma5_share"] + r["loss_gamma3_share"] <= 1.0 for r in rows)
