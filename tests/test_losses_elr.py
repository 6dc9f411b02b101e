"""Early-learning regularisation against hand-worked steps, a per-sample loop, resume, two gloo processes and the
command line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gloo import on_processes
from olsmooth.cli import main
from olsmooth.errors import UserInputError
from olsmooth.losses import ELR, TrainingRun, build_loss, elr_loss
from olsmooth.runs.checkpoints import load_checkpoint


def bound(num_samples: int, **options) -> ELR:
    loss = ELR(**{"num_classes": 2, **options})
    loss.bind(TrainingRun(num_samples=num_samples, epochs=1, steps_per_epoch=1))
    return loss


def test_hand_worked_two_steps_value_and_gradient():
    loss = bound(3, beta=0.5, lam=2.0)
    # step 1, sample 1, p = (0.75, 0.25): t = 0.5 * 0 + 0.5 p = (0.375, 0.125), <p, t> = 0.3125
    z = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    value = loss(z, torch.tensor([0]), index=torch.tensor([1]))
    assert value.item() == pytest.approx(-math.log(0.75) + 2 * math.log(1 - 0.3125), rel=1e-6)
    value.backward()
    # CE: p - onehot; penalty: -lam / (1 - <p, t>) * p_k (t_k - <p, t>), t held constant
    reg = [-2 / 0.6875 * 0.75 * (0.375 - 0.3125), -2 / 0.6875 * 0.25 * (0.125 - 0.3125)]
    torch.testing.assert_close(z.grad, torch.tensor([[-0.25 + reg[0], 0.25 + reg[1]]]), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss.targets, torch.tensor([[0.0, 0.0], [0.375, 0.125], [0.0, 0.0]]))
    # step 2, the same sample, p = (0.25, 0.75): t = 0.5 (0.375, 0.125) + 0.5 p = (0.3125, 0.4375)
    value = loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([0]), index=torch.tensor([1]))
    assert value.item() == pytest.approx(math.log(4.0) + 2 * math.log(1 - (0.25 * 0.3125 + 0.75 * 0.4375)), rel=1e-6)
    torch.testing.assert_close(loss.targets[1], torch.tensor([0.3125, 0.4375]))


def test_gradcheck_float64():
    torch.manual_seed(0)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    t = torch.softmax(torch.randn(4, 3, dtype=torch.float64), dim=1) * 0.6
    assert torch.autograd.gradcheck(lambda logits: elr_loss(logits, y, t, lam=3.0), (z,))


def naive_steps(batches, num_samples: int, K: int, beta: float, lam: float):
    """The authors' update and loss, one sample at a time."""
    targets = torch.zeros(num_samples, K, dtype=torch.float64)
    losses = []
    for z, y, index in batches:
        terms = []
        for row, label, i in zip(z.double(), y, index):
            p = torch.softmax(row, dim=0).clamp(1e-4, 1 - 1e-4)
            targets[i] = beta * targets[i] + (1 - beta) * p / p.sum()
            terms.append(-torch.log_softmax(row, dim=0)[label] + lam * torch.log(1 - (targets[i] * p).sum()))
        losses.append(torch.stack(terms).mean())
    return targets, losses


def random_batches(steps: int, N: int, B: int, K: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        z = torch.randn(B, K, generator=g) * 3
        z[0, 1] = 30.0  # a saturated softmax: the clamp decides
        out.append((z, torch.randint(0, K, (B,), generator=g), torch.randperm(N, generator=g)[:B]))
    return out


def test_update_and_loss_match_a_per_sample_loop_over_two_steps():
    N, B, K = 10, 6, 4
    batches = random_batches(2, N, B, K, seed=1)
    loss = build_loss("elr", K, beta=0.7, lam=3.0)
    loss.bind(TrainingRun(N, 1, 2))
    got = [loss(z, y, index=i).item() for z, y, i in batches]
    targets, expected = naive_steps(batches, N, K, 0.7, 3.0)
    torch.testing.assert_close(loss.targets, targets.float(), atol=1e-6, rtol=1e-6)
    assert got == pytest.approx([e.item() for e in expected], rel=1e-5)


def test_state_dict_round_trip_mid_epoch_resumes_exactly():
    N, B, K = 12, 4, 3
    batches = random_batches(3, N, B, K, seed=2)
    through = build_loss("elr", K)
    through.bind(TrainingRun(N, 2, 3))
    first = build_loss("elr", K)
    first.bind(TrainingRun(N, 2, 3))
    for loss in (through, first):
        loss(*batches[0][:2], index=batches[0][2])
    saved = first.state_dict()
    resumed = build_loss("elr", K)
    resumed.bind(TrainingRun(N, 2, 3))
    resumed.load_state_dict(saved)
    for z, y, i in batches[1:]:
        assert resumed(z, y, index=i).item() == through(z, y, index=i).item()
    assert torch.equal(resumed.targets, through.targets)
    assert set(saved) == {"targets", "changed"} and saved["changed"].sum() == B
    assert list(through.buffers()) == []  # kept out of buffers: DDP would broadcast rank 0's


def test_no_update_in_eval_mode_or_without_gradients():
    loss = bound(4)
    z, y, i = torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([0, 3])
    loss.eval()
    loss(z, y, index=i)
    with torch.no_grad():
        loss.train()(z, y, index=i)
    assert not loss.targets.any()


def test_presets_and_overrides():
    assert (build_loss("elr", 10).beta, build_loss("elr", 10).lam) == (0.7, 3.0)
    cifar100 = build_loss("elr", 100, preset="cifar100")
    assert (cifar100.beta, cifar100.lam) == (0.9, 7.0)
    assert build_loss("elr", 100, preset="cifar100", lam=1.5).lam == 1.5
    assert build_loss("elr", 10).needs_index
    with pytest.raises(UserInputError, match="beta"):
        build_loss("elr", 10, beta=1.0)


def test_errors_are_clear():
    z, y = torch.zeros(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="no per-sample store yet: call bind"):
        ELR(2)(z, y, index=torch.tensor([0, 1]))
    loss = bound(3)
    with pytest.raises(ValueError, match="needs each sample's index"):
        loss(z, y)
    with pytest.raises(ValueError, match=r"sample indices must lie in \[0, 2\], got values from 0 to 3"):
        loss(z, y, index=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="class-index targets only"):
        loss(z, torch.tensor([[0.5, 0.5], [1.0, 0.0]]), index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="built for num_samples=5 but the run has 3"):
        ELR(2, num_samples=5).bind(TrainingRun(3, 1, 1))


def test_float32_under_autocast():
    loss = bound(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(torch.randn(2, 2).bfloat16(), torch.tensor([0, 1]), index=torch.tensor([0, 1]))
    assert value.dtype == torch.float32 and loss.targets.dtype == torch.float32


# -- two processes --------------------------------------------------------------------------------------------
N, K, STEPS, B, EPOCHS = 24, 5, 3, 8, 2


def epoch_batches(epoch: int):
    """The global batches of an epoch: every sample once, in a seeded order (each rank takes half of a batch)."""
    g = torch.Generator().manual_seed(100 + epoch)
    order = torch.randperm(N, generator=g)
    for s in range(STEPS):
        index = order[s * B:(s + 1) * B]
        yield torch.randn(B, K, generator=g) * 2, torch.randint(0, K, (B,), generator=g), index


def rank_logits(rank: int) -> torch.Tensor:
    return F.one_hot(torch.tensor([0]), K).float() * 2.0 * rank


def train(rank: int, world: int) -> list[torch.Tensor]:
    loss = build_loss("elr", K)
    loss.bind(TrainingRun(N, EPOCHS, STEPS))
    stores = []
    for epoch in range(EPOCHS):
        for z, y, index in epoch_batches(epoch):
            loss(z[rank::world], y[rank::world], index=index[rank::world])
        loss.next_epoch()
        stores.append(loss.targets.clone())
    # a sample both processes saw (as DistributedSampler's padding repeats one): the mean of their rows
    loss(rank_logits(rank), torch.tensor([0]), index=torch.tensor([0]))
    loss.next_epoch()
    stores.append(loss.targets.clone())
    return stores


def test_two_processes_hold_the_store_of_one_process_on_all_the_data(tmp_path):
    ranks = on_processes(train, 2, tmp_path)
    single = train(0, 1)
    for epoch in range(EPOCHS):
        assert ranks[0][epoch].any()
        for got in ranks:
            torch.testing.assert_close(got[epoch], single[epoch], atol=1e-6, rtol=1e-6)
    before = ranks[0][EPOCHS - 1][0]
    mean_p = sum(torch.softmax(rank_logits(rank)[0], dim=0) for rank in range(2)) / 2  # within the clamp
    torch.testing.assert_close(ranks[0][EPOCHS][0], 0.7 * before + 0.3 * mean_p)
    assert torch.equal(ranks[0][EPOCHS], ranks[1][EPOCHS])


def test_trains_from_the_command_line(tmp_path):
    assert main(["train", "--epochs", "2", "--train-subset", "200", "--method", "elr", "--out",
                 str(tmp_path / "run")]) == 0
    state = load_checkpoint(tmp_path / "run" / "last.pt", keys=("loss",))["loss"]
    assert state["targets"].shape == (200, 10) and state["targets"].sum(dim=1).min() > 0
