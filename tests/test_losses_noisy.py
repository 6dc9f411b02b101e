"""The noisy-label losses (sce, gce, bootsoft, boothard, disturb, jo, pc) against hand-worked cases, naive
per-sample references written here, numerical gradients, dense (mixup/cutmix) targets, option checks and one
training epoch each."""

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
    JointOptimization,
    PairwiseConfusion,
    SymmetricCrossEntropy,
    bootstrap_loss,
    build_loss,
    disturb_label_loss,
    disturb_labels,
    gce_loss,
    jo_loss,
    pairwise_confusion_loss,
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


def naive_jo_authors(z, y, alpha, beta):
    """The authors' form: L_p = -sum_k prior_k log mean_p_k (a cross-entropy, KL + H(prior)), uniform prior."""
    probs = [softmax_list(row) for row in z.tolist()]
    size, classes = len(probs), len(probs[0])
    ce = -sum(math.log(p[label]) for p, label in zip(probs, y.tolist())) / size
    mean = [sum(p[k] for p in probs) / size for k in range(classes)]
    l_p = -sum(math.log(m) / classes for m in mean)
    l_e = -sum(sum(pk * math.log(pk) for pk in p) for p in probs) / size
    return ce + alpha * l_p + beta * l_e


def naive_pc(z, y, lam):
    """CE plus the authors' PairwiseConfusion on the softmax: pair i with i + B/2, one pair at a time."""
    probs = [softmax_list(row) for row in z.tolist()]
    size, half = len(probs), len(probs) // 2
    ce = -sum(math.log(p[label]) for p, label in zip(probs, y.tolist())) / size
    pairs = sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(probs[i], probs[half + i]))) for i in range(half))
    return ce + lam * pairs / size


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


def test_jo_hand_worked():
    # p = (0.8, 0.2) label 0 and (0.4, 0.6) label 1: CE = -(ln 0.8 + ln 0.6)/2 = 0.366985; mean p = (0.6, 0.4),
    # KL(uniform || mean) = 0.5 ln(0.5/0.6) + 0.5 ln(0.5/0.4) = 0.020411; mean entropy (0.500402 + 0.673012)/2
    z, y = logits_of([0.8, 0.2], [0.4, 0.6]), torch.tensor([0, 1])
    expected = 0.366985 + 1.2 * 0.020411 + 0.8 * 0.586707
    assert JointOptimization(2)(z, y).item() == pytest.approx(expected, abs=2e-6)


def test_pc_hand_worked():
    # same batch: the pair's difference (0.4, -0.4) has norm 0.565685, divided by B = 2
    z, y = logits_of([0.8, 0.2], [0.4, 0.6]), torch.tensor([0, 1])
    assert PairwiseConfusion(2)(z, y).item() == pytest.approx(0.366985 + 10 * 0.282843, abs=1e-5)
    # an odd batch: the third sample has no partner, the sum is still divided by B = 3
    z3, y3 = logits_of([0.8, 0.2], [0.4, 0.6], [0.5, 0.5]), torch.tensor([0, 1, 0])
    ce3 = (0.223144 + 0.510826 + 0.693147) / 3
    assert pairwise_confusion_loss(z3, y3, 1.0).item() == pytest.approx(ce3 + 0.565685 / 3, abs=1e-5)


def test_pc_switches_on_at_start_epoch_and_resumes_there():
    z, y = logits_of([0.8, 0.2], [0.4, 0.6]), torch.tensor([0, 1])
    loss = PairwiseConfusion(2, start_epoch=2)
    for _ in range(2):
        assert loss(z, y).item() == pytest.approx(0.366985, abs=1e-5)
        loss.next_epoch()
    assert loss(z, y).item() == pytest.approx(3.195412, abs=1e-5)
    resumed = PairwiseConfusion(2, start_epoch=2)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.epoch == 2 and resumed(z, y).item() == pytest.approx(3.195412, abs=1e-5)


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


@pytest.mark.parametrize("alpha,beta", [(1.2, 0.8), (1.0, 0.5)])
def test_jo_matches_the_authors_form_up_to_the_prior_entropy(batch, alpha, beta):
    z, y = batch
    # KL(prior || m) = CE(prior, m) - H(prior): the authors' prior term exceeds ours by log K (uniform prior)
    expected = naive_jo_authors(z, y, alpha, beta) - alpha * math.log(5)
    assert jo_loss(z, y, alpha, beta).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("size", [12, 11])
def test_pc_matches_naive(size):
    torch.manual_seed(size)
    z, y = torch.randn(size, 5, dtype=torch.float64) * 2, torch.randint(0, 5, (size,))
    assert pairwise_confusion_loss(z, y, 10.0).item() == pytest.approx(naive_pc(z, y, 10.0), rel=1e-10)


def test_jo_custom_prior():
    z, y = logits_of([0.8, 0.2], [0.4, 0.6]), torch.tensor([0, 1])
    # prior (0.6, 0.4) equals the batch mean: the prior term vanishes
    loss = JointOptimization(2, prior=torch.tensor([0.6, 0.4]))
    assert loss(z, y).item() == pytest.approx(0.366985 + 0.8 * 0.586707, abs=2e-6)
    with pytest.raises(ValueError, match="prior must be 2 non-negative probabilities"):
        JointOptimization(2, prior=torch.tensor([0.7, 0.4]))


# -- gradients -----------------------------------------------------------------------------------------------

GRADIENT_CASES = {
    "sce": lambda z, y: sce_loss(z, y, 0.1, 1.0),
    "gce": lambda z, y: gce_loss(z, y, 0.7),
    "bootsoft": lambda z, y: bootstrap_loss(z, y, 0.95, "soft"),
    "boothard": lambda z, y: bootstrap_loss(z, y, 0.8, "hard"),
    "disturb": lambda z, y: disturb_label_loss(z, y, 0.5, torch.Generator().manual_seed(1)),
    "jo": lambda z, y: jo_loss(z, y, 1.2, 0.8),
    "pc": lambda z, y: pairwise_confusion_loss(z, y, 10.0),
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


@pytest.mark.parametrize("loss", [JointOptimization(5), PairwiseConfusion(5)], ids=["jo", "pc"])
def test_dense_targets_change_only_the_cross_entropy(batch, loss):
    # the regularisers do not depend on the target: the dense loss minus the hard one is the CE difference
    z, y = batch
    dense = torch.softmax(torch.randn(12, 5, dtype=torch.float64), dim=1)
    log_p = torch.log_softmax(z, dim=1)
    ce_dense, ce_hard = -(dense * log_p).sum(1).mean(), -log_p[torch.arange(12), y].mean()
    assert (loss(z, dense) - loss(z, y)).item() == pytest.approx((ce_dense - ce_hard).item(), rel=1e-9)


def test_pc_gradient_of_identical_pairs_is_finite():
    z = torch.zeros(4, 3, requires_grad=True)
    pairwise_confusion_loss(z, torch.tensor([0, 1, 2, 0])).backward()
    assert bool(torch.isfinite(z.grad).all())


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

ALL = ["sce", "gce", "bootsoft", "boothard", "disturb", "jo", "pc"]


@pytest.mark.parametrize("name", ALL)
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
    assert (build_loss("jo", 3).alpha, build_loss("jo", 3).beta) == (1.2, 0.8)
    pc = build_loss("pc", 3, start_epoch=5)
    assert (pc.lam, pc.start_epoch, pc.active) == (10.0, 5, False)


@pytest.mark.parametrize("name,options,message", [
    ("sce", {"preset": "cifar"}, "did you mean 'cifar10'"),
    ("sce", {"alpha": -1.0}, "option alpha of method sce must be >= 0"),
    ("sce", {"label_clip": 0.0}, "option label_clip of method sce must be in"),
    ("gce", {"q": 0.0}, "option q of method gce must be in"),
    ("gce", {"q": 1.5}, "option q of method gce must be in"),
    ("bootsoft", {"beta": 1.2}, "option beta of method bootsoft must be in"),
    ("boothard", {"mode": "soft"}, "unknown option 'mode' for method 'boothard'"),
    ("disturb", {"rate": -0.1}, "option rate of method disturb must be in"),
    ("jo", {"alpha": -1.0}, "option alpha of method jo must be >= 0"),
    ("pc", {"lam": -1.0}, "option lam of method pc must be >= 0"),
    ("pc", {"start_epoch": 1.5}, "option start_epoch of method pc must be an integer"),
    ("pc", {"start_epoch": -1}, "option start_epoch of method pc must be >= 0"),
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

@pytest.mark.parametrize("name", ALL)
def test_trains_one_epoch(tmp_path, name):
    out = tmp_path / name
    assert main(["train", "--epochs", "1", "--train-subset", "200", "--method", name, "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").exists()
