"""Label smoothing, Tf-KD and the loss registry against hand-written oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from olsmooth import CrossEntropy, LabelSmoothingCrossEntropy, TfKDRegularization, build_loss, list_losses
from olsmooth.errors import UserInputError


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_torch_label_smoothing(eps):
    torch.manual_seed(0)
    z, y = torch.randn(9, 7), torch.randint(0, 7, (9,))
    ours = LabelSmoothingCrossEntropy(7, eps=eps)(z, y)
    assert ours.item() == pytest.approx(F.cross_entropy(z, y, label_smoothing=eps).item(), rel=1e-6)


def test_label_smoothing_dense_target_is_smoothed_mixture():
    z = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.25, 0.75, 0.0]])
    target = 0.9 * t + 0.1 / 3
    expected = -(target * F.log_softmax(z, dim=1)).sum()
    assert LabelSmoothingCrossEntropy(3, eps=0.1)(z, t).item() == pytest.approx(expected.item(), rel=1e-6)


def released_tfkd(outputs, labels, T, alpha=0.95, correct_prob=0.99, multiplier=1.0):
    """The released code's formulation, with its per-sample loop."""
    K = outputs.size(1)
    teacher = torch.ones_like(outputs) * (1 - correct_prob) / (K - 1)
    for i in range(outputs.shape[0]):
        teacher[i, labels[i]] = correct_prob
    soft = torch.nn.KLDivLoss()(F.log_softmax(outputs, dim=1), F.softmax(teacher / T, dim=1)) * multiplier
    return (1.0 - alpha) * F.cross_entropy(outputs, labels) + alpha * soft


@pytest.mark.filterwarnings("ignore:reduction")
@pytest.mark.parametrize("T", [6.0, 40.0])
def test_tfkd_matches_the_released_formulation(T):
    torch.manual_seed(1)
    z, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    ours = TfKDRegularization(10, temperature=T)(z, y)
    assert ours.item() == pytest.approx(released_tfkd(z, y, T).item(), rel=1e-5)


def test_tfkd_batchmean_is_the_per_sample_kl():
    torch.manual_seed(2)
    z, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    loss = TfKDRegularization(5, alpha=1.0, temperature=1.0, kl_reduction="batchmean")(z, y)
    teacher = torch.full((4, 5), 0.01 / 4)
    teacher[torch.arange(4), y] = 0.99
    q = torch.softmax(teacher, dim=1)
    p = torch.softmax(z, dim=1)
    expected = (q * (q.log() - p.log())).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cross_entropy_accepts_dense_targets():
    z = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    t = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    logp = F.log_softmax(z, dim=1)
    expected = -(t * logp).sum(1).mean()
    assert CrossEntropy(2)(z, t).item() == pytest.approx(expected.item(), rel=1e-6)
    assert CrossEntropy(2)(z, torch.tensor([1, 0])).item() == pytest.approx(
        F.cross_entropy(z, torch.tensor([1, 0])).item(), rel=1e-6)


def test_registry_builds_every_method_and_rejects_unknown_ones():
    assert {"ce", "ls", "ols", "tfkd"} <= set(list_losses())
    ols = build_loss("ols", 5, preset="paper-fine-grained")
    assert ols.freeze_threshold == 0.88 and ols.hard_weight == 1.0
    assert build_loss("ls", 5, eps=0.2).eps == 0.2
    with pytest.raises(UserInputError, match="unknown method 'nope'"):
        build_loss("nope", 5)
    with pytest.raises(UserInputError, match="unknown option 'colour' for method 'ls'"):
        build_loss("ls", 5, colour="red")
