"""Plots write readable PNGs of the right scale, label what they should, and reject bad matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from olsmooth.analysis import plot_curves, plot_reliability, plot_soft_labels
from olsmooth.errors import UserInputError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def soft_label_matrix(k: int, seed: int = 0) -> torch.Tensor:
    """A diagonal-dominant row-stochastic matrix, like OLS produces."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(k, k, generator=g) + 6 * torch.eye(k), dim=1)


def png_size(path) -> tuple[int, int]:
    """Width and height of a PNG, after checking PIL can decode it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def tick_texts(axis) -> list[str]:
    """The tick label strings of a matplotlib axis."""
    return [t.get_text() for t in axis.get_ticklabels()]


def test_small_matrix_with_names(tmp_path):
    path = plot_soft_labels(soft_label_matrix(10), class_names=NAMES, path=tmp_path / "new" / "dir" / "s.png")
    assert path == tmp_path / "new" / "dir" / "s.png"
    width, height = png_size(path)
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind

    ax = plot_soft_labels(soft_label_matrix(10), class_names=NAMES, title="epoch 3").axes[0]
    assert tick_texts(ax.xaxis) == NAMES and tick_texts(ax.yaxis) == NAMES
    assert ax.get_xlabel() == "soft label over classes" and ax.get_ylabel() == "true class"
    assert ax.get_title() == "epoch 3"
    assert len(ax.texts) == 100  # every cell annotated


def test_large_matrix_without_names(tmp_path):
    matrix = soft_label_matrix(200).numpy()
    width, height = png_size(plot_soft_labels(matrix, path=tmp_path / "s200.png", scale="log"))
    assert 800 <= width <= 5000 and 800 <= height <= 5000
    fig = plot_soft_labels(matrix)
    ax = fig.axes[0]
    assert 5 <= len(ax.get_xticks()) <= 12 and tick_texts(ax.yaxis)[:2] == ["0", "20"]
    assert not ax.texts
    assert len(fig.axes) == 2  # heatmap and colour bar


@pytest.mark.parametrize("scale", ["power", "log", "linear"])
def test_all_zero_matrix_plots(scale):
    # paper-cifar OLS starts from an all-zero matrix
    assert plot_soft_labels(torch.zeros(4, 4), scale=scale).axes


@pytest.mark.parametrize("matrix, kwargs, message", [
    (np.ones(5), {}, "square"),
    (np.ones((3, 4)), {}, "square"),
    (np.ones((2, 2, 2)), {}, "square"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), {}, "NaN"),
    (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {}, "NaN"),
    (np.eye(3), {"class_names": ["a", "b"]}, "class names"),
    (np.eye(3), {"scale": "cubic"}, "scale"),
    (-np.eye(3), {"scale": "log"}, "non-negative"),
])
def test_invalid_matrix_raises(matrix, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        plot_soft_labels(matrix, **kwargs)


def test_reliability_diagram(tmp_path):
    probs = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.30, 0.70], [0.72, 0.28]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    width, height = png_size(plot_reliability(probs, labels, tmp_path / "r.png"))
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    top, bottom = plot_reliability(probs, labels, None, title="digits").axes
    assert top.get_title() == "digits: ECE 33.00%"  # hand-worked in test_analysis_calibration
    assert sorted(round(p.get_height()) for p in bottom.patches) == [0] * 12 + [1, 1, 2]


def test_curves_mean_and_std_band(tmp_path):
    series = {"ols": {0: [1.0, 3.0, 3.0], 1: [3.0, 7.0, 5.0]}, "ce": [2.0, 2.5, 3.0], "ls": [[1.0, 2.0], [2.0]]}
    width, _ = png_size(plot_curves(series, tmp_path / "c.png", ylabel="top-1 (%)"))
    assert 300 <= width <= 3000
    ax = plot_curves(series, None, ylabel="top-1 (%)").axes[0]
    ols, ce, ls = ax.get_lines()
    np.testing.assert_allclose(ols.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(ols.get_ydata(), [2.0, 5.0, 4.0])
    np.testing.assert_allclose(ce.get_ydata(), [2.0, 2.5, 3.0])
    np.testing.assert_allclose(ls.get_ydata(), [1.5, 2.0])  # the shorter run only counts where it exists
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    # sample std of (1, 3), (3, 7), (3, 5): sqrt(2), sqrt(8), sqrt(2)
    assert band.max() == pytest.approx(5.0 + np.sqrt(8)) and band.min() == pytest.approx(2.0 - np.sqrt(2))
    assert len(ax.collections) == 2  # bands for the two multi-run series only
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "top-1 (%)"


@pytest.mark.parametrize("series", [{}, {"ols": []}, {"ols": [[]]}])
def test_curves_reject_empty_series(series):
    with pytest.raises(UserInputError, match="series"):
        plot_curves(series, None, ylabel="top1")


def test_class_names_beyond_ascii_are_drawn_from_an_installed_fallback_font(monkeypatch):
    from olsmooth.analysis import plots

    chars = list("凡几押钾驾")
    monkeypatch.setattr(plots, "installed_fonts", lambda: {"DejaVu Sans", "WenQuanYi Zen Hei", "AR PL UMing CN"})
    ax = plot_soft_labels(soft_label_matrix(5), class_names=chars).axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        assert tick_texts(axis) == chars
        assert {tuple(t.get_fontfamily()) for t in axis.get_ticklabels()} == {("sans-serif", "WenQuanYi Zen Hei")}
    assert plots.label_families(NAMES) is None  # ASCII names keep the default
    monkeypatch.setattr(plots, "installed_fonts", lambda: {"DejaVu Sans"})
    assert plots.label_families(chars) is None  # no fallback installed: the default, as before
