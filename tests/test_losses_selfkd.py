"""CS-KD and PS-KD: hand-worked cases, per-sample references written after the authors' loops, gradients,
precision under autocast, resume, refusals, and PS-KD's store under two gloo processes."""

from __future__ import annotations

import io
import math

import pytest
import torch

from gloo import on_processes
from olsmooth.errors import UserInputError
from olsmooth.losses import (
    ClassWiseSelfKD,
    ProgressiveSelfKD,
    TrainingRun,
    build_loss,
    class_pair_kd_loss,
    progressive_alpha,
    pskd_loss,
)


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- CS-KD ---------------------------------------------------------------------------------------------------------

def test_cskd_hand_worked():
    # anchor logits 0, 0 (label 0): p_T = (1/2, 1/2), CE = ln 2; partner logits 4 ln 3, 0 at T = 4: q = (3/4, 1/4)
    logits = torch.tensor([[0.0, 0.0], [4 * math.log(3.0), 0.0]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = ClassWiseSelfKD(2)(logits, torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(math.log(2.0) + 16.0 * kl, rel=1e-6)


def naive_cskd(logits: torch.Tensor, labels: torch.Tensor, T: float, weight: float) -> float:
    """The authors' train step, one anchor at a time: CE on the first half, sum-KL * T^2 / n with the second half."""
    n, K = logits.size(0) // 2, logits.size(1)
    total = 0.0
    for i in range(n):
        za, zb = logits[i].tolist(), logits[n + i].tolist()
        log_norm = math.log(sum(math.exp(v) for v in za))
        ce = log_norm - za[int(labels[i])]
        pa = [math.exp(v / T) for v in za]
        pb = [math.exp(v / T) for v in zb]
        pa, pb = [v / sum(pa) for v in pa], [v / sum(pb) for v in pb]
        kl = sum(pb[k] * math.log(pb[k] / pa[k]) for k in range(K))
        total += ce / n + weight * T * T * kl / n
    return total


@pytest.mark.parametrize("T,weight", [(4.0, 1.0), (1.0, 3.0), (2.5, 0.0)])
def test_cskd_matches_the_per_sample_reference(T, weight):
    g = rng(1)
    labels = torch.randint(0, 5, (6,), generator=g)
    logits = torch.randn(12, 5, generator=g, dtype=torch.float64) * 3
    got = class_pair_kd_loss(logits, labels.repeat(2), T, weight)
    assert got.item() == pytest.approx(naive_cskd(logits, labels, T, weight), rel=1e-12)


def test_cskd_partners_take_no_gradient_and_anchors_pass_gradcheck():
    g = rng(2)
    labels = torch.tensor([0, 2, 1, 0, 2, 1])
    partners = torch.randn(3, 3, generator=g, dtype=torch.float64)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    class_pair_kd_loss(logits, labels).backward()
    assert torch.equal(logits.grad[3:], torch.zeros(3, 3, dtype=torch.float64))
    anchors = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: class_pair_kd_loss(torch.cat([a, partners]), labels), (anchors,))


def test_cskd_refuses_unpaired_batches_and_mixup_targets():
    loss = ClassWiseSelfKD(3)
    with pytest.raises(ValueError, match="even batch size"):
        loss(torch.zeros(3, 3), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="partner i of anchor i"):
        loss(torch.zeros(4, 3), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="mixup"):
        loss(torch.zeros(4, 3), torch.full((4, 3), 1 / 3))


# -- PS-KD ---------------------------------------------------------------------------------------------------------

def test_pskd_alpha_schedule_of_the_authors():
    assert progressive_alpha(0, 300) == pytest.approx(0.8 / 300)
    assert progressive_alpha(149, 300) == pytest.approx(0.4)
    assert progressive_alpha(299, 300) == pytest.approx(0.8)


def test_pskd_hand_worked_two_epochs():
    loss = ProgressiveSelfKD(2)
    loss.bind(TrainingRun(num_samples=2, epochs=2, steps_per_epoch=1))
    index, y = torch.tensor([1]), torch.tensor([0])
    # epoch 0: the target is one-hot whatever alpha_t; logits 0, 0 give ln 2 and store (1/2, 1/2) for sample 1
    assert loss(torch.zeros(1, 2), y, index=index).item() == pytest.approx(math.log(2.0))
    loss.next_epoch()
    # epoch 1: a_t = 0.8 * 2 / 2 = 0.8, target 0.2 (1, 0) + 0.8 (1/2, 1/2) = (0.6, 0.4); softmax(ln 3, 0) = (3/4, 1/4)
    got = loss(torch.tensor([[math.log(3.0), 0.0]]), y, index=index)
    assert got.item() == pytest.approx(-(0.6 * math.log(0.75) + 0.4 * math.log(0.25)), rel=1e-6)
    torch.testing.assert_close(loss.predictions[1], torch.tensor([0.75, 0.25]))


def authors_pskd(batches: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]], N: int, K: int,
                 alpha_T: float) -> list[float]:
    """The authors' train loop (main.py), sample by sample: one-hot stored at epoch 0, then the soft target from
    all_predictions, the batch's softmax written back after the step."""
    epochs = len(batches)
    store = [[0.0] * K for _ in range(N)]
    losses = []
    for epoch, epoch_batches in enumerate(batches):
        alpha_t = alpha_T * (epoch + 1) / epochs
        for logits, y, index in epoch_batches:
            total = 0.0
            for z, label, i in zip(logits.tolist(), y.tolist(), index.tolist()):
                onehot = [1.0 if k == label else 0.0 for k in range(K)]
                if epoch == 0:
                    store[i] = onehot
                target = [(1 - alpha_t) * onehot[k] + alpha_t * store[i][k] for k in range(K)]
                log_norm = math.log(sum(math.exp(v) for v in z))
                total += -sum(target[k] * (z[k] - log_norm) for k in range(K)) / len(y)
            losses.append(total)
            for z, i in zip(logits.tolist(), index.tolist()):
                norm = sum(math.exp(v) for v in z)
                store[i] = [math.exp(v) / norm for v in z]
    return losses


def epoch_batches(N: int, K: int, epochs: int, batch: int, seed: int):
    g = rng(seed)
    labels = torch.randint(0, K, (N,), generator=g)
    out = []
    for _ in range(epochs):
        order = torch.randperm(N, generator=g)
        out.append([(torch.randn(len(ix), K, generator=g, dtype=torch.float64) * 2, labels[ix], ix)
                     for ix in order.split(batch)])
    return out


@pytest.mark.parametrize("store_dtype,tol", [("float32", 1e-6), ("float16", 2e-3)])
def test_pskd_matches_the_authors_loop_over_epochs(store_dtype, tol):
    N, K, E = 10, 4, 3
    batches = epoch_batches(N, K, E, batch=4, seed=5)
    loss = ProgressiveSelfKD(K, store_dtype=store_dtype)
    loss.bind(TrainingRun(N, E, 3))
    got = []
    for epoch in batches:
        for logits, y, index in epoch:
            got.append(loss(logits, y, index=index).item())
        loss.next_epoch()
    assert got == pytest.approx(authors_pskd(batches, N, K, 0.8), rel=tol)
    assert loss.predictions.element_size() == (2 if store_dtype == "float16" else 4)


def test_pskd_gradcheck_and_no_store_writes_outside_training():
    g = rng(6)
    previous = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 2, 1, 2])
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda logits: pskd_loss(logits, y, previous, 0.4), (z,))
    loss = ProgressiveSelfKD(3)
    loss.bind(TrainingRun(4, 2, 1))
    loss.eval()
    loss(torch.randn(4, 3), y, index=torch.arange(4))
    loss.train()
    with torch.no_grad():
        loss(torch.randn(4, 3), y, index=torch.arange(4))
    assert not loss.predictions.any()


def test_pskd_under_autocast_is_float32_of_the_half_logits():
    loss = ProgressiveSelfKD(5)
    loss.bind(TrainingRun(8, 4, 1))
    loss.next_epoch()
    g = rng(7)
    z = torch.randn(8, 5, generator=g).bfloat16()
    y = torch.randint(0, 5, (8,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z, y, index=torch.arange(8))
    assert got.dtype == torch.float32
    expected = pskd_loss(z.float(), y, torch.nn.functional.one_hot(y, 5).float(), progressive_alpha(1, 4))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pskd_resume_from_state_dict_is_exact():
    N, K, E = 9, 3, 3
    batches = epoch_batches(N, K, E, batch=4, seed=8)

    def train(loss, epochs, record):
        for epoch in epochs:
            for logits, y, index in batches[epoch]:
                record.append(loss(logits, y, index=index).item())
            loss.next_epoch()

    whole, resumed = [], []
    straight = ProgressiveSelfKD(K)
    straight.bind(TrainingRun(N, E, 3))
    train(straight, range(E), whole)
    first = ProgressiveSelfKD(K)
    first.bind(TrainingRun(N, E, 3))
    train(first, range(1), resumed)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = ProgressiveSelfKD(K)
    second.bind(TrainingRun(N, E, 3))
    second.load_state_dict(torch.load(buffer, weights_only=True))
    train(second, range(1, E), resumed)
    assert resumed == whole


def test_pskd_refusals():
    loss = ProgressiveSelfKD(3)
    with pytest.raises(ValueError, match="bind"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]), index=torch.arange(2))
    loss.bind(TrainingRun(4, 2, 1))
    with pytest.raises(ValueError, match="index"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]), index=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="mixup"):
        loss(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), index=torch.arange(2))
    other = ProgressiveSelfKD(3)
    other.bind(TrainingRun(5, 2, 1))
    with pytest.raises(ValueError, match="4 samples"):
        other.load_state_dict(loss.state_dict())
    with pytest.raises(UserInputError, match="store_dtype"):
        build_loss("pskd", 3, store_dtype="float64")


# -- PS-KD under two processes -------------------------------------------------------------------------------------

N_DIST, K_DIST, E_DIST = 11, 4, 3


def dist_run(rank: int, world: int) -> list[torch.Tensor]:
    """Each rank trains on its DistributedSampler-style share (padded, rank r takes r, r + W, ...) of each epoch."""
    batches = epoch_batches(N_DIST, K_DIST, E_DIST, batch=N_DIST, seed=9)
    loss = ProgressiveSelfKD(K_DIST)
    loss.bind(TrainingRun(N_DIST, E_DIST, 1))
    stores = []
    for epoch in batches:
        logits, y, index = epoch[0]
        per_rank = math.ceil(N_DIST / world)
        take = (torch.arange(per_rank * world) % N_DIST)[rank::world]
        loss(logits[take], y[take], index=index[take])
        loss.next_epoch()
        stores.append(loss.predictions.clone())
    return stores


def test_pskd_stores_of_two_processes_equal_one_process_on_all_the_data(tmp_path):
    # 11 samples on 2 ranks: the padding repeats the first sample of each epoch on rank 1, with the same logits
    single = dist_run(0, 1)
    for got in on_processes(dist_run, 2, tmp_path):
        assert len(got) == E_DIST
        for a, b in zip(got, single):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
