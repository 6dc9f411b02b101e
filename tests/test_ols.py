"""Online Label Smoothing against a per-sample reference of the authors' two code paths, and its contracts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from olsmooth import OnlineLabelSmoothing
from olsmooth.losses import ols_loss


class ReferenceOLS:
    """Slow per-sample formulation of the released code: Python loops over the batch and over classes."""

    def __init__(self, K: int, preset: str) -> None:
        self.K = K
        self.fine = preset == "paper-fine-grained"
        self.S = torch.full((K, K), 1.0 / K) if self.fine else torch.zeros(K, K)
        self.hw, self.sw = (1.0, 1.0) if self.fine else (0.5, 0.5)
        self.reset()

    def reset(self) -> None:
        self.A = torch.zeros(self.K, self.K)
        self.n = torch.zeros(self.K)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.detach(), dim=1)
        for i in range(len(y)):
            row = probs[i].tolist()
            if row.index(max(row)) == int(y[i]):  # the first maximum, as torch.max(p, 1) in the released code
                self.A[y[i]] += probs[i]
                self.n[y[i]] += 1
        soft = torch.zeros_like(logits)
        for i in range(len(y)):
            soft[i] = self.S[y[i]]
        nll = -F.log_softmax(logits, dim=1)
        soft_term = (nll * soft).sum() / len(y)
        return self.hw * F.cross_entropy(logits, y) + self.sw * soft_term

    def epoch_end(self) -> None:
        for c in range(self.K):
            if self.n[c] < 0.5:
                self.S[c] = 1.0 / self.K
            elif self.fine and self.S[c].max() >= 0.88:
                continue
            else:
                self.S[c] = self.A[c] / self.n[c]
        self.reset()


def epoch_batches(K: int, epoch: int, batches: int = 4, B: int = 16, confident: int | None = None):
    """Deterministic logits/labels per epoch: mostly correct, class K-1 never correct, one class very confident."""
    g = torch.Generator().manual_seed(1000 + epoch)
    for _ in range(batches):
        y = torch.randint(0, K, (B,), generator=g)
        logits = torch.randn(B, K, generator=g)
        logits[torch.arange(B), y] += 2.5
        never = y == K - 1
        logits[never, K - 1] = -10.0
        if confident is not None:
            conf = y == confident
            logits[conf, confident] += 8.0
        yield logits, y


def assert_same_step(ols: OnlineLabelSmoothing, ref: ReferenceOLS, logits: torch.Tensor, y: torch.Tensor) -> None:
    """One training step of both: the same loss value and the same gradient of the logits."""
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = ols(ours_in, y)
    expected = ref.loss(ref_in, y)
    assert ours.item() == pytest.approx(expected.item(), abs=1e-5)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("preset", ["paper-cifar", "paper-fine-grained"])
def test_presets_match_the_released_code_over_several_epochs(preset):
    K = 6
    ref = ReferenceOLS(K, preset)
    ols = OnlineLabelSmoothing.from_preset(preset, num_classes=K)
    for epoch in range(5):
        for logits, y in epoch_batches(K, epoch, confident=0):
            assert_same_step(ols, ref, logits, y)
        ols.next_epoch()
        ref.epoch_end()
        torch.testing.assert_close(ols.soft_labels, ref.S, atol=1e-5, rtol=0)
    # the never-correct class falls back to uniform; in the fine-grained path the confident class froze
    torch.testing.assert_close(ols.soft_labels[K - 1], torch.full((K,), 1.0 / K))
    if preset == "paper-fine-grained":
        assert ols.soft_labels[0].max() >= 0.88


@pytest.mark.parametrize("preset", ["paper-cifar", "paper-fine-grained"])
def test_presets_match_the_released_code_on_tied_predictions(preset):
    K = 5
    ref = ReferenceOLS(K, preset)
    ols = OnlineLabelSmoothing.from_preset(preset, num_classes=K)
    y = torch.arange(10) % K
    batches = [torch.zeros(10, K),                                # a zero-initialised head: every row ties
               torch.tensor([[1.0, 3.0, 0.0, 3.0, 3.0]]).repeat(10, 1),  # classes 1, 3 and 4 tie
               torch.randn(10, K, generator=torch.Generator().manual_seed(0)).round()]
    for _ in range(2):
        for logits in batches:
            assert_same_step(ols, ref, logits, y)
            torch.testing.assert_close(ols.counts, ref.n)
        ols.next_epoch()
        ref.epoch_end()
        torch.testing.assert_close(ols.soft_labels, ref.S, atol=1e-6, rtol=0)


def test_hand_worked_update_and_loss():
    # two classes; logits chosen so softmax values are simple
    ols = OnlineLabelSmoothing(num_classes=2, hard_weight=0.0, soft_weight=1.0, init="zeros",
                               empty_class="uniform")
    z = torch.tensor([[math.log(3.0), 0.0], [math.log(1.0), 0.0], [0.0, math.log(4.0)]])
    y = torch.tensor([0, 0, 1])
    loss = ols(z, y)
    assert loss.item() == 0.0  # S starts at zero and the hard term is off
    ols.next_epoch()
    # sample 0 correct: p = (3/4, 1/4); sample 1 is a tie at argmax 0 == label 0: p = (1/2, 1/2)
    # class 0 row = mean of (0.75, 0.25) and (0.5, 0.5) = (0.625, 0.375); class 1 row = (1/5, 4/5)
    torch.testing.assert_close(ols.soft_labels, torch.tensor([[0.625, 0.375], [0.2, 0.8]]))
    loss = ols(z[:1], y[:1])
    expected = -(0.625 * math.log(0.75) + 0.375 * math.log(0.25))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gradient_matches_central_finite_differences():
    torch.manual_seed(0)
    K, B = 5, 4
    ols = OnlineLabelSmoothing(num_classes=K, init="uniform")
    ols._S = torch.softmax(torch.randn(K, K), dim=1)
    z = torch.randn(B, K, requires_grad=True)
    y = torch.randint(0, K, (B,))
    ols.eval()
    ols(z, y).backward()
    h = 1e-2
    numeric = torch.zeros(B, K)
    with torch.no_grad():
        for i in range(B):
            for k in range(K):
                e = torch.zeros(B, K)
                e[i, k] = h
                numeric[i, k] = (ols(z + e, y) - ols(z - e, y)) / (2 * h)
    torch.testing.assert_close(z.grad, numeric, atol=2e-4, rtol=1e-3)


@settings(max_examples=40, deadline=None)
@given(K=st.integers(2, 12), B=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       rule=st.sampled_from(["uniform", "keep"]), temperature=st.sampled_from([0.5, 1.0, 3.0]))
def test_rows_are_distributions_and_empty_classes_follow_the_rule(K, B, seed, rule, temperature):
    g = torch.Generator().manual_seed(seed)
    ols = OnlineLabelSmoothing(num_classes=K, empty_class=rule, temperature=temperature, init="ls")
    before = ols.soft_labels.clone()
    logits = torch.randn(B, K, generator=g) * 3
    y = torch.randint(0, K, (B,), generator=g)
    ols(logits, y)
    correct_classes = set(y[logits.argmax(1) == y].tolist())
    ols.next_epoch()
    S = ols.soft_labels
    for c in range(K):
        if c in correct_classes:
            assert S[c].sum().item() == pytest.approx(1.0, abs=1e-5)
            mask = (y == c) & (logits.argmax(1) == y)
            expected = torch.softmax(logits[mask] / temperature, dim=1).mean(0)
            torch.testing.assert_close(S[c], expected, atol=1e-6, rtol=1e-5)
        elif rule == "uniform":
            torch.testing.assert_close(S[c], torch.full((K,), 1.0 / K))
        else:
            torch.testing.assert_close(S[c], before[c])


def test_state_dict_round_trip_mid_epoch_continues_exactly():
    K = 6
    full = OnlineLabelSmoothing.from_preset("paper-fine-grained", num_classes=K)
    for epoch in range(2):
        for logits, y in epoch_batches(K, epoch, confident=1):
            full(logits, y)
        full.next_epoch()
    batches = list(epoch_batches(K, 2, batches=6, confident=1))
    for logits, y in batches[:3]:
        full(logits, y)
    resumed = OnlineLabelSmoothing.from_preset("paper-fine-grained", num_classes=K)
    resumed.load_state_dict(full.state_dict())
    assert resumed.epoch == 2 and resumed.step == full.step
    for logits, y in batches[3:]:
        assert resumed(logits, y).item() == full(logits, y).item()
    full.next_epoch()
    resumed.next_epoch()
    assert torch.equal(full.soft_labels, resumed.soft_labels)


def test_state_dict_for_another_class_count_is_refused():
    sd = OnlineLabelSmoothing(num_classes=4).state_dict()
    with pytest.raises(ValueError, match="num_classes=5"):
        OnlineLabelSmoothing(num_classes=5).load_state_dict(sd)


def test_evaluation_batches_add_nothing():
    ols = OnlineLabelSmoothing(num_classes=3)
    z = torch.tensor([[5.0, 0.0, 0.0]])
    y = torch.tensor([0])
    with torch.no_grad():
        ols(z, y)
    ols.eval()
    ols(z, y)
    assert ols.counts.sum().item() == 0
    ols.train()
    ols(z, y)
    assert ols.counts.tolist() == [1.0, 0.0, 0.0]


def test_dense_targets_use_the_mixture_of_rows_and_the_target_argmax():
    K = 4
    ols = OnlineLabelSmoothing(num_classes=K, hard_weight=0.3, soft_weight=0.7, init="uniform")
    S = torch.softmax(torch.randn(K, K, generator=torch.Generator().manual_seed(3)), dim=1)
    ols._S = S.clone()
    t = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.4, 0.6]])
    z = torch.tensor([[2.0, 0.5, 0.1, 0.0], [0.0, 0.1, 3.0, 0.2]])
    loss = ols(z, t)
    logp = F.log_softmax(z, dim=1)
    expected = 0.0
    for i in range(2):
        soft_row = sum(t[i, j] * S[j] for j in range(K))
        expected += 0.3 * -(t[i] * logp[i]).sum() + 0.7 * -(soft_row * logp[i]).sum()
    assert loss.item() == pytest.approx(expected.item() / 2, rel=1e-6)
    # sample 0: argmax target 0, predicted 0 -> counts; sample 1: argmax target 3, predicted 2 -> does not
    assert ols.counts.tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_and_autocast_inputs_stay_float32_and_finite(dtype):
    K = 10
    ols = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K)
    layer = torch.nn.Linear(8, K)
    x = torch.randn(16, 8)
    y = torch.randint(0, K, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        loss = ols(logits, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = ols_loss(logits.float(), y, ols.soft_labels, 0.5, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    half = (torch.randn(16, K) * 1e4).clamp(-6e4, 6e4).to(dtype).requires_grad_(True)
    loss = ols(half, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(half.grad.float()).all()
    ols.next_epoch()
    assert ols.soft_labels.dtype == torch.float32 and torch.isfinite(ols.soft_labels).all()


def test_very_confident_logits_give_finite_loss_gradient_and_matrix():
    K = 5
    ols = OnlineLabelSmoothing(num_classes=K, init="uniform")
    z = torch.full((4, K), -1e4)
    z[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1e4
    z.requires_grad_(True)
    y = torch.tensor([0, 1, 3, 3])
    loss = ols(z, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    ols.next_epoch()
    assert torch.isfinite(ols.soft_labels).all()
    torch.testing.assert_close(ols.soft_labels[0], F.one_hot(torch.tensor(0), K).float())


def test_momentum_blends_with_the_previous_matrix():
    K = 3
    ols = OnlineLabelSmoothing(num_classes=K, momentum=0.75, init="uniform")
    z = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    y = torch.arange(3)
    ols(z, y)
    ols.next_epoch()
    p = torch.softmax(z, dim=1)
    torch.testing.assert_close(ols.soft_labels, 0.75 * torch.full((K, K), 1 / K) + 0.25 * p)


def test_update_every_n_steps_replaces_the_per_epoch_update():
    K = 3
    ols = OnlineLabelSmoothing(num_classes=K, update_every=2, init="zeros", empty_class="keep")
    z = torch.tensor([[4.0, 0.0, 0.0]])
    y = torch.tensor([0])
    ols(z, y)
    assert ols.soft_labels.sum().item() == 0.0
    ols(z, y)
    torch.testing.assert_close(ols.soft_labels[0], torch.softmax(z[0], dim=0))
    ols.next_epoch()  # advances the epoch only; statistics since the last update stay
    assert ols.epoch == 1 and ols.num_updates == 1


@pytest.mark.parametrize(
    "logits, target, message",
    [
        (torch.zeros(2, 3), torch.tensor([0, 3]), r"labels must lie in \[0, 2\]"),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), r"labels must lie in"),
        (torch.zeros(2, 4), torch.tensor([0, 1]), "4 classes but the loss was built for num_classes=3"),
        (torch.zeros(3, 3), torch.tensor([0, 1]), "batch sizes differ"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), torch.tensor([0]), "NaN or inf"),
        (torch.tensor([[0.0, float("inf"), 0.0]]), torch.tensor([0]), "NaN or inf"),
        (torch.tensor([[0.0, -float("inf"), 0.0]]), torch.tensor([0]), "NaN or inf"),
        (torch.tensor([[0.0, -float("inf"), 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]), "NaN or inf"),
        (torch.tensor([[float("nan"), 0.0, 0.0]]), torch.tensor([7]), r"labels must lie in \[0, 2\]"),
        (torch.zeros(3), torch.tensor([0, 1, 2]), "shape"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
        (torch.zeros(2, 3), torch.full((2, 3), -0.5), "non-negative"),
    ],
)
def test_bad_input_raises_a_clear_value_error(logits, target, message):
    ols = OnlineLabelSmoothing(num_classes=3)
    with pytest.raises(ValueError, match=message):
        ols(logits, target)
    assert ols.counts.sum().item() == 0  # nothing leaked into the statistics


def test_device_moves_keep_float32_state():
    ols = OnlineLabelSmoothing(num_classes=3).to(torch.float64)
    assert ols.soft_labels.dtype == torch.float32
    ols.half()
    assert ols.soft_labels.dtype == torch.float32


def test_state_is_not_exposed_as_buffers_so_ddp_cannot_overwrite_it():
    ols = OnlineLabelSmoothing(num_classes=3)
    assert list(ols.buffers()) == []
    assert set(ols.state_dict()) == {"soft_labels", "accumulator", "counts", "epoch", "step", "num_updates"}


def test_momentum_from_zeros_keeps_every_row_a_distribution():
    ols = OnlineLabelSmoothing(3, init="zeros", empty_class="keep", momentum=0.9)
    ols(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]))
    ols.next_epoch()
    ols(torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([1]))
    ols.next_epoch()
    # class 0: first estimate, then kept; class 1: first estimate (nothing to blend with); class 2: never seen
    torch.testing.assert_close(ols.soft_labels.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(ols.soft_labels[1], torch.softmax(torch.tensor([0.0, 5.0, 0.0]), 0))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_integer_labels_of_any_width_are_accepted(dtype):
    from olsmooth import LabelSmoothingCrossEntropy, TfKDRegularization
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    for loss in (OnlineLabelSmoothing(3), LabelSmoothingCrossEntropy(3), TfKDRegularization(3)):
        assert loss(z, y.to(dtype)).item() == pytest.approx(loss(z, y).item(), rel=1e-6)
