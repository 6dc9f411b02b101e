"""The noisy-label losses against hand-worked cases, naive per-sample references written here, numerical gradients,
dense (mixup/cutmix) targets, option checks and one training epoch each."""

from __future__ import annotations

import math

import pytest
import torch

from olsmooth.cli import main
from olsmooth.errors import UserInputError
from olsmooth.losses import (
    Bootstrapping,
    DisturbLabel,
    GeneralizedCrossEntropy,
    SymmetricCrossEntropy,
    bootstrap_loss,
    build_loss,
    disturb_label_loss,
    disturb_labels,
    gce_loss,
    sce_loss,
)


def logits_of(*probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly the given rows (log-probabilities)."""
    return torch.tensor(probs, dtype=torch.float64).log()


# -- naive per-sample references: the authors' formulas, one sample at a time ----------------------------------

def naive_sce(z, y, alpha, beta):
    total = 0.0
    for row, label in zip(z.tolist(), y.tolist()):
        p = [max(v, 1e-7) for v in softmax_list(row)]
        onehot = [max(1.0 if k == label else 0.0, 1e-4) for k in range(len(row))]
        ce = -math.log(p[label])
        rce = -sum(pk * math.log(tk) for pk, tk in zip(p, onehot))
        total += alpha * ce + beta * rce
    return total / len(z)


def naive_gce(z, y, q):
    return sum((1 - softmax_list(row)[label] ** q) / q for row, label in zip(z.tolist(), y.tolist())) / len(z)


def naive_bootstrap(z, y, beta, hard):
    total = 0.0
    for row, label in zip(z.tolist(), y.tolist()):
        p = [min(max(v, 1e-7), 1 - 1e-7) for v in softmax_list(row)]
        top = max(range(len(row)), key=lambda k: row[k])
        guess = [float(k == top) for k in range(len(row))] if hard else p
        total -= sum((beta * (k == label) + (1 - beta) * guess[k]) * math.log(p[k]) for k in range(len(row)))
    return total / len(z)


def softmax_list(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


# -- hand-worked cases ---------------------------------------------------------------------------------------

def test_sce_hand_worked():
    # p = (0.5, 0.3, 0.2), label 0: CE = ln 2; RCE = -ln(1e-4) (0.3 + 0.2) = 2 ln 10
    z, y = logits_of([0.5, 0.3, 0.2]), torch.tensor([0])
    assert sce_loss(z, y, alpha=0.1, beta=1.0).item() == pytest.approx(0.1 * 0.693147 + 4.605170, abs=1e-5)
    assert SymmetricCrossEntropy(3)(z, y).item() == pytest.approx(4.674485, abs=1e-5)  # preset cifar10


def test_sce_prediction_clip_caps_the_cross_entropy():
    # p_y = 1e-9 is clipped to 1e-7: CE = 7 ln 10 = 16.118096, RCE = 4 ln 10 (1 - 1e-9) (the other class)
    z, y = logits_of([1e-9, 1 - 1e-9]), torch.tensor([0])
    assert sce_loss(z, y, 1.0, 0.0).item() == pytest.approx(16.118096, abs=1e-5)
    assert sce_loss(z, y, 0.0, 1.0).item() == pytest.approx(9.210340, abs=1e-5)


def test_gce_hand_worked():
    z, y = logits_of([0.5, 0.3, 0.2], [0.25, 0.25, 0.5]), torch.tensor([0, 2])
    # both samples have p_y = 0.5: (1 - 0.5^0.7) / 0.7 = (1 - 0.615572) / 0.7
    assert gce_loss(z, y).item() == pytest.approx(0.549183, abs=1e-6)
    # q = 1 is the mean absolute error 1 - p_y
    assert GeneralizedCrossEntropy(3, q=1.0)(z, y).item() == pytest.approx(0.5, abs=1e-12)


def test_bootstrap_hand_worked():
    z = logits_of([0.8, 0.2])
    # soft, label 0: target 0.95 e0 + 0.05 (0.8, 0.2) = (0.99, 0.01); -(0.99 ln 0.8 + 0.01 ln 0.2)
    assert Bootstrapping(2)(z, torch.tensor([0])).item() == pytest.approx(0.237007, abs=1e-6)
    # hard, label 1, arg-max 0: target (0.2, 0.8); -(0.2 ln 0.8 + 0.8 ln 0.2)
    assert Bootstrapping(2, mode="hard")(z, torch.tensor([1])).item() == pytest.approx(1.332180, abs=1e-6)


def test_disturb_hand_worked():
    z, y = logits_of([0.5, 0.3, 0.2]), torch.tensor([1])
    assert disturb_label_loss(z, y, rate=0.0).item() == pytest.approx(-math.log(0.3), abs=1e-12)
    # rate 1: the label is whatever was drawn, and the loss is -ln p of it
    drawn = disturb_labels(y, 3, 1.0, torch.Generator().manual_seed(5))
    loss = disturb_label_loss(z, y, 1.0, torch.Generator().manual_seed(5))
    assert loss.item() == pytest.approx(-math.log([0.5, 0.3, 0.2][drawn.item()]), abs=1e-12)


# -- against the naive references ----------------------------------------------------------------------------

@pytest.fixture()
def batch():
    torch.manual_seed(0)
    return torch.randn(12, 5, dtype=torch.float64) * 3, torch.randint(0, 5, (12,))


@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (6.0, 0.1), (0.01, 1.0)])
def test_sce_matches_naive(batch, alpha, beta):
    z, y = batch
    assert sce_loss(z, y, alpha, beta).item() == pytest.approx(naive_sce(z, y, alpha, beta), rel=1e-10)


@pytest.mark.parametrize("q", [0.1, 0.7, 1.0])
def test_gce_matches_naive(batch, q):
    z, y = batch
    assert gce_loss(z, y, q).item() == pytest.approx(naive_gce(z, y, q), rel=1e-10)


@pytest.mark.parametrize("mode,beta", [("soft", 0.95), ("hard", 0.8), ("soft", 0.5)])
def test_bootstrap_matches_naive(batch, mode, beta):
    z, y = batch
    expected = naive_bootstrap(z, y, beta, hard=mode == "hard")
    assert bootstrap_loss(z, y, beta, mode).item() == pytest.approx(expected, rel=1e-10)


# -- gradients -----------------------------------------------------------------------------------------------

GRADIENT_CASES = {
    "sce": lambda z, y: sce_loss(z, y, 0.1, 1.0),
    "gce": lambda z, y: gce_loss(z, y, 0.7),
    "bootsoft": lambda z, y: bootstrap_loss(z, y, 0.95, "soft"),
    "boothard": lambda z, y: bootstrap_loss(z, y, 0.8, "hard"),
    "disturb": lambda z, y: disturb_label_loss(z, y, 0.5, torch.Generator().manual_seed(1)),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradcheck(name):
    torch.manual_seed(3)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 2])
    assert torch.autograd.gradcheck(lambda logits: GRADIENT_CASES[name](logits, y), (z,))


def test_soft_bootstrap_gradient_flows_through_the_prediction_term():
    # d/dz of -(b t + (1 - b) p) . log p: the (1 - b) entropy part adds (1 - b) d H(p) / dz to b (p - t)
    z = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    bootstrap_loss(z, torch.tensor([0]), 0.6, "soft").backward()
    p = torch.softmax(z.detach(), dim=1)
    log_p = p.log()
    entropy_grad = -p * (log_p - (p * log_p).sum())  # dH/dz_j = -p_j (log p_j + H)
    expected = 0.6 * (p - torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)) + 0.4 * entropy_grad
    assert torch.allclose(z.grad, expected, atol=1e-12)


# -- dense targets -------------------------------------------------------------------------------------------

LINEAR_IN_TARGET = {
    "gce": GeneralizedCrossEntropy(5),
    "bootsoft": Bootstrapping(5),
    "boothard": Bootstrapping(5, mode="hard"),
}


@pytest.mark.parametrize("name", sorted(LINEAR_IN_TARGET))
def test_dense_mixture_is_the_mixture_of_losses(batch, name):
    z, y = batch
    other = (y + 2) % 5
    lam = 0.3
    one_hot = torch.nn.functional.one_hot
    dense = lam * one_hot(y, 5).double() + (1 - lam) * one_hot(other, 5).double()
    loss = LINEAR_IN_TARGET[name]
    per_sample = [lam * loss(z[i:i + 1], y[i:i + 1]) + (1 - lam) * loss(z[i:i + 1], other[i:i + 1])
                  for i in range(len(y))]
    assert loss(z, dense).item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-10)


def test_sce_dense_target_clips_each_class():
    # p = (0.5, 0.3, 0.2), t = (0.6, 0.4, 0): CE = -(0.6 ln 0.5 + 0.4 ln 0.3); RCE = -(0.5 ln 0.6 + 0.3 ln 0.4
    # + 0.2 ln 1e-4)
    z, t = logits_of([0.5, 0.3, 0.2]), torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64)
    ce = 0.6 * 0.693147 + 0.4 * 1.203973
    rce = 0.5 * 0.510826 + 0.3 * 0.916291 + 0.2 * 9.210340
    assert SymmetricCrossEntropy(3, alpha=1.0, beta=1.0)(z, t).item() == pytest.approx(ce + rce, abs=1e-5)
    assert SymmetricCrossEntropy(3)(z, torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(4.674485, abs=1e-5)


def test_disturb_dense_rows_are_kept_or_replaced_by_a_one_hot():
    torch.manual_seed(0)
    dense = torch.softmax(torch.randn(400, 4), dim=1)
    out = disturb_labels(dense, 4, 0.5, torch.Generator().manual_seed(2))
    kept = (out == dense).all(dim=1)
    one_hot = (out.max(dim=1).values == 1) & (out.sum(dim=1) == 1)
    assert bool((kept | one_hot).all()) and 150 < int(one_hot.sum()) < 250


# -- DisturbLabel's draw ---------------------------------------------------------------------------------------

def test_disturb_rate_is_the_replacement_probability():
    labels = torch.zeros(20000, dtype=torch.int64)
    out = disturb_labels(labels, 4, 0.3, torch.Generator().manual_seed(0))
    # a replaced label is uniform over all 4 classes, so 0.3 * 3/4 of the labels change, each other class 0.075
    assert (out != 0).float().mean().item() == pytest.approx(0.225, abs=0.015)
    for k in (1, 2, 3):
        assert (out == k).float().mean().item() == pytest.approx(0.075, abs=0.01)


def test_disturb_is_reproducible_from_the_global_seed_and_off_in_eval():
    z, y = torch.randn(64, 10), torch.randint(0, 10, (64,))
    loss = DisturbLabel(10, rate=0.5)
    torch.manual_seed(7)
    first = loss(z, y)
    torch.manual_seed(7)
    assert loss(z, y).item() == first.item()
    loss.eval()
    assert loss(z, y).item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), rel=1e-6)


# -- precision -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sce", "gce", "bootsoft", "boothard", "disturb"])
def test_float32_under_autocast(name):
    torch.manual_seed(4)
    z, y = torch.randn(8, 6).bfloat16(), torch.randint(0, 6, (8,))
    loss = build_loss(name, 6, **({"rate": 0.0} if name == "disturb" else {}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(z, y)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(loss(z.float(), y).item(), rel=1e-6)


# -- options through the registry ------------------------------------------------------------------------------

def test_sce_presets_and_overrides():
    assert (build_loss("sce", 10).alpha, build_loss("sce", 10).beta) == (0.1, 1.0)
    mnist = build_loss("sce", 10, preset="mnist")
    assert (mnist.alpha, mnist.beta) == (0.01, 1.0)
    mixed = build_loss("sce", 100, preset="cifar100", alpha=1.0)
    assert (mixed.alpha, mixed.beta) == (1.0, 0.1)
    assert (build_loss("boothard", 3).beta, build_loss("bootsoft", 3).beta) == (0.8, 0.95)
    assert build_loss("gce", 3).q == 0.7 and build_loss("disturb", 3).rate == 0.1


@pytest.mark.parametrize("name,options,message", [
    ("sce", {"preset": "cifar"}, "did you mean 'cifar10'"),
    ("sce", {"alpha": -1.0}, "option alpha of method sce must be >= 0"),
    ("sce", {"label_clip": 0.0}, "option label_clip of method sce must be in"),
    ("gce", {"q": 0.0}, "option q of method gce must be in"),
    ("gce", {"q": 1.5}, "option q of method gce must be in"),
    ("bootsoft", {"beta": 1.2}, "option beta of method bootsoft must be in"),
    ("boothard", {"mode": "soft"}, "unknown option 'mode' for method 'boothard'"),
    ("disturb", {"rate": -0.1}, "option rate of method disturb must be in"),
])
def test_bad_options_are_one_line_errors(name, options, message):
    with pytest.raises(UserInputError, match=message):
        build_loss(name, 5, **options)


def test_constructors_refuse_bad_values():
    with pytest.raises(ValueError, match="q must lie in"):
        GeneralizedCrossEntropy(3, q=0.0)
    with pytest.raises(ValueError, match="mode must be"):
        Bootstrapping(3, mode="medium")
    with pytest.raises(ValueError, match="unknown SCE preset"):
        SymmetricCrossEntropy(3, preset="svhn")


# -- one epoch through the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sce", "gce", "bootsoft", "boothard", "disturb"])
def test_trains_one_epoch(tmp_path, name):
    out = tmp_path / name
    assert main(["train", "--epochs", "1", "--train-subset", "200", "--method", name, "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").exists()
