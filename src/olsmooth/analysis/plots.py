"""Figures: soft-label heatmaps, reliability diagrams and per-epoch curves (Agg, no display needed).

matplotlib is imported inside each function, so importing olsmooth.analysis keeps the trainer's start-up fast.
Figures are built on `matplotlib.figure.Figure` directly (no pyplot), which leaves global state alone.
Each function writes the file atomically and returns its path, or returns the Figure when path is None.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserInputError
from ..fileio import atomic_write_file
from .calibration import MetricAccumulator

if TYPE_CHECKING:
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

PathLike = Union[str, os.PathLike]
MAX_NAMED_TICKS = 30
"""Up to this many classes every tick is labelled; beyond it about ten ticks are shown."""
MAX_ANNOTATED = 12
"""Up to this many classes each cell of the soft-label heatmap shows its value."""
DPI = 120
FALLBACK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN")
"""Installed typefaces tried, in order, for class names the default font lacks (printed Chinese characters)."""


def _finish(fig: Figure, path: PathLike | None) -> Figure | Path:
    """Return the figure, or write it atomically (`atomic_write_file`, parent created) and return the path."""
    if path is None:
        return fig
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    atomic_write_file(path, lambda handle: fig.savefig(handle, format=kind, dpi=DPI, bbox_inches="tight"))
    return path


def _as_tensor(values: Tensor | np.ndarray) -> Tensor:
    """A tensor view of a tensor or of an array (what `--save-predictions` writes: numpy probs and labels)."""
    return values if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))


def _as_matrix(matrix: Tensor | np.ndarray) -> np.ndarray:
    """A finite, square, 2-D float64 numpy copy of the matrix, or UserInputError."""
    array = matrix.detach().cpu().double().numpy() if isinstance(matrix, Tensor) else np.asarray(matrix, float)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise UserInputError(f"soft-label matrix must be square (K, K), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise UserInputError("soft-label matrix contains NaN or inf")
    return array


def _color_norm(array: np.ndarray, scale: str, gamma: float) -> Normalize:
    """A matplotlib norm that lets the small off-diagonal mass show next to the dominant diagonal."""
    from matplotlib import colors

    vmax = float(array.max()) if array.max() > 0 else 1.0
    if scale == "linear":
        return colors.Normalize(vmin=min(0.0, float(array.min())), vmax=vmax)
    if array.min() < 0:
        raise UserInputError(f"scale={scale!r} needs non-negative values; use scale='linear'")
    if scale == "power":
        return colors.PowerNorm(gamma=gamma, vmin=0.0, vmax=vmax)
    if scale == "log":
        positive = array[array > 0]
        vmin = max(float(positive.min()) if positive.size else vmax, vmax * 1e-4)
        return colors.LogNorm(vmin=min(vmin, vmax / 10), vmax=vmax, clip=True)
    raise UserInputError(f"unknown scale {scale!r}; choose 'power', 'log' or 'linear'")


def installed_fonts() -> set[str]:
    """The family names matplotlib found on this machine."""
    from matplotlib import font_manager

    return {font.name for font in font_manager.fontManager.ttflist}


def label_families(labels: Sequence[str]) -> list[str] | None:
    """For labels beyond ASCII, the default family followed by the installed FALLBACK_FONTS, so that matplotlib
    draws characters its default font lacks from the first of them installed; None (the default) otherwise."""
    if "".join(labels).isascii():
        return None
    installed = installed_fonts()
    fallbacks = [name for name in FALLBACK_FONTS if name in installed]
    return ["sans-serif", fallbacks[0]] if fallbacks else None


def _class_ticks(ax, names: Sequence[str]) -> None:
    """Label every class up to MAX_NAMED_TICKS, otherwise about ten evenly spaced ones (names in scripts the
    default font lacks drawn from an installed fallback, `label_families`)."""
    k = len(names)
    step = 1 if k <= MAX_NAMED_TICKS else max(1, math.ceil(k / 10))
    positions = list(range(0, k, step))
    labels = [names[i] for i in positions]
    family = label_families(labels)
    ax.set_xticks(positions, labels, rotation=90 if k <= MAX_NAMED_TICKS else 0, fontsize="small", family=family)
    ax.set_yticks(positions, labels, fontsize="small", family=family)


def plot_soft_labels(
    matrix: Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    path: PathLike | None = None,
    title: str | None = None,
    scale: str = "power",
    gamma: float = 0.5,
) -> Figure | Path:
    """Heatmap of a K×K soft-label matrix (row c = soft label of class c); scale 'power'|'log'|'linear'."""
    from matplotlib.figure import Figure

    array = _as_matrix(matrix)
    k = array.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise UserInputError(f"got {len(names)} class names for a {k}×{k} matrix")
    norm = _color_norm(array, scale, gamma)
    side = min(14.0, max(5.0, 3.0 + 0.3 * k))
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(array, cmap="viridis", norm=norm, interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax, label=f"probability ({scale} scale)", fraction=0.046, pad=0.04)
    _class_ticks(ax, names)
    ax.set_xlabel("soft label over classes")
    ax.set_ylabel("true class")
    ax.set_title(title or f"Soft labels ({k} classes)")
    if k <= MAX_ANNOTATED:
        shade = norm(array)
        for (row, col), value in np.ndenumerate(array):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                    color="black" if shade[row, col] > 0.6 else "white")
    return _finish(fig, path)


def plot_reliability(
    probs: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    path: PathLike | None,
    n_bins: int = 15,
    title: str | None = None,
) -> Figure | Path:
    """Reliability diagram of probabilities (N, K) and labels (N,), tensors or numpy arrays: accuracy per
    confidence bin against the diagonal, ECE in the title, counts below."""
    acc = MetricAccumulator(n_bins, from_logits=False)
    acc.update(_as_tensor(probs), _as_tensor(labels))
    return plot_reliability_of(acc, path, title)


def plot_reliability_of(acc: MetricAccumulator, path: PathLike | None, title: str | None = None) -> Figure | Path:
    """The reliability diagram of `plot_reliability` from an accumulator's summed statistics (its confidence bins),
    as streamed evaluation keeps them instead of the N x K probabilities."""
    from matplotlib.figure import Figure

    bins, ece = acc.reliability_bins(), acc.compute()["ece"]
    edges, filled = bins["edges"], bins["count"] > 0
    width = np.diff(edges)
    fig = Figure(figsize=(5.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(edges[:-1][filled], bins["accuracy"][filled], width=width[filled], align="edge",
            color="tab:blue", edgecolor="black", label="accuracy")
    gap = bins["confidence"][filled] - bins["accuracy"][filled]
    top.bar(edges[:-1][filled], gap, bottom=bins["accuracy"][filled], width=width[filled], align="edge",
            color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title or 'Reliability'}: ECE {ece:.2f}%")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], bins["count"], width=width, align="edge", color="gray", edgecolor="black")
    bottom.set(xlabel="confidence (max probability)", ylabel="samples")
    return _finish(fig, path)


def _runs(values: Sequence[float] | Sequence[Sequence[float]] | Mapping[int, Sequence[float]]) -> np.ndarray:
    """One row per run, shorter runs padded with NaN: a plain list is one run, a list or dict of lists many."""
    runs = list(values.values()) if isinstance(values, Mapping) else list(values)
    if runs and np.ndim(runs[0]) == 0:
        runs = [runs]
    if not runs or not any(len(r) for r in runs):
        raise UserInputError("a curve series is empty")
    table = np.full((len(runs), max(len(r) for r in runs)), np.nan)
    for i, run in enumerate(runs):
        table[i, : len(run)] = np.asarray(run, dtype=float)
    return table


def plot_curves(
    series: Mapping[str, Sequence[float] | Sequence[Sequence[float]] | Mapping[int, Sequence[float]]],
    path: PathLike | None,
    ylabel: str,
    xlabel: str = "epoch",
    title: str | None = None,
) -> Figure | Path:
    """One line per method over epochs 1..n; several runs (seeds) give their mean and a ±sample-std band."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not series:
        raise UserInputError("no series to plot")
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for name, values in series.items():
        table = _runs(values)
        x = np.arange(1, table.shape[1] + 1)
        present = np.isfinite(table)
        n = present.sum(axis=0)
        mean = np.nansum(table, axis=0) / np.maximum(n, 1)
        (line,) = ax.plot(x, mean, label=f"{name} (n={table.shape[0]})" if table.shape[0] > 1 else name)
        if table.shape[0] > 1:
            squares = np.where(present, (table - mean) ** 2, 0.0).sum(axis=0)
            std = np.sqrt(squares / np.maximum(n - 1, 1))
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or f"{ylabel} per {xlabel}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_memorisation(history: Sequence[Mapping[str, float]], path: PathLike | None) -> Figure | Path:
    """Per epoch, how a noisy-label run predicts its training samples whose label was corrupted: as their clean
    label, or as their noisy one (memorised); `history` holds the epochs' `noisy_fit_clean` / `noisy_fit_noisy`."""
    series = {"as their clean label": [r["noisy_fit_clean"] for r in history],
              "as their noisy label (memorised)": [r["noisy_fit_noisy"] for r in history]}
    return plot_curves(series, path, ylabel="% of corrupted training samples",
                       title="predictions on the training samples whose label was corrupted")


def _heatmap_panel(ax, array: np.ndarray, names: Sequence[str], norm: Normalize, annotate: bool):
    """One soft-label heatmap on `ax` (rows: true class), ticks as `_class_ticks` sets them; returns the image."""
    k = array.shape[0]
    image = ax.imshow(array, cmap="viridis", norm=norm, aspect="equal",
                      interpolation="nearest" if k <= 200 else "antialiased")
    _class_ticks(ax, names)
    if annotate:
        shade = norm(array)
        for (row, col), value in np.ndenumerate(array):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if shade[row, col] > 0.6 else "white")
    return image


def plot_soft_label_grid(
    matrices: Mapping[int, Tensor | np.ndarray],
    path: PathLike | None,
    class_names: Sequence[str] | None = None,
    order: Sequence[int] | np.ndarray | None = None,
    scale: str = "power",
    gamma: float = 0.5,
    title: str | None = None,
) -> Figure | Path:
    """Soft-label heatmaps of several epochs (`matrices[epoch]`) side by side on one colour scale, three to a row;
    `order` lists the classes to show (a permutation, e.g. a clustering, or a subset for a zoomed view)."""
    from matplotlib.figure import Figure

    if not matrices:
        raise UserInputError("no soft-label matrices to plot")
    arrays = {epoch: _as_matrix(m) for epoch, m in matrices.items()}
    k = next(iter(arrays.values())).shape[0]
    if any(a.shape[0] != k for a in arrays.values()):
        raise UserInputError("the soft-label matrices of one grid must have the same number of classes")
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise UserInputError(f"got {len(names)} class names for a {k}×{k} matrix")
    index = np.arange(k) if order is None else np.asarray(order, dtype=int)
    shown = {epoch: a[np.ix_(index, index)] for epoch, a in arrays.items()}
    norm = _color_norm(np.stack(list(shown.values())), scale, gamma)
    columns = min(3, len(shown))
    rows = math.ceil(len(shown) / columns)
    side = min(6.0, max(3.6, 2.0 + 0.12 * len(index)))
    fig = Figure(figsize=(columns * side + 1.0, rows * side + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for number, (ax, (epoch, array)) in enumerate(zip(axes.flat, shown.items())):
        image = _heatmap_panel(ax, array, [names[i] for i in index], norm, annotate=len(index) <= MAX_ANNOTATED)
        ax.set_title(f"after epoch {epoch}")
        if number % columns == 0:
            ax.set_ylabel("true class")
        ax.set_xlabel("soft label over classes")
    for ax in axes.flat[len(shown):]:
        ax.remove()
    fig.colorbar(image, ax=axes[:, -1].tolist() if rows > 1 else axes.ravel().tolist(),
                 label=f"probability ({scale} scale)", fraction=0.03, pad=0.02)
    shown_of = f"{len(index)} classes" if len(index) == k else f"{len(index)} of {k} classes"
    fig.suptitle(title or f"Soft labels ({shown_of})")
    return _finish(fig, path)


def plot_soft_label_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: PathLike | None,
    num_classes: int | None = None,
    title: str | None = None,
) -> Figure | Path:
    """Mean row entropy and mean diagonal mass of the soft labels over the saved epochs, one line per run;
    `curves[name]` holds "epoch", "mean_entropy" and "mean_diagonal" (as `soft_labels.epoch_curves` gives them).
    With `num_classes` the entropy of a uniform row (log K) is drawn for reference."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not curves:
        raise UserInputError("no soft-label curves to plot")
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    entropy_ax, diagonal_ax = fig.subplots(1, 2)
    for name, curve in curves.items():
        marker = "o" if len(curve["epoch"]) <= 30 else None
        entropy_ax.plot(curve["epoch"], curve["mean_entropy"], marker=marker, markersize=3, label=name)
        diagonal_ax.plot(curve["epoch"], curve["mean_diagonal"], marker=marker, markersize=3, label=name)
    if num_classes:
        entropy_ax.axhline(math.log(num_classes), linestyle="--", color="gray", label=f"uniform (log {num_classes})")
    entropy_ax.set(xlabel="epoch", ylabel="mean row entropy (nats)", title="Entropy of the soft labels")
    diagonal_ax.set(xlabel="epoch", ylabel="mean diagonal mass", ylim=(0, 1), title="Mass on the true class")
    for ax in (entropy_ax, diagonal_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if len(curves) > 1 or num_classes:
        entropy_ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)
