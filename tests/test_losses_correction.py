"""Forward and backward loss correction, the anchor-point estimator and the matrix reader, against hand-worked
cases, the authors' formulas written in numpy and a per-class loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from olsmooth.errors import UserInputError
from olsmooth.losses import (
    BackwardCorrection,
    ForwardCorrection,
    backward_corrected_loss,
    build_loss,
    estimate_transition,
    forward_corrected_loss,
    read_transition,
)

T2 = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
# p = (0.5, 0.5) with noisy label 1, and p = (0.75, 0.25) with noisy label 0
Z2 = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
Y2 = torch.tensor([1, 0])


def random_transition(K: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    T = torch.rand(K, K, generator=g) + 3.0 * torch.eye(K)
    return T / T.sum(dim=1, keepdim=True)


def keras_loss(name: str, y_true: np.ndarray, y_pred: np.ndarray, P: np.ndarray) -> float:
    """The authors' Keras `robust` losses (loss.py) in numpy, averaged over the batch."""
    eps = 1e-7
    y_pred = y_pred / y_pred.sum(axis=-1, keepdims=True)
    y_pred = np.clip(y_pred, eps, 1.0 - eps)
    if name == "forward":
        per_sample = -np.sum(y_true * np.log(y_pred @ P), axis=-1)
    else:
        per_sample = -np.sum((y_true @ np.linalg.inv(P)) * np.log(y_pred), axis=-1)
    return float(per_sample.mean())


# -- forward correction ---------------------------------------------------------------------------------------
def test_forward_hand_worked_value_and_gradient():
    z = Z2.clone().requires_grad_(True)
    loss = forward_corrected_loss(z, Y2, T2)
    # p T = (0.55, 0.45) and (0.675, 0.325)
    assert loss.item() == pytest.approx(-(math.log(0.45) + math.log(0.675)) / 2, rel=1e-6)
    loss.backward()
    # d/dz_k -log (pT)_y = -p_k (T[k, y] - (pT)_y) / (pT)_y, halved by the batch mean
    g0 = [-0.5 * (0.2 - 0.45) / 0.45 / 2, -0.5 * (0.7 - 0.45) / 0.45 / 2]
    g1 = [-0.75 * (0.8 - 0.675) / 0.675 / 2, -0.25 * (0.3 - 0.675) / 0.675 / 2]
    torch.testing.assert_close(z.grad, torch.tensor([g0, g1]), atol=1e-6, rtol=1e-5)


def test_forward_with_identity_is_cross_entropy():
    torch.manual_seed(0)
    z, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert forward_corrected_loss(z, y, torch.eye(4)).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_matches_the_authors_keras_formula_including_clipping(name):
    torch.manual_seed(1)
    K = 5
    z = torch.randn(16, K) * 3
    z[0, 2] = 40.0  # softmax saturates: the 1e-7 clip decides the loss
    z[1, 0] = -40.0
    y = torch.randint(0, K, (16,))
    y[0] = 0
    T = random_transition(K, 1)
    loss = build_loss(name, K)
    loss.set_transition(T)
    expected = keras_loss(name, F.one_hot(y, K).double().numpy(), torch.softmax(z.double(), 1).numpy(),
                          T.double().numpy())
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_dense_targets_are_the_mixture_of_the_label_losses(name):
    torch.manual_seed(2)
    K, lam = 4, 0.3
    z, a, b = torch.randn(5, K), torch.randint(0, K, (5,)), torch.randint(0, K, (5,))
    fn = forward_corrected_loss if name == "forward" else backward_corrected_loss
    M = random_transition(K, 2)
    M = M if name == "forward" else torch.linalg.inv(M)
    dense = lam * F.one_hot(a, K).float() + (1 - lam) * F.one_hot(b, K).float()
    mixed = lam * fn(z, a, M) + (1 - lam) * fn(z, b, M)
    assert fn(z, dense, M).item() == pytest.approx(mixed.item(), rel=1e-5)


@pytest.mark.parametrize("fn", [forward_corrected_loss, backward_corrected_loss])
def test_gradcheck_float64(fn):
    torch.manual_seed(3)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 2])
    M = random_transition(3, 3).double()
    assert torch.autograd.gradcheck(lambda logits: fn(logits, y, M), (z,))


def test_float32_under_autocast():
    z = torch.randn(4, 3).bfloat16()
    loss = ForwardCorrection(3)
    loss.set_transition(random_transition(3, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(z, torch.tensor([0, 1, 2, 0])).dtype == torch.float32


# -- backward correction --------------------------------------------------------------------------------------
def test_backward_hand_worked_value_and_gradient():
    # T2^-1 = [[1.4, -0.4], [-0.6, 1.6]]
    z = Z2.clone().requires_grad_(True)
    loss = backward_corrected_loss(z, Y2, torch.linalg.inv(T2))
    first = -(-0.6 * math.log(0.5) + 1.6 * math.log(0.5))
    second = -(1.4 * math.log(0.75) - 0.4 * math.log(0.25))
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-5)
    loss.backward()
    # rows of T^-1 sum to 1, so the gradient of -sum_k w_k log p_k is p - w
    expected = torch.tensor([[0.5 + 0.6, 0.5 - 1.6], [0.75 - 1.4, 0.25 + 0.4]]) / 2
    torch.testing.assert_close(z.grad, expected, atol=1e-5, rtol=1e-5)


def test_backward_is_unbiased_over_the_noise():
    """sum_j T[c, j] loss(noisy label j) = the clean cross-entropy of class c (Patrini et al., Theorem 1)."""
    torch.manual_seed(5)
    K = 4
    T = random_transition(K, 5)
    z = torch.randn(1, K)
    loss = BackwardCorrection(K)
    loss.set_transition(T)
    for c in range(K):
        expected = sum(T[c, j].item() * loss(z, torch.tensor([j])).item() for j in range(K))
        assert expected == pytest.approx(F.cross_entropy(z, torch.tensor([c])).item(), rel=1e-4)


# -- the matrix: checks, state and options --------------------------------------------------------------------
@pytest.mark.parametrize("matrix, message", [
    (torch.eye(2), "must be 3 x 3"),
    (torch.full((3, 3), float("nan")), "NaN or inf"),
    (torch.tensor([[1.2, -0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "negative entry"),
    (torch.tensor([[0.5, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "row 0 of the transition matrix sums to 0.9"),
])
def test_set_transition_refuses_what_is_not_a_transition_matrix(matrix, message):
    with pytest.raises(ValueError, match=message):
        ForwardCorrection(3).set_transition(matrix)


def test_rows_may_be_off_by_float_error():
    T = torch.eye(3)
    T[0, 0] += 5e-5
    ForwardCorrection(3).set_transition(T)


def test_backward_refuses_a_singular_matrix_forward_takes_it():
    singular = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="singular or too ill-conditioned"):
        BackwardCorrection(3).set_transition(singular)
    ForwardCorrection(3).set_transition(singular)


@pytest.mark.parametrize("cls", [ForwardCorrection, BackwardCorrection])
def test_no_matrix_yet_is_a_clear_error(cls):
    with pytest.raises(ValueError, match="no transition matrix yet: call set_transition"):
        cls(3)(torch.zeros(2, 3), torch.tensor([0, 1]))


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_state_dict_round_trip_carries_the_matrix(name):
    torch.manual_seed(6)
    T = random_transition(3, 6)
    saved = build_loss(name, 3)
    saved.set_transition(T)
    restored = build_loss(name, 3)
    restored.load_state_dict(saved.state_dict())
    torch.testing.assert_close(restored.transition_matrix, T)
    z, y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    assert restored(z, y).item() == saved(z, y).item()
    unset = build_loss(name, 3)
    unset.load_state_dict(build_loss(name, 3).state_dict())  # an unset matrix stays unset
    assert unset.transition_matrix is None


def test_registry_options_and_attributes():
    loss = build_loss("backward", 4, transition="estimate", estimate_percentile=None)
    assert isinstance(loss, BackwardCorrection) and loss.needs_transition and not loss.needs_index
    assert loss.transition_source == "estimate" and loss.estimate_percentile is None
    assert build_loss("forward", 4).transition_source == "known"
    assert build_loss("forward", 4, transition="runs/a/noise.json").transition_source == "runs/a/noise.json"
    with pytest.raises(UserInputError, match="transition must be 'known', 'estimate' or the path"):
        build_loss("forward", 4, transition="estimated")
    with pytest.raises(UserInputError, match="estimate_percentile"):
        build_loss("forward", 4, estimate_percentile=101)


# -- the anchor-point estimator -------------------------------------------------------------------------------
def test_estimator_recovers_a_known_matrix_past_overconfident_outliers():
    """100 samples over 3 classes: per class, 3 outliers with p = onehot (the top 3% the filter drops), one sample
    whose clean posterior is exactly its class (noisy posterior = the row of T), and blurred ones."""
    T = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.15, 0.6]])
    rows = []
    for c in range(3):
        rows += [F.one_hot(torch.tensor(c), 3).float()] * 3
        rows.append(T[c])
    g = torch.Generator().manual_seed(7)
    for _ in range(100 - len(rows)):
        clean = torch.softmax(torch.randn(3, generator=g), dim=0)  # never a pure class: p(i|x) < T[i, i]
        rows.append(clean @ T)
    probs = torch.stack(rows)[torch.randperm(100, generator=g)]
    torch.testing.assert_close(estimate_transition(probs), T)
    # without the filter the outliers are the anchors
    torch.testing.assert_close(estimate_transition(probs, percentile=None), torch.eye(3))


def naive_estimate(probs: np.ndarray, percentile: float | None) -> np.ndarray:
    """The authors' NoiseEstimator.fit/predict as a loop over classes (reading each anchor's unmodified row)."""
    K = probs.shape[1]
    T = np.empty((K, K))
    for i in range(K):
        column = probs[:, i].copy()
        if percentile is None:
            best = int(np.argmax(column))
        else:
            threshold = np.percentile(column, percentile, method="higher")
            column[column >= threshold] = 0.0
            best = int(np.argmax(column))
        T[i] = probs[best]
    return T / T.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n, percentile", [(257, 97.0), (50, 97.0), (1000, 97.0), (31, 50.0), (64, 0.0),
                                           (64, 100.0), (200, None)])
def test_estimator_matches_a_per_class_loop(n, percentile):
    rng = np.random.default_rng(n)
    probs = rng.dirichlet(np.full(6, 0.3), size=n)
    probs[: n // 3] = np.round(probs[: n // 3], 2)  # ties at and around the threshold
    probs[: n // 3] /= probs[: n // 3].sum(axis=1, keepdims=True)
    got = estimate_transition(torch.from_numpy(probs).float(), percentile=percentile)
    expected = naive_estimate(probs.astype(np.float32).astype(np.float64), percentile)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_estimator_refuses_bad_input():
    with pytest.raises(ValueError, match="samples, classes"):
        estimate_transition(torch.ones(5))
    with pytest.raises(ValueError, match="finite and non-negative"):
        estimate_transition(torch.tensor([[0.5, float("nan")]]))


# -- the file reader ------------------------------------------------------------------------------------------
def test_read_transition_formats(tmp_path):
    T = random_transition(3, 8)
    np.save(tmp_path / "t.npy", T.double().numpy())
    (tmp_path / "rows.json").write_text(json.dumps(T.tolist()))
    (tmp_path / "noise.json").write_text(json.dumps({"kind": "symmetric", "rate": 0.2, "transition": T.tolist()}))
    for name in ("t.npy", "rows.json", "noise.json"):
        got = read_transition(tmp_path / name, 3)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, T)



def test_read_transition_builds_the_matrix_of_a_sparse_noise_json(tmp_path):
    # pairs (clean, noisy, fraction) of a hand-worked 3-class matrix; class 2 has none, so its row is the identity
    sparse = {"classes": 3, "clean": [0, 0, 1], "noisy": [0, 2, 1], "fraction": [0.75, 0.25, 1.0]}
    (tmp_path / "noise.json").write_text(json.dumps({"kind": "symmetric", "transition_sparse": sparse}))
    torch.testing.assert_close(read_transition(tmp_path / "noise.json", 3),
                               torch.tensor([[0.75, 0.0, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    huge = {"classes": 100_000, "clean": [5], "noisy": [6], "fraction": [1.0]}
    (tmp_path / "huge.json").write_text(json.dumps({"transition_sparse": huge}))
    with pytest.raises(UserInputError, match="huge.json: a dense 100,000 x 100,000 transition matrix would take") as e:
        read_transition(tmp_path / "huge.json", 100_000)
    assert "\n" not in str(e.value)
    (tmp_path / "bad.json").write_text(json.dumps({"transition_sparse": {"classes": 3, "clean": [0, 3]}}))
    with pytest.raises(UserInputError, match="bad.json: transition_sparse must hold"):
        read_transition(tmp_path / "bad.json", 3)

@pytest.mark.parametrize("name, content, message", [
    ("missing.npy", None, "cannot read"),
    ("t.txt", "1", "must end in .npy or .json"),
    ("bad.json", "{not json", "not valid JSON"),
    ("obj.json", '{"rows": []}', "under 'transition'"),
    ("ragged.json", "[[1, 0], [1]]", "not a 3 x 3 matrix of numbers"),
    ("words.json", '[["a", "b"], ["c", "d"]]', "not a 3 x 3 matrix of numbers"),
    ("small.json", "[[1, 0], [0, 1]]", "must be 3 x 3"),
    ("sums.json", "[[1, 1, 0], [0, 1, 0], [0, 0, 1]]", "sums to 2"),
])
def test_read_transition_errors_are_one_line_and_name_the_file(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(UserInputError, match=message) as err:
        read_transition(tmp_path / name, 3)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_read_transition_refuses_pickled_npy(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserInputError, match="obj.npy"):
        read_transition(tmp_path / "obj.npy", 3)
