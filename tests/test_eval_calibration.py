"""`olsmooth eval` with temperature scaling (fitted on the validation split or on a test fraction, never on the
reported samples), its outputs, and shift consistency against translation-invariant and one-pixel models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from olsmooth.analysis.shift import default_max_shift, draw_offsets, roll_images, shift_agreement, shift_consistency
from olsmooth.cli import main
from olsmooth.data import build_datasets, dataset_labels, stratified_subset
from olsmooth.engine.inference import evaluate_calibrated, model_from_checkpoint
from olsmooth.runs.checkpoints import load_checkpoint

QUICK = ["--epochs", "2", "--train-subset", "300"]


def fails_with(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def eval_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def scipy_temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL-minimising temperature by scipy's bounded search on log T (an oracle independent of ours)."""
    logits = log_probs.double()
    found = minimize_scalar(lambda u: float(F.cross_entropy(logits / math.exp(u), labels)), bounds=(-5, 5),
                            method="bounded", options={"xatol": 1e-9})
    return math.exp(found.x)


def grid_temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL-minimising temperature among 4,001 log-spaced values in [0.05, 20]: a brute-force oracle that shares
    no code with ours (nor an optimiser with `scipy_temperature`)."""
    grid = torch.logspace(math.log10(0.05), math.log10(20.0), 4001, dtype=torch.float64)
    logits = log_probs.double()
    nll = torch.stack([F.cross_entropy(logits / t, labels) for t in grid])
    return float(grid[int(nll.argmin())])


def log_probs_of(checkpoint: Path, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's log-softmax and labels over a dataset, one sample at a time."""
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    with torch.no_grad():
        rows = [torch.log_softmax(model(dataset[i][0].unsqueeze(0)), 1)[0] for i in range(len(dataset))]
    return torch.stack(rows), torch.as_tensor(dataset_labels(dataset))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", *QUICK, "--out", str(root / "plain")]) == 0
    assert main(["train", *QUICK, "--val-fraction", "0.2", "--out", str(root / "val")]) == 0
    return {"plain": root / "plain", "val": root / "val"}


# -- where the temperature is fitted ---------------------------------------------------------------------------------
def test_run_with_validation_split_fits_on_it_and_reports_the_whole_test_set(runs, capsys):
    val_indices = np.load(runs["val"] / "val_indices.npy")
    test = build_datasets("digits").test
    for checkpoint in ("best.pt", "last.pt"):  # best.pt's indices come from val_indices.npy, last.pt holds them
        result = eval_json(capsys, "--checkpoint", str(runs["val"] / checkpoint))
        assert result["calibration_data"] == f"validation split ({len(val_indices)} samples)"
        assert result["samples"] == len(test)
    # the validation split: held-out training samples with evaluation transforms
    val = torch.utils.data.Subset(build_datasets("digits", augment="none").train, val_indices.tolist())
    log_probs, labels = log_probs_of(runs["val"] / "last.pt", val)
    assert result["temperature"] == pytest.approx(scipy_temperature(log_probs, labels), rel=1e-4)
    test_log_probs, test_labels = log_probs_of(runs["val"] / "last.pt", test)
    assert result["top1"] == pytest.approx(100 * (test_log_probs.argmax(1) == test_labels).double().mean().item())


def test_run_without_validation_split_reports_unscaled_figures_on_the_whole_test_set_and_scaled_on_the_rest(
        runs, capsys, tmp_path):
    npz = tmp_path / "pred.npz"
    result = eval_json(capsys, "--checkpoint", str(runs["plain"] / "last.pt"), "--save-predictions", str(npz))
    test = build_datasets("digits").test
    n, held = len(test), round(0.5 * len(test))
    assert result["samples"] == n and result["samples_ts"] == n - held
    assert result["calibration_data"] == (f"test fraction 0.5 ({held} samples, seed 0); scaled figures on the other "
                                          f"{n - held}")
    log_probs, labels = log_probs_of(runs["plain"] / "last.pt", test)
    # unscaled: the whole test set, hence the figures training logged for its last epoch
    logged = json.loads((runs["plain"] / "metrics.jsonl").read_text().splitlines()[-1])
    whole_top1 = 100 * (log_probs.argmax(1) == labels).double().mean().item()
    assert result["top1"] == pytest.approx(whole_top1) == pytest.approx(logged["top1"])
    assert result["nll"] == pytest.approx(F.nll_loss(log_probs.double(), labels).item(), rel=1e-5)
    assert result["nll"] == pytest.approx(logged["nll"], rel=1e-5)
    # scaled: the samples T was not fitted on, with T fitted on the others
    calibration = stratified_subset(dataset_labels(test), held, 0)
    rest = np.setdiff1d(np.arange(n), calibration)
    T = scipy_temperature(log_probs[calibration], labels[calibration])
    assert result["temperature"] == pytest.approx(T, rel=1e-4)
    scaled_nll = F.cross_entropy(log_probs[rest].double() / T, labels[rest]).item()
    assert result["nll_ts"] == pytest.approx(scaled_nll, rel=1e-4)
    saved = np.load(npz)
    assert saved["probs"].shape == (n, 10) and saved["probs_ts"].shape == (n - held, 10)
    np.testing.assert_array_equal(saved["indices_ts"], rest)
    np.testing.assert_array_equal(saved["labels"], labels.numpy())
    np.testing.assert_allclose(saved["probs"], log_probs.exp().numpy(), atol=1e-5)
    other = eval_json(capsys, "--checkpoint", str(runs["plain"]), "--calibration-data", "test-fraction:0.3",
                      "--seed", "5")
    assert other["samples_ts"] == n - round(0.3 * n) and "seed 5" in other["calibration_data"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(runs["plain"] / "last.pt")]) == 0
    table = capsys.readouterr().out
    assert f"on {n} test samples" in table and table.rstrip().endswith(str(n - held))


def test_keys_and_calibration_none(runs, capsys):
    result = eval_json(capsys, "--checkpoint", str(runs["val"]))
    scaled = {f"{k}_ts" for k in ("nll", "ece", "adaptive_ece", "mce", "classwise_ece", "brier")}
    plain = {"top1", "top5", "nll", "ece", "adaptive_ece", "mce", "classwise_ece", "brier"}
    assert set(result) == plain | scaled | {"temperature", "samples", "samples_ts", "calibration_data"}
    # the reported scaled NLL is the test NLL at the temperature a brute-force grid fits on the validation split
    val = torch.utils.data.Subset(build_datasets("digits", augment="none").train,
                                  np.load(runs["val"] / "val_indices.npy").tolist())
    T = grid_temperature(*log_probs_of(runs["val"] / "best.pt", val))
    test_log_probs, test_labels = log_probs_of(runs["val"] / "best.pt", build_datasets("digits").test)
    assert result["nll_ts"] == pytest.approx(F.cross_entropy(test_log_probs.double() / T, test_labels).item(),
                                             abs=1e-3)
    unscaled = eval_json(capsys, "--checkpoint", str(runs["plain"]), "--calibration-data", "none")
    assert set(unscaled) == plain | {"samples", "calibration_data"} and unscaled["calibration_data"] == "none"
    assert unscaled["samples"] == len(build_datasets("digits").test)


def test_ensemble_fits_on_the_log_of_its_averaged_probabilities(runs):
    last = runs["val"] / "last.pt"
    single = evaluate_calibrated([last])
    twice = evaluate_calibrated([last, last])  # the log of the mean of two equal softmaxes is the log-softmax
    assert twice.metrics == pytest.approx(single.metrics)


def test_bad_calibration_input_is_one_line(runs, capsys, tmp_path):
    fails_with(capsys, ["eval", "--checkpoint", str(runs["plain"]), "--calibration-data", "validation"],
               "without a validation split")
    for spec in ("test-fraction:1.5", "test-fraction:x", "test-fraction:0", "train"):
        fails_with(capsys, ["eval", "--checkpoint", str(runs["plain"]), "--calibration-data", spec],
                   "--calibration-data")
    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes((runs["plain"] / "last.pt").read_bytes())
    fails_with(capsys, ["eval", "--checkpoint", str(lonely), "--save-to-run"], "not a run folder")
    assert not (tmp_path / "results").exists()
    moved = tmp_path / "best.pt"  # trained with a validation split, but copied away from its val_indices.npy
    moved.write_bytes((runs["val"] / "best.pt").read_bytes())
    fails_with(capsys, ["eval", "--checkpoint", str(moved)], "val_indices.npy")


def test_outputs_written_to_the_run_and_the_reliability_folder(runs, capsys, tmp_path):
    result = eval_json(capsys, "--checkpoint", str(runs["val"] / "last.pt"), "--save-to-run",
                       "--reliability", str(tmp_path / "figures"))
    saved = json.loads((runs["val"] / "results" / "eval-last.json").read_text())
    assert saved["command"] == "eval" and Path(saved["checkpoint"]) == (runs["val"] / "last.pt").resolve()
    assert {k: saved[k] for k in result} == result
    for name in ("last-reliability.png", "last-reliability-ts.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (runs["val"] / "results").iterdir() if p.name.endswith(".tmp")]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(runs["val"] / "last.pt"), "--shift-consistency"]) == 0
    out = capsys.readouterr().out
    assert "after T =" in out and "shift consistency" in out and "validation split" in out


def test_plot_reliability_reads_saved_predictions(runs, tmp_path):
    from olsmooth.analysis import plot_reliability
    npz = tmp_path / "p.npz"
    assert main(["eval", "--checkpoint", str(runs["val"]), "--save-predictions", str(npz)]) == 0
    data = np.load(npz)
    assert plot_reliability(data["probs_ts"], data["labels"], tmp_path / "r.png") == tmp_path / "r.png"


# -- shift consistency -------------------------------------------------------------------------------------------------
def test_roll_images_matches_torch_roll_per_image():
    images = torch.randn(5, 3, 7, 9)
    offsets = torch.tensor([[0, 0], [1, 2], [6, 8], [3, 0], [0, 5]])
    expected = torch.stack([torch.roll(x, shifts=(int(dy), int(dx)), dims=(1, 2)) for x, (dy, dx) in
                            zip(images, offsets)])
    torch.testing.assert_close(roll_images(images, offsets), expected, rtol=0, atol=0)


def test_default_max_shift_scales_with_the_image_side():
    assert [default_max_shift(s, s) for s in (8, 28, 32, 64, 224)] == [1, 4, 4, 8, 28]
    assert default_max_shift(32, 96) == 4


def test_offsets_are_seeded_and_in_range():
    offsets = draw_offsets(1000, 3, seed=7)
    assert offsets.shape == (1000, 2, 2) and offsets.min() == 0 and offsets.max() == 3
    assert torch.equal(offsets, draw_offsets(1000, 3, seed=7)) and not torch.equal(offsets, draw_offsets(1000, 3, 8))


class MeanOfConv(nn.Module):
    """A circular convolution, then a global average pool: invariant to circular shifts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def corner_pixel(x: torch.Tensor) -> torch.Tensor:
    """Class 0 when the top-left pixel is bright, else class 1."""
    return torch.stack([x[:, 0, 0, 0], torch.full_like(x[:, 0, 0, 0], 0.5)], dim=1)


def test_translation_invariant_model_is_fully_consistent():
    torch.manual_seed(0)
    images = torch.randn(200, 1, 8, 8)
    assert shift_consistency(MeanOfConv().eval(), images, max_shift=3) == 100.0
    weights = torch.tensor([[1.0, -1.0, 0.1]])
    pooled = shift_consistency(lambda x: x.mean(dim=(2, 3)) @ weights, images, max_shift=3)  # varies with the image
    assert pooled == 100.0


def test_one_pixel_model_agrees_as_computed_by_hand():
    image = torch.zeros(1, 1, 6, 6)
    image[0, 0, 0, 0] = 1.0  # the top-left pixel stays bright only under the shift (0, 0)
    # explicit offsets: views (0,0)/(0,0) agree, (0,0)/(1,0) disagree, (0,1)/(1,1) agree (both dark)
    offsets = torch.tensor([[[0, 0], [0, 0]], [[0, 0], [1, 0]], [[0, 1], [1, 1]]])
    assert shift_agreement(corner_pixel, image.expand(3, -1, -1, -1), offsets).tolist() == [True, False, True]
    # random shifts of 0..P per axis: bright with probability q = 1 / (P + 1)^2, agreement q^2 + (1 - q)^2
    many = image.expand(40000, -1, -1, -1)
    for max_shift, expected in ((1, 100 * (1 / 16 + 9 / 16)), (2, 100 * (1 / 81 + 64 / 81))):
        assert shift_consistency(corner_pixel, many, max_shift=max_shift, seed=1) == pytest.approx(expected, abs=1.0)


def test_eval_reports_shift_consistency(runs, capsys):
    result = eval_json(capsys, "--checkpoint", str(runs["plain"]), "--shift-consistency", "--calibration-data",
                       "none")
    assert result["max_shift"] == 1 and 0 <= result["shift_consistency"] <= 100
    zero = eval_json(capsys, "--checkpoint", str(runs["plain"]), "--shift-consistency", "--max-shift", "0",
                     "--calibration-data", "none")
    assert zero["shift_consistency"] == 100.0  # no shift: both views are the image
    fails_with(capsys, ["eval", "--checkpoint", str(runs["plain"]), "--shift-consistency", "--max-shift", "-1"],
               "--max-shift")
