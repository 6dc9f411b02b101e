"""MbLS, margin-based label smoothing (mbls.py), against a hand-worked case and a reference written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from olsmooth.cli import main
from olsmooth.errors import UserInputError
from olsmooth.losses import MarginLabelSmoothing, build_loss, mbls_loss


def test_one_sample_by_hand():
    # z = (12, 0, 1), margin 10: distances (0, 12, 11), over the margin (0, 2, 1), mean 1, times alpha 0.1
    z = torch.tensor([[12.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    loss = mbls_loss(z, torch.tensor([0]), margin=10.0, alpha=0.1)
    loss.backward()
    ce = -12.0 + math.log(math.exp(12.0) + 1.0 + math.e)
    assert loss.item() == pytest.approx(ce + 0.1, rel=1e-12)
    p = np.exp([12.0, 0.0, 1.0]) / np.exp([12.0, 0.0, 1.0]).sum()
    # penalty: each active distance adds alpha/K to the gradient of z_0 (the maximum) and -alpha/K to its own
    expected = p - np.array([1.0, 0.0, 0.0]) + 0.1 / 3 * np.array([2.0, -1.0, -1.0])
    np.testing.assert_allclose(z.grad.numpy()[0], expected, rtol=1e-12)


def reference(logits: np.ndarray, labels: np.ndarray, margin: float, alpha: float) -> float:
    """CE plus alpha times the mean over samples and classes of max(0, max z - z_k - margin), sample by sample."""
    total = 0.0
    for z, y in zip(logits, labels):
        total += math.log(np.exp(z - z.max()).sum()) + z.max() - z[y]
        total += alpha * sum(max(0.0, z.max() - zk - margin) for zk in z) / len(z)
    return total / len(labels)


@pytest.mark.parametrize("margin, alpha", [(10.0, 0.1), (2.0, 0.5), (0.0, 1.0)])
def test_matches_the_reference_and_a_numerical_gradient(margin, alpha):
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(scale=6.0, size=(5, 4)), np.array([0, 1, 2, 3, 0])
    z = torch.tensor(logits, requires_grad=True)
    assert mbls_loss(z, torch.tensor(labels), margin, alpha).item() == pytest.approx(
        reference(logits, labels, margin, alpha), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: mbls_loss(x, torch.tensor(labels), margin, alpha), (z,))


def test_a_margin_no_distance_reaches_is_plain_cross_entropy():
    z, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    torch.testing.assert_close(mbls_loss(z, y, margin=1e3), torch.nn.functional.cross_entropy(z, y))


def test_defaults_are_the_authors_and_options_are_checked():
    loss = build_loss("mbls", 4)
    assert isinstance(loss, MarginLabelSmoothing) and (loss.margin, loss.alpha) == (10.0, 0.1)
    with pytest.raises(UserInputError, match="option alpha of method mbls must be >= 0"):
        build_loss("mbls", 4, alpha=-0.1)
    with pytest.raises(ValueError, match="MarginLabelSmoothing option margin must be >= 0"):
        MarginLabelSmoothing(4, margin=-1.0)


def test_the_command_line_trains_it(tmp_path):
    assert main(["train", "--method", "mbls", "--loss-opt", "margin=6", "--epochs", "1", "--train-subset", "100",
                 "--threads", "1", "--out", str(tmp_path / "run")]) == 0
