"""Top-k OLS: equal to the dense rule when top_k >= K, within its stated bound otherwise, memory linear in K."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from olsmooth import OnlineLabelSmoothing
from olsmooth.errors import UserInputError
from olsmooth.losses import build_loss
from olsmooth.losses.topk import largest_entries, top_entries


def batches(K: int, epoch: int, steps: int = 4, B: int = 24, scale: float = 2.0):
    """Deterministic logits and labels, most samples correct, class K-1 never correct."""
    g = torch.Generator().manual_seed(100 + epoch)
    for _ in range(steps):
        y = torch.randint(0, K, (B,), generator=g)
        z = torch.randn(B, K, generator=g) * scale
        z[torch.arange(B), y] += 2.5
        z[y == K - 1, K - 1] = -20.0
        yield z, y


def sparse_rows_as_dense(ols: OnlineLabelSmoothing) -> torch.Tensor:
    """The dense rows a sparse S stands for, built entry by entry: kept values, the residual spread evenly over
    the row's other columns."""
    index, value, residual = ols.sparse_soft_labels
    K = index.size(0)
    rows = torch.zeros(K, K)
    for c in range(K):
        kept = {int(i): float(v) for i, v in zip(index[c], value[c]) if int(i) >= 0}
        others = K - len(kept)
        for k in range(K):
            rows[c, k] = kept[k] if k in kept else (float(residual[c]) / others if others else 0.0)
    return rows


OPTION_SETS = [
    dict(),
    dict(init="zeros", hard_weight=0.5, soft_weight=0.5, empty_class="uniform"),
    dict(init="uniform", hard_weight=1.0, soft_weight=1.0, freeze_threshold=0.6),
    dict(momentum=0.7),
    dict(init="zeros", momentum=0.5, empty_class="keep"),
    dict(temperature=2.5, empty_class="uniform"),
    dict(update_every=3),
    dict(hard_weight=0.0, soft_weight=1.0),
    dict(hard_weight=1.0, soft_weight=0.0),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_top_k_at_least_k_equals_the_dense_path(options):
    K = 6
    dense = OnlineLabelSmoothing(K, **options)
    sparse = OnlineLabelSmoothing(K, top_k=K + 3, **options)
    for epoch in range(4):
        for z, y in batches(K, epoch):
            a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            la, lb = dense(a, y), sparse(b, y)
            la.backward()
            lb.backward()
            assert lb.item() == pytest.approx(la.item(), abs=1e-6, rel=1e-6)
            torch.testing.assert_close(b.grad, a.grad, atol=1e-7, rtol=1e-5)
        dense.next_epoch()
        sparse.next_epoch()
        torch.testing.assert_close(sparse.soft_labels, dense.soft_labels, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(sparse_rows_as_dense(sparse), dense.soft_labels, atol=1e-6, rtol=1e-5)


def test_mixup_targets_and_double_backward_equal_the_dense_path():
    K = 5
    dense, sparse = OnlineLabelSmoothing(K, hard_weight=0.3, soft_weight=0.7), OnlineLabelSmoothing(
        K, hard_weight=0.3, soft_weight=0.7, top_k=K)
    for z, y in batches(K, 0):
        dense(z, y)
        sparse(z, y)
    dense.next_epoch()
    sparse.next_epoch()
    g = torch.Generator().manual_seed(5)
    lam = torch.rand(8, 1, generator=g)
    t = lam * F.one_hot(torch.randint(0, K, (8,), generator=g), K) + (1 - lam) * F.one_hot(
        torch.randint(0, K, (8,), generator=g), K)
    x = torch.randn(8, 3, generator=g)
    layer = torch.nn.Linear(3, K)
    penalties = []
    for loss in (dense, sparse):
        inputs = x.clone().requires_grad_(True)
        value = loss(layer(inputs), t)
        (grad,) = torch.autograd.grad(value, inputs, create_graph=True)
        penalty = grad.pow(2).sum()
        penalties.append((value.detach(), penalty.detach(), *torch.autograd.grad(penalty, layer.weight)))
    for a, b in zip(*penalties):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_below_k_rows_keep_their_mass_and_stay_within_the_l1_bound():
    K, m = 40, 4
    dense = OnlineLabelSmoothing(K, init="zeros", empty_class="uniform")
    sparse = OnlineLabelSmoothing(K, init="zeros", empty_class="uniform", top_k=m, candidates=8)
    for epoch in range(3):
        for z, y in batches(K, epoch, steps=6, B=64, scale=1.5):
            dense(z, y)
            sparse(z, y)
        dense.next_epoch()
        sparse.next_epoch()
        index, value, residual = sparse.sparse_soft_labels
        rows = sparse_rows_as_dense(sparse)
        torch.testing.assert_close(rows.sum(1), torch.ones(K), atol=1e-5, rtol=0)  # every row a distribution
        l1 = (rows - dense.soft_labels).abs().sum(1)
        assert (l1 <= 2 * residual + 1e-5).all(), (l1 - 2 * residual).max()
        kept = index >= 0
        truth = dense.soft_labels.gather(1, index.clamp(min=0).long())
        assert (value[kept] <= truth[kept] + 1e-6).all()  # a kept entry never overstates the dense mean
        assert residual.max() > 0  # the case is not trivially exact


def test_loss_is_the_cross_entropy_against_the_rows_it_stands_for():
    K = 30
    sparse = OnlineLabelSmoothing(K, top_k=3, hard_weight=0.4, soft_weight=0.6)
    for z, y in batches(K, 0, B=64):
        sparse(z, y)
    sparse.next_epoch()
    rows = sparse_rows_as_dense(sparse)
    z, y = next(batches(K, 9))
    z.requires_grad_(True)
    sparse.eval()
    loss = sparse(z, y)
    reference_in = z.detach().clone().requires_grad_(True)
    logp = F.log_softmax(reference_in, dim=1)
    target = 0.4 * F.one_hot(y, K) + 0.6 * rows[y]
    reference = -(target * logp).sum(1).mean()
    loss.backward()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(z.grad, reference_in.grad, atol=1e-7, rtol=1e-5)


def test_largest_entries_are_the_top_k_values():
    g = torch.Generator().manual_seed(0)
    for K, k in [(1000, 32), (1003, 8), (37, 3), (20_011, 128), (500, 1)]:
        probs = torch.softmax(torch.randn(20, K, generator=g) * 3, dim=1)
        values, cols = largest_entries(probs, k)
        assert torch.equal(values.sort(dim=1, descending=True)[0], probs.topk(k, dim=1)[0])
        assert torch.equal(probs.gather(1, cols), values)
        assert (cols.sort(dim=1)[0].diff(dim=1) > 0).all()  # distinct columns


@pytest.mark.parametrize("count, limit", [(0, 10), (1, 10), (5000, 40), (5000, 2**40), (3000, 2**62)])
def test_stable_order_is_a_stable_argsort(count, limit):
    """numpy's packed sort where key and position fit in 63 bits (many repeated keys: stability shows), torch's
    stable argsort beyond."""
    from olsmooth.losses.topk import stable_order
    keys = torch.randint(0, limit, (count,), generator=torch.Generator().manual_seed(count))
    assert torch.equal(stable_order(keys, limit), torch.argsort(keys, stable=True))


def test_top_entries_sums_duplicates_and_keeps_each_rows_largest():
    g = torch.Generator().manual_seed(1)
    R, C, cap = 30, 25, 6
    rows, cols = torch.randint(0, R, (2000,), generator=g), torch.randint(0, C, (2000,), generator=g)
    vals = torch.rand(2000, generator=g) - 0.2
    index, value, dropped = top_entries(rows * C + cols, vals, R, C, cap)
    sums: dict[tuple[int, int], float] = collections.defaultdict(float)
    for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
        sums[(r, c)] += v
    for r in range(R):
        ranked = sorted((-v, c) for (row, c), v in sums.items() if row == r)
        assert index[r, :min(cap, len(ranked))].tolist() == [c for _, c in ranked[:cap]]
        assert dropped[r].item() == pytest.approx(-sum(v for v, _ in ranked[cap:]), abs=1e-4)


def test_state_dict_mid_epoch_resumes_exactly_with_staged_candidates():
    K = 50
    full = OnlineLabelSmoothing(K, top_k=4, candidates=6, momentum=0.3)
    for z, y in batches(K, 0, B=48):
        full(z, y)
    full.next_epoch()
    steps = list(batches(K, 1, steps=6, B=48))
    for z, y in steps[:3]:
        full(z, y)
    assert full.state_dict()["pending_keys"].numel() > 0
    resumed = OnlineLabelSmoothing(K, top_k=4, candidates=6, momentum=0.3)
    resumed.load_state_dict(full.state_dict())
    for z, y in steps[3:]:
        assert resumed(z, y).item() == full(z, y).item()
    full.next_epoch()
    resumed.next_epoch()
    for a, b in zip(full.sparse_soft_labels, resumed.sparse_soft_labels):
        assert torch.equal(a, b)


def test_state_for_another_top_k_or_a_dense_state_is_refused():
    sparse = OnlineLabelSmoothing(10, top_k=3)
    with pytest.raises(ValueError, match="top_k=4"):
        OnlineLabelSmoothing(10, top_k=4).load_state_dict(sparse.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        OnlineLabelSmoothing(10).load_state_dict(sparse.state_dict())


def test_autocast_statistics_stay_float32():
    K = 12
    ols = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K, top_k=4)
    layer = torch.nn.Linear(6, K)
    x, y = torch.randn(32, 6), torch.randint(0, K, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        loss = ols(logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32 and torch.isfinite(loss)
    ols.next_epoch()
    index, value, residual = ols.sparse_soft_labels
    assert value.dtype == residual.dtype == torch.float32 and index.dtype == torch.int32
    assert torch.isfinite(value).all()


@pytest.mark.parametrize("logits, message", [
    (torch.tensor([[0.0, -float("inf"), 0.0, 0.0]]), "NaN or inf"),
    (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), "NaN or inf"),
])
def test_non_finite_logits_are_refused(logits, message):
    ols = OnlineLabelSmoothing(4, top_k=1, init="zeros", hard_weight=1.0)
    with pytest.raises(ValueError, match=message):
        ols(logits, torch.tensor([0]))
    assert ols.counts.sum().item() == 0


def test_a_hundred_thousand_classes_train_in_memory_linear_in_k():
    K, m = 100_000, 32
    ols = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K, top_k=m)
    assert ols.memory_bytes < 100 * 10**6
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        y = torch.randint(0, K, (16,), generator=g)
        z = torch.randn(16, K, generator=g)
        z[torch.arange(16), y] += 8.0
        z.requires_grad_(True)
        ols(z, y).backward()
        assert torch.isfinite(z.grad).all()
    ols.next_epoch()
    index, value, residual = ols.sparse_soft_labels
    seen = torch.unique(y)
    assert (index[seen, 0].long() == seen).all()  # each class's largest entry is itself
    torch.testing.assert_close(value[seen].sum(1) + residual[seen], torch.ones(seen.numel()))
    with pytest.raises(ValueError, match="sparse_soft_labels"):
        ols.soft_labels  # noqa: B018 - a dense view would need 37 GiB


def test_the_registry_declares_top_k_and_checks_it():
    loss = build_loss("ols", 20, top_k=5, preset="paper-fine-grained")
    assert loss.sparse_soft_labels is not None and loss.freeze_threshold == 0.88
    with pytest.raises(UserInputError, match="top_k"):
        build_loss("ols", 20, top_k=0)
    with pytest.raises(UserInputError, match="needs top_k"):
        build_loss("ols", 20, candidates=8)
    with pytest.raises(UserInputError, match="at least top_k"):
        build_loss("ols", 20, top_k=8, candidates=4)
