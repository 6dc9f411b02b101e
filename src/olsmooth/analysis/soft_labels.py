"""What OLS learned: statistics and views of the soft-label matrices a run saved in `soft_labels/epoch-NNN.npy`
(dense) or `soft_labels/epoch-NNN.npz` (top-k rows, `SparseRows`, for many classes).

Row c of a matrix is the soft label of class c. Per class: the diagonal mass S[c, c], the entropy of the row
(nats; log K for a uniform row) and the k most similar other classes with their mass; over the epochs the mean
of both. For K above `MAX_FULL_VIEW` a full heatmap is unreadable, so `view_order` also gives the classes
sorted by diagonal, ordered by a hierarchical clustering of the rows, or the few classes of the largest
off-diagonal masses. numpy only, scipy for the clustering; nothing here reads a checkpoint (class names
nobody passes come from the run's dataset, `dataset_class_names`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import UserInputError
from ..fileio import read_array
from ..runs.reader import read_config, soft_label_files
from ..runs.writer import SoftLabelFiles

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, os.PathLike]
MAX_FULL_VIEW = 30
"""Up to this many classes the full heatmap in class order reads well; beyond it `view="auto"` clusters."""
VIEWS = ("auto", "full", "sorted", "clustered", "top")
SAVED_EVERY_EPOCH_MAX_K = 200
"""A run saves the matrix every epoch up to this K, else at snapshots and at the end only; heatmaps of all classes
up to this K, of the classes of the largest off-diagonal masses beyond it."""
SAVED_DENSE_MAX_K = 2048
"""Saved as a dense .npy up to this K (16 MiB), as top-k rows in a .npz beyond it."""
SAVED_TOP = 32
"""Entries per row kept when a dense matrix beyond that K is saved as top-k rows."""


@dataclass(frozen=True)
class SparseRows:
    """A soft-label matrix in top-k form: row c is value[c] at columns index[c] (-1 marks an unused slot) and
    residual[c] spread evenly over the row's other classes (as top-k OLS holds it)."""

    index: np.ndarray
    value: np.ndarray
    residual: np.ndarray

    @classmethod
    def from_dense(cls, matrix: np.ndarray, top: int) -> SparseRows:
        """Each row's `top` largest entries and the rest of its mass (exact for top >= K)."""
        top = min(top, matrix.shape[1])
        index = np.argsort(-matrix, axis=1, kind="stable")[:, :top]
        value = np.take_along_axis(matrix, index, axis=1)
        return cls(index, value, matrix.sum(axis=1) - value.sum(axis=1))

    @property
    def num_classes(self) -> int:
        return self.index.shape[0]

    def level(self) -> np.ndarray:
        """Each row's value on the classes it does not keep."""
        others = self.num_classes - (self.index >= 0).sum(axis=1)
        return np.where(others > 0, self.residual / np.maximum(others, 1), 0.0)

    def diagonal(self) -> np.ndarray:
        own = self.index == np.arange(self.num_classes)[:, None]
        return np.where(own.any(axis=1), (self.value * own).sum(axis=1), self.level())

    def entropy(self) -> np.ndarray:
        """Row entropies in nats (rows divided by their sums), exactly: kept entries plus the even rest."""
        sums = self.value.sum(axis=1) + self.residual
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(self.index >= 0, self.value, 0.0) / sums[:, None]
            u = self.level() / sums
            kept = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
            others = self.num_classes - (self.index >= 0).sum(axis=1)
            rest = np.where(u > 0, -others * u * np.log(np.where(u > 0, u, 1.0)), 0.0)
        entropy = kept + rest
        entropy[sums <= 0] = np.nan
        return entropy

    def similar(self, k: int) -> list[list[tuple[int, float]]]:
        """Per row, its up to k largest kept entries on other classes (class, mass), largest first, ties by the
        lower class; classes at the even level are not listed."""
        off = np.where((self.index >= 0) & (self.index != np.arange(self.num_classes)[:, None]), self.value, -np.inf)
        order = np.lexsort((self.index, -off), axis=1)[:, :k] if off.size else np.zeros((self.num_classes, 0), int)
        return [[(int(self.index[c, j]), float(self.value[c, j])) for j in order[c] if off[c, j] > -np.inf]
                for c in range(self.num_classes)]

    def block(self, classes: np.ndarray) -> np.ndarray:
        """The dense sub-matrix S[classes][:, classes]."""
        out = np.repeat(self.level()[classes][:, None], len(classes), axis=1)
        position = {int(c): i for i, c in enumerate(classes)}
        for i, c in enumerate(classes):
            for col, v in zip(self.index[c], self.value[c]):
                if int(col) in position:
                    out[i, position[int(col)]] = v
        return out

    def top_classes(self, limit: int = MAX_FULL_VIEW) -> np.ndarray:
        """Up to `limit` classes: both classes of each kept off-diagonal entry in decreasing mass, as met."""
        rows = np.repeat(np.arange(self.num_classes), self.index.shape[1])
        cols, vals = self.index.ravel(), self.value.ravel()
        chosen: dict[int, None] = {}
        for at in np.argsort(-np.where((cols >= 0) & (cols != rows), vals, -np.inf), kind="stable"):
            if cols[at] < 0 or cols[at] == rows[at] or len(chosen) >= limit:
                break
            for c in (int(rows[at]), int(cols[at])):
                if len(chosen) < limit:
                    chosen.setdefault(c)
        return np.array(list(chosen) or list(range(min(limit, self.num_classes))))


SoftLabels = Union[np.ndarray, SparseRows]


def epoch_soft_labels(soft: np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray], class_names: Sequence[str],
                      epoch: int, keep: bool) -> SoftLabelFiles | None:
    """What a run saves of a loss's matrix (dense, or top-k rows as (index, value, residual)) after `epoch`: every
    epoch for K <= 200, else only where `keep` (snapshots and the end), None otherwise. A dense .npy up to K = 2048,
    else top-k rows in a .npz (a dense matrix keeps its 32 largest entries per row there); a heatmap of every class
    (and a TensorBoard image) up to K = 200, else of the classes of the largest off-diagonal masses."""
    from .plots import plot_soft_labels

    rows = SparseRows(*soft) if isinstance(soft, tuple) else None
    K = soft.shape[0] if rows is None else rows.num_classes
    if not (K <= SAVED_EVERY_EPOCH_MAX_K or keep):
        return None
    title = f"OLS soft labels after epoch {epoch}"
    if K <= SAVED_DENSE_MAX_K:
        saved = {"matrix": soft if rows is None else rows.block(np.arange(K)).astype(np.float32)}
    else:
        rows = rows or SparseRows.from_dense(soft, SAVED_TOP)
        saved = {"rows": {"index": rows.index.astype(np.int32), "value": rows.value.astype(np.float32),
                          "residual": rows.residual.astype(np.float32)}}
    if K <= SAVED_EVERY_EPOCH_MAX_K:
        matrix = soft if rows is None else rows.block(np.arange(K))
        names = list(class_names) if K <= MAX_FULL_VIEW else None
        return SoftLabelFiles(**saved, draw=lambda path: plot_soft_labels(matrix, names, path, title),
                              image=(matrix / max(float(matrix.max()), 1e-12))[None])
    rows = rows or SparseRows.from_dense(soft, SAVED_TOP)
    shown = rows.top_classes()
    return SoftLabelFiles(**saved, draw=lambda path: plot_soft_labels(
        rows.block(shown), [class_names[c] for c in shown], path,
        f"{title}: {len(shown)} of {K} classes (largest off-diagonal masses)"))


def load_matrix(path: PathLike) -> SoftLabels:
    """A saved soft-label matrix as float64 (a .npz: `SparseRows`), checked to be square, finite and
    non-negative."""
    array = read_array(path)
    if str(path).endswith(".npz"):
        missing = [k for k in ("index", "value", "residual") if k not in array.files]
        if missing:
            raise UserInputError(f"{path}: top-k soft labels lack {', '.join(missing)}")
        return _sparse(path, {k: array[k] for k in ("index", "value", "residual")})
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise UserInputError(f"{path}: expected a square (K, K) matrix, got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or (array < 0).any():
        raise UserInputError(f"{path}: the soft labels must be finite and non-negative")
    return array


def _sparse(path: PathLike, arrays: dict[str, np.ndarray]) -> SparseRows:
    """Checked top-k rows: shapes agree, columns in range, values finite and non-negative."""
    index, value, residual = arrays["index"].astype(np.int64), arrays["value"].astype(np.float64), \
        arrays["residual"].astype(np.float64)
    K = index.shape[0] if index.ndim == 2 else 0
    if K == 0 or value.shape != index.shape or residual.shape != (K,) or index.max(initial=-1) >= K \
            or index.min(initial=-1) < -1:
        raise UserInputError(f"{path}: expected top-k soft labels (index, value (K, m), residual (K,))")
    if not (np.isfinite(value).all() and np.isfinite(residual).all()) or (value < 0).any() or (residual < 0).any():
        raise UserInputError(f"{path}: the soft labels must be finite and non-negative")
    return SparseRows(index, value, residual)


def num_classes_of(matrix: SoftLabels) -> int:
    """K of a dense matrix or of top-k rows."""
    return matrix.num_classes if isinstance(matrix, SparseRows) else matrix.shape[0]


def diagonal_mass(matrix: SoftLabels) -> np.ndarray:
    """S[c, c] for every class: the mass a soft label keeps on its own class."""
    return matrix.diagonal() if isinstance(matrix, SparseRows) else np.diagonal(matrix).copy()


def row_entropy(matrix: SoftLabels) -> np.ndarray:
    """Entropy in nats of each row as a distribution (divided by its sum, 0 log 0 = 0); NaN for an all-zero row."""
    if isinstance(matrix, SparseRows):
        return matrix.entropy()
    sums = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = matrix / sums
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = terms.sum(axis=1)
    entropy[sums[:, 0] <= 0] = np.nan
    return entropy


def top_similar(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest off-diagonal entries of each row: (K, k') class indices and masses, k' = min(k, K - 1),
    largest first, ties broken by the lower class index."""
    if k < 1:
        raise UserInputError(f"the number of similar classes must be at least 1, got {k}")
    size = matrix.shape[0]
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    order = np.argsort(-off, axis=1, kind="stable")[:, : min(k, size - 1)]
    return order, np.take_along_axis(matrix, order, axis=1)


def resolve_class_names(num_classes: int, *candidates: Sequence[Any] | None) -> list[str]:
    """The first candidate list with exactly `num_classes` names, else the class indices as text."""
    for names in candidates:
        if names is not None and len(names) == num_classes:
            return [str(name) for name in names]
    return [str(i) for i in range(num_classes)]


def dataset_class_names(run_dir: PathLike) -> list[str] | None:
    """The class names of the dataset the run's config.yaml names (`dataset`, `data_root`, `split`), as its
    builder gives them: the names the run trained with (config.yaml holds the options, not the names). None where
    config.yaml or the data cannot be read. Builds the dataset, so callers that know the names (a checkpoint's)
    pass them instead."""
    from ..data import build_datasets

    try:
        config = read_config(run_dir)
        if not isinstance(config.get("dataset"), str):
            return None
        bundle = build_datasets(config["dataset"], config.get("data_root"), config.get("split"), augment="none")
    except (OSError, UserInputError):
        return None
    return [str(name) for name in bundle.class_names]


def run_class_names(run_dir: PathLike, num_classes: int, class_names: Sequence[Any] | None) -> list[str]:
    """`class_names` when they fit, else the names of the run's dataset (`dataset_class_names`), else indices."""
    if class_names is not None and len(class_names) == num_classes:
        return resolve_class_names(num_classes, class_names)
    return resolve_class_names(num_classes, dataset_class_names(run_dir))


def class_rows(matrix: SoftLabels, names: Sequence[str], top: int) -> list[dict[str, Any]]:
    """Per class: index, name, diagonal mass, row entropy and the `top` most similar other classes with their mass
    (for top-k rows: among the kept entries)."""
    diagonal, entropy = diagonal_mass(matrix), row_entropy(matrix)
    if isinstance(matrix, SparseRows):
        if top < 1:
            raise UserInputError(f"the number of similar classes must be at least 1, got {top}")
        similar = matrix.similar(top)
    else:
        similar = [list(zip(*row)) for row in zip(*top_similar(matrix, top))]
    return [{"class": c, "name": names[c], "diagonal": float(diagonal[c]),
             "entropy": None if math.isnan(entropy[c]) else float(entropy[c]),
             "similar": [{"class": int(j), "name": names[int(j)], "mass": float(m)} for j, m in similar[c]]}
            for c in range(num_classes_of(matrix))]


def epoch_curves(files: Mapping[int, PathLike]) -> dict[str, list[float]]:
    """Over the saved epochs: `epoch`, the mean row entropy `mean_entropy` and the mean diagonal `mean_diagonal`."""
    curves: dict[str, list[float]] = {"epoch": [], "mean_entropy": [], "mean_diagonal": []}
    for epoch, path in files.items():
        matrix = load_matrix(path)
        curves["epoch"].append(epoch)
        curves["mean_entropy"].append(float(np.nanmean(row_entropy(matrix))))
        curves["mean_diagonal"].append(float(diagonal_mass(matrix).mean()))
    return curves


def pick_epoch(files: Mapping[int, Path], epoch: int | None) -> int:
    """`epoch` when it was saved (None: the last one); otherwise a user error listing what there is."""
    if epoch is None:
        return max(files)
    if epoch not in files:
        raise UserInputError(f"no soft labels saved for epoch {epoch}; saved: {_epoch_list(files)}")
    return epoch


def grid_epochs(files: Mapping[int, Path], epochs: Sequence[int] | None = None) -> list[int]:
    """The epochs of a heatmap grid: those asked for (each must be saved), else the first, middle and last."""
    if epochs:
        return [pick_epoch(files, e) for e in dict.fromkeys(epochs)]
    saved = list(files)
    return list(dict.fromkeys([saved[0], saved[(len(saved) - 1) // 2], saved[-1]]))


def _epoch_list(files: Mapping[int, Path]) -> str:
    saved = list(files)
    return ", ".join(map(str, saved)) if len(saved) <= 12 else f"{saved[0]}..{saved[-1]} ({len(saved)} epochs)"


def clustered_order(matrix: np.ndarray) -> np.ndarray:
    """Classes ordered by average-linkage clustering of the rows, so that classes that share mass sit together.

    Each row's own entry is replaced by its largest other entry before the rows are L2-normalised: two classes
    that put mass on each other then have rows that overlap, which the raw (diagonal-dominated) rows do not."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    size = matrix.shape[0]
    if size < 3:
        return np.arange(size)
    features = matrix.copy()
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    np.fill_diagonal(features, off.max(axis=1))
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    return leaves_list(linkage(features, method="average", metric="euclidean"))


def top_pair_classes(matrix: np.ndarray, limit: int = MAX_FULL_VIEW) -> np.ndarray:
    """Up to `limit` classes: both classes of each off-diagonal pair in decreasing (S[a, b] + S[b, a]) / 2,
    in the order they are met, so that the most confused pairs sit next to each other."""
    size = matrix.shape[0]
    if size <= limit:
        return np.arange(size)
    rows, cols = np.triu_indices(size, k=1)
    shared = (matrix[rows, cols] + matrix[cols, rows]) / 2
    chosen: dict[int, None] = {}
    for pair in np.argsort(-shared, kind="stable"):
        for c in (int(rows[pair]), int(cols[pair])):
            if len(chosen) < limit:
                chosen.setdefault(c)
        if len(chosen) >= limit:
            break
    return np.array(list(chosen))


def resolve_views(view: str, num_classes: int, sparse: bool = False) -> list[str]:
    """The views `view` stands for: itself, or for "auto" the full view up to MAX_FULL_VIEW classes and beyond
    it the clustered view of every class next to the top view of the most confused ones; top-k rows (many
    classes) have the top view only."""
    if view not in VIEWS:
        raise UserInputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if sparse:
        if view not in ("auto", "top"):
            raise UserInputError(f"soft labels saved as top-k rows ({num_classes} classes) have the top view only, "
                                 f"not {view!r}")
        return ["top"]
    if view != "auto":
        return [view]
    return ["full"] if num_classes <= MAX_FULL_VIEW else ["clustered", "top"]


def view_order(matrix: np.ndarray, view: str) -> np.ndarray:
    """The classes a view shows, in order: full = all in class order, sorted = by decreasing diagonal mass,
    clustered = `clustered_order`, top = `top_pair_classes`."""
    if view == "full":
        return np.arange(matrix.shape[0])
    if view == "sorted":
        return np.argsort(-diagonal_mass(matrix), kind="stable")
    if view == "clustered":
        return clustered_order(matrix)
    if view == "top":
        return top_pair_classes(matrix)
    raise UserInputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS[1:])}")


_VIEW_TITLES = {"full": "class order", "sorted": "sorted by diagonal mass", "clustered": "clustered rows",
                "top": "classes of the largest off-diagonal masses"}


def soft_label_figures(run_dir: PathLike, folder: PathLike | None = None, epochs: Sequence[int] | None = None,
                       view: str = "auto", class_names: Sequence[Any] | None = None,
                       curves: Mapping[str, Mapping[str, Sequence[float]]] | None = None
                       ) -> dict[str, Figure | Path]:
    """The heatmap grid of each view (`resolve_views`) at `epochs` (default first, middle, last; the class order
    comes from the last of them) and the curves over the epochs (`curves`: name -> `epoch_curves`, by default this
    run's), by name (`soft-labels-VIEW`, `soft-labels-curves`): written as PNG into `folder`, or returned as
    Figures when it is None."""
    from .plots import plot_soft_label_curves, plot_soft_label_grid

    files = soft_label_files(run_dir)
    chosen = grid_epochs(files, epochs)
    matrices = {epoch: load_matrix(files[epoch]) for epoch in chosen}
    last = matrices[chosen[-1]]
    size = num_classes_of(last)
    names = run_class_names(run_dir, size, class_names)
    if isinstance(last, SparseRows):  # dense blocks of the classes shown, in their order
        order = last.top_classes()
        names = [names[c] for c in order]
        matrices = {e: m.block(order) if isinstance(m, SparseRows) else m[np.ix_(order, order)]
                    for e, m in matrices.items()}
        last = matrices[chosen[-1]]
    def where(name: str) -> Path | None:
        return None if folder is None else Path(folder) / f"{name}.png"

    figures: dict[str, Figure | Path] = {}
    for shown in resolve_views(view, size, sparse=len(names) < size):
        order = view_order(last, shown) if len(names) == size else np.arange(len(names))
        count = f"{len(order)} of {size} classes" if len(order) < size else f"{size} classes"
        title = f"Soft labels, {_VIEW_TITLES[shown]} ({count})"
        figures[f"soft-labels-{shown}"] = plot_soft_label_grid(matrices, where(f"soft-labels-{shown}"), names, order,
                                                               title=title)
    figures["soft-labels-curves"] = plot_soft_label_curves(
        curves or {Path(run_dir).name: epoch_curves(files)}, where("soft-labels-curves"), num_classes=size)
    return figures


def soft_label_summary(run_dir: PathLike, epoch: int | None = None, top: int = 5,
                       class_names: Sequence[Any] | None = None) -> dict[str, Any]:
    """Everything `olsmooth soft-labels --json` prints: the chosen epoch's per-class rows, their means, and the
    curves over every saved epoch. Class names: `class_names` (e.g. from a checkpoint), else the dataset's."""
    files = soft_label_files(run_dir)
    chosen = pick_epoch(files, epoch)
    matrix = load_matrix(files[chosen])
    size = num_classes_of(matrix)
    names = run_class_names(run_dir, size, class_names)
    return {"run": str(run_dir), "epoch": chosen, "epochs_saved": list(files), "num_classes": size,
            "max_entropy": math.log(size), "mean_entropy": float(np.nanmean(row_entropy(matrix))),
            "mean_diagonal": float(diagonal_mass(matrix).mean()), "classes": class_rows(matrix, names, top),
            "curves": epoch_curves(files)}


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary as the command prints it: a header, one line per class, then the curves over the epochs."""
    lines = [f"{summary['run']}: {summary['num_classes']} classes, soft labels after epoch {summary['epoch']} "
             f"(mean diagonal {summary['mean_diagonal']:.3f}, mean entropy {summary['mean_entropy']:.3f} nats "
             f"of at most {summary['max_entropy']:.3f})", ""]
    width = max(5, *(len(row["name"]) for row in summary["classes"]))
    lines.append(f"{'class':<{width}}  diagonal  entropy  most similar classes (mass)")
    for row in summary["classes"]:
        entropy = "-" if row["entropy"] is None else f"{row['entropy']:.3f}"
        similar = ", ".join(f"{s['name']} ({s['mass']:.3f})" for s in row["similar"])
        lines.append(f"{row['name']:<{width}}  {row['diagonal']:8.3f}  {entropy:>7}  {similar}")
    curves = summary["curves"]
    lines += ["", "epoch  mean entropy  mean diagonal"]
    lines += [f"{e:>5}  {h:12.4f}  {d:13.4f}"
              for e, h, d in zip(curves["epoch"], curves["mean_entropy"], curves["mean_diagonal"])]
    return "\n".join(lines) + "\n"
