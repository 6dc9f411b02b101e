"""Numerics of the fused OLS cross-entropy: second-order gradients, large logit offsets, and argmax ties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from olsmooth import OnlineLabelSmoothing
from olsmooth.losses import ols_loss
from olsmooth.losses.common import first_max_index, target_cross_entropy


def composed_ols(logits: torch.Tensor, y: torch.Tensor, S: torch.Tensor, hard: float = 0.5,
                 soft: float = 0.5) -> torch.Tensor:
    """The OLS loss composed from log_softmax: the oracle for values and gradients of every order."""
    log_probs = F.log_softmax(logits, dim=1)
    return hard * F.nll_loss(log_probs, y) + soft * -(S[y] * log_probs).sum(dim=1).mean()


def soft_label_matrix(K: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.softmax(torch.randn(K, K, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2, dim=1)


# -- double backward -----------------------------------------------------------------------------------------------

def test_gradgradcheck_in_float64_for_logits_and_targets():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    T = torch.rand(5, 4, generator=g, dtype=torch.float64, requires_grad=True)  # any non-negative weights

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_cross_entropy(logits, targets, 0.7)[0]

    assert torch.autograd.gradcheck(loss, (z, T))
    assert torch.autograd.gradgradcheck(loss, (z, T))


@pytest.mark.parametrize("module", [False, True])
def test_input_gradient_penalty_matches_the_log_softmax_composition(module):
    """d/dW of |d loss / d x|^2 through a small network: the term through the logits must not be dropped."""
    K = 7
    S = soft_label_matrix(K, 1)
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    y = torch.arange(12) % K
    criterion = OnlineLabelSmoothing(K, hard_weight=0.3, soft_weight=0.7, init="uniform")
    criterion._S = S.clone()

    def penalty_grads(loss_fn) -> list[torch.Tensor]:
        torch.manual_seed(3)
        net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, K))
        images = x.clone().requires_grad_(True)
        (grad_x,) = torch.autograd.grad(loss_fn(net(images), y), images, create_graph=True)
        return list(torch.autograd.grad(grad_x.pow(2).sum(), list(net.parameters())))

    if module:
        ours = penalty_grads(criterion)
    else:
        ours = penalty_grads(lambda z, t: ols_loss(z, t, S, 0.3, 0.7))
    expected = penalty_grads(lambda z, t: composed_ols(z, t, S, 0.3, 0.7))
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# -- precision with a large shared logit offset --------------------------------------------------------------------

@pytest.mark.parametrize("K", [10, 1000])
@pytest.mark.parametrize("offset", [0.0, 1e2, 1e3, 1e4, -1e4])
def test_value_and_gradient_stay_exact_under_a_large_logit_offset(K, offset):
    g = torch.Generator().manual_seed(K)
    z = (torch.randn(256, K, generator=g) * 3 + offset).requires_grad_(True)
    y = torch.randint(0, K, (256,), generator=g)
    S = soft_label_matrix(K, 4)
    ours = ols_loss(z, y, S)
    ours.backward()
    z64 = z.detach().double().requires_grad_(True)
    expected = composed_ols(z64, y, S.double())
    expected.backward()
    assert abs(ours.item() - expected.item()) <= 1e-5 * abs(expected.item())
    torch.testing.assert_close(z.grad, z64.grad.float(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_value_stays_exact_for_a_large_batch_times_classes(offset):
    """Four million log-probabilities: the weighted sum must not accumulate float32 rounding term by term."""
    B, K = 16384, 256
    g = torch.Generator().manual_seed(7)
    z = torch.randn(B, K, generator=g) * 3 + offset
    y = torch.randint(0, K, (B,), generator=g)
    S = soft_label_matrix(K, 8)
    expected = composed_ols(z.double(), y, S.double()).item()
    assert abs(ols_loss(z, y, S).item() - expected) <= 1e-6 * abs(expected)


def test_value_stays_exact_when_every_row_has_its_own_offset():
    K = 1000
    g = torch.Generator().manual_seed(5)
    z = torch.randn(64, K, generator=g) + torch.linspace(-1e4, 1e4, 64).unsqueeze(1)
    y = torch.randint(0, K, (64,), generator=g)
    t = torch.softmax(torch.randn(64, K, generator=g), dim=1)  # dense (mixup-like) targets
    S = soft_label_matrix(K, 6)
    for target in (y, t):
        ours = ols_loss(z, target, S, 0.4, 0.6).item()
        log_probs = F.log_softmax(z.double(), dim=1)
        hard = F.one_hot(target, K).double() if target.dim() == 1 else target.double()
        soft = hard @ S.double()
        expected = (-(0.4 * hard + 0.6 * soft) * log_probs).sum(dim=1).mean().item()
        assert abs(ours - expected) <= 1e-5 * abs(expected)


# -- ties: argmax semantics ----------------------------------------------------------------------------------------

def test_torch_argmax_returns_the_first_of_tied_maxima():
    """The rule the statistics follow, as torch (and the authors' code, `torch.max(p, 1)`) apply it."""
    assert torch.zeros(4, 6).argmax(dim=1).tolist() == [0, 0, 0, 0]
    assert torch.tensor([[0.0, 2.0, 1.0, 2.0]]).argmax(dim=1).item() == 1
    assert torch.max(torch.softmax(torch.zeros(1, 5), dim=1), 1).indices.item() == 0


@pytest.mark.parametrize("factory", [
    lambda K: OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K),
    lambda K: OnlineLabelSmoothing.from_preset("paper-fine-grained", num_classes=K),
    lambda K: OnlineLabelSmoothing(num_classes=K),
])
def test_a_zero_initialised_head_counts_only_the_samples_of_class_zero(factory):
    K, B = 5, 20
    ols = factory(K)
    y = torch.arange(B) % K
    ols(torch.zeros(B, K, requires_grad=True), y)
    state = ols.state_dict()
    # argmax of an all-equal row is class 0: only the four samples labelled 0 are correct
    assert state["counts"].tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]
    expected_A = torch.zeros(K, K)
    expected_A[0] = 4.0 / K
    torch.testing.assert_close(state["accumulator"], expected_A)


def test_a_label_tied_with_an_earlier_class_does_not_count():
    ols = OnlineLabelSmoothing(num_classes=4)
    z = torch.tensor([[0.0, 2.0, 1.0, 2.0],    # classes 1 and 3 tie: argmax 1
                      [0.0, 2.0, 1.0, 2.0],
                      [3.0, 3.0, 3.0, 3.0],    # all tie: argmax 0
                      [1.0, 5.0, 5.0, 0.0]])   # classes 1 and 2 tie: argmax 1
    y = torch.tensor([3, 1, 2, 1])
    ols(z, y)
    assert ols.counts.tolist() == [0.0, 2.0, 0.0, 0.0]


@pytest.mark.parametrize("K", [2, 3, 10, 1000, 4099])
def test_first_max_index_equals_torch_argmax_with_ties_and_near_ties(K):
    g = torch.Generator().manual_seed(K)
    z = torch.randn(64, K, generator=g) * 4
    z[:8] = 0.0                                      # all tied
    z[8:16, K // 2] = z[8:16].amax(dim=1) + 30.0     # one class takes (almost) all the mass
    z[16:24, -1] = z[16:24].amax(dim=1)              # the maximum tied with the last class
    top = z[24:32].amax(dim=1)                       # a runner-up one float step below the maximum
    z[24:32, 0] = torch.nextafter(top, torch.tensor(-float("inf")))
    z[32:40] = z[32:40].round()                      # many ties among integers
    probs = torch.softmax(z, dim=1)
    got = first_max_index(probs, probs.amax(dim=1))
    assert got.tolist() == probs.argmax(dim=1).float().tolist()
