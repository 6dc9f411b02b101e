"""Zipf's label smoothing and MaxSup: hand-worked cases, per-sample references after the authors' code (scipy's
rankdata for the ranks), gradients, precision under autocast, schedules, resume and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import rankdata

from olsmooth.errors import UserInputError
from olsmooth.losses import (
    MaxSuppression,
    TrainingRun,
    ZipfLabelSmoothing,
    build_loss,
    logit_ranks,
    maxsup_loss,
    zipf_loss,
)


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_softmax_row(z: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in z))
    return [v - norm for v in z]


# -- Zipf's label smoothing ----------------------------------------------------------------------------------------

def test_ranks_share_the_smallest_rank_on_ties():
    ranks = logit_ranks(torch.tensor([[4.0, 3.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 5.0, -1.0]]))
    assert ranks.tolist() == [[1, 2, 2, 4, 5], [2, 2, 2, 1, 5]]


def test_zipf_hand_worked():
    # logits 2, 1, 0, label 0: ranks 1, 2, 3; prior on classes 1, 2 is (1/2, 1/3) normalised = (3/5, 2/5);
    # the non-target softmax of (1, 0) is (e, 1) / (e + 1)
    e = math.e
    kl = 0.6 * math.log(0.6 / (e / (e + 1))) + 0.4 * math.log(0.4 / (1 / (e + 1)))
    ce = -log_softmax_row([2.0, 1.0, 0.0])[0]
    got = ZipfLabelSmoothing(3)(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    assert got.item() == pytest.approx(ce + 0.1 * kl, rel=1e-6)


def naive_zipf(logits: torch.Tensor, labels: torch.Tensor, weight: float, power: float, correct_only: bool) -> float:
    """The authors' gen_pdf + kl_loss, one sample at a time: rankdata(-z, 'min') over all classes, rank^-power on
    the non-targets normalised, KL to the log-softmax of the non-target logits; plus the cross-entropy."""
    ce, kls, mask = 0.0, [], []
    for z, y in zip(logits.tolist(), labels.tolist()):
        ranks = rankdata([-v for v in z], method="min")
        others = [k for k in range(len(z)) if k != y]
        prior = [ranks[k] ** -power for k in others]
        prior = [p / sum(prior) for p in prior]
        log_q = log_softmax_row([z[k] for k in others])
        kls.append(sum(p * (math.log(p) - lq) for p, lq in zip(prior, log_q)))
        mask.append(max(range(len(z)), key=lambda k: (z[k], -k)) == y)
        ce += -log_softmax_row(z)[y] / len(labels)
    if correct_only:
        kl = sum(k for k, m in zip(kls, mask) if m) / sum(mask) if any(mask) else 0.0
    else:
        kl = sum(kls) / len(kls)
    return ce + weight * kl


@pytest.mark.parametrize("weight,power,correct_only", [(0.1, 1.0, False), (1.0, 1.0, True), (0.5, 2.0, False),
                                                       (1.0, 0.5, True)])
@pytest.mark.parametrize("ties", [False, True])
def test_zipf_matches_the_per_sample_reference(weight, power, correct_only, ties):
    g = rng(1)
    logits = torch.randn(16, 6, generator=g, dtype=torch.float64) * 2
    if ties:
        logits = logits.round()  # many equal logits per row
    labels = torch.randint(0, 6, (16,), generator=g)
    labels[:5] = logits[:5].argmax(dim=1)  # some correct predictions
    got = zipf_loss(logits, labels, weight, power, correct_only)
    assert got.item() == pytest.approx(naive_zipf(logits, labels, weight, power, correct_only), rel=1e-12)


def test_zipf_correct_only_with_no_correct_sample_is_the_cross_entropy():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert zipf_loss(logits, labels, 1.0, correct_only=True).item() == pytest.approx(expected.item(), rel=1e-6)


def test_zipf_gradcheck():
    g = rng(2)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 2, 3])
    assert torch.autograd.gradcheck(lambda logits: zipf_loss(logits, y, 1.0, 1.0), (z,))


def test_zipf_under_autocast_is_float32_of_the_half_logits():
    g = rng(3)
    z = torch.randn(8, 7, generator=g).bfloat16()
    y = torch.randint(0, 7, (8,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ZipfLabelSmoothing(7)(z, y)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(naive_zipf(z.double(), y, 0.1, 1.0, False), rel=1e-5)


def test_zipf_refuses_mixup_targets():
    with pytest.raises(ValueError, match="mixup"):
        ZipfLabelSmoothing(3)(torch.zeros(2, 3), torch.full((2, 3), 1 / 3))
    with pytest.raises(UserInputError, match="power"):
        build_loss("zipf", 3, power=-1.0)


# -- MaxSup --------------------------------------------------------------------------------------------------------

def bound_maxsup(epochs: int, steps: int = 1, **options) -> MaxSuppression:
    loss = MaxSuppression(3, **options)
    loss.bind(TrainingRun(num_samples=10, epochs=epochs, steps_per_epoch=steps))
    return loss


def test_maxsup_hand_worked():
    # logits 3, 0, 0 (label 0): CE = ln(e^3 + 2) - 3, z_max - mean z = 3 - 1 = 2, lambda 0.1 in the first epoch
    got = bound_maxsup(10)(torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0]))
    assert got.item() == pytest.approx(math.log(math.exp(3) + 2) - 3 + 0.1 * 2, rel=1e-6)


def test_maxsup_epoch_schedule_of_the_authors():
    # the authors' lam = 0.1 + 0.1 * epoch / (epochs - 1); the penalty of logits 3, 0, 0 is 2 at every epoch
    E = 5
    loss = bound_maxsup(E)
    z, y = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0])
    ce = math.log(math.exp(3) + 2) - 3
    for epoch in range(E):
        for _ in range(3):  # steps within an epoch do not move lambda
            assert loss(z, y).item() == pytest.approx(ce + 2 * (0.1 + 0.1 * epoch / (E - 1)), rel=1e-6)
        loss.next_epoch()


def test_maxsup_step_schedule_rises_per_training_step():
    loss = bound_maxsup(2, steps=3, schedule="step")
    z, y = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0])
    ce = math.log(math.exp(3) + 2) - 3
    seen = []
    for _ in range(2):
        for _ in range(3):
            seen.append((loss(z, y).item() - ce) / 2)
        loss.next_epoch()
    assert seen == pytest.approx([0.1, 0.12, 0.14, 0.16, 0.18, 0.2], rel=1e-5)
    with torch.no_grad():
        loss(z, y)
    assert loss.step == 6  # no step counted without gradients


def naive_maxsup(logits: torch.Tensor, target: torch.Tensor, lam: float) -> float:
    total = 0.0
    for i, z in enumerate(logits.tolist()):
        log_p = log_softmax_row(z)
        t = target[i].tolist() if target.dim() == 2 else [float(k == int(target[i])) for k in range(len(z))]
        total += -sum(tk * lp for tk, lp in zip(t, log_p)) + lam * (max(z) - sum(z) / len(z))
    return total / logits.size(0)


@pytest.mark.parametrize("dense", [False, True])
def test_maxsup_matches_the_per_sample_reference_with_and_without_mixup(dense):
    g = rng(4)
    logits = torch.randn(9, 5, generator=g, dtype=torch.float64) * 3
    target = torch.softmax(torch.randn(9, 5, generator=g), 1) if dense else torch.randint(0, 5, (9,), generator=g)
    assert maxsup_loss(logits, target, 0.15).item() == pytest.approx(naive_maxsup(logits, target, 0.15), rel=1e-12)


def test_maxsup_gradcheck():
    g = rng(5)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    assert torch.autograd.gradcheck(lambda logits: maxsup_loss(logits, y, 0.2), (z,))


def test_maxsup_under_autocast_is_float32():
    z = torch.randn(6, 4, generator=rng(6)).bfloat16()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bound_maxsup(3)(z[:, :3], y % 3)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(naive_maxsup(z[:, :3].double(), y % 3, 0.1), rel=1e-6)


def test_maxsup_resume_keeps_the_schedule_position():
    loss = bound_maxsup(4, steps=2, schedule="step")
    for _ in range(3):
        loss(torch.randn(2, 3), torch.tensor([0, 1]))
    loss.next_epoch()
    again = bound_maxsup(4, steps=2, schedule="step")
    again.load_state_dict(loss.state_dict())
    assert (again.epoch, again.step, again.lam) == (1, 3, pytest.approx(0.1 + 0.1 * 3 / 7))


def test_maxsup_needs_the_length_of_training():
    with pytest.raises(ValueError, match="bind"):
        MaxSuppression(3)(torch.zeros(1, 3), torch.tensor([0]))
    assert bound_maxsup(1)(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(3))
