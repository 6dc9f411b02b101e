"""The many-class study's evidence beyond `olsmooth study`'s tables: every run's top-5 and its calibration after
temperature scaling, what each OLS cell's matrix learned, and the characters it finds most alike, drawn as glyphs.

Collecting evaluates each finished run's last.pt with `olsmooth eval`'s code (T fitted on the run's validation
split, the scaled figures on the whole test set) and reads the last soft-label matrix of every OLS run; it writes
three CSVs (per run: calibration, matrix structure; per OLS cell: the nearest characters of a seeded sample of
classes in the seed-averaged matrix), the page that regenerates from them, and the glyph figure.

    python -m benchmarks.many_classes --study many-classes-glyphs-1000 --runs runs/many-classes-glyphs-1000 --docs docs
    python -m benchmarks.many_classes --study many-classes-glyphs-1000 --from-csv docs/benchmarks   # the page only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from olsmooth.analysis.metrics import EVALUATION_KEYS
from olsmooth.analysis.report import Group, markdown_report, markdown_table
from olsmooth.analysis.soft_labels import diagonal_mass, load_matrix, row_entropy
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_file, atomic_write_text
from olsmooth.runs.checkpoints import checkpoint_class_names
from olsmooth.runs.layout import LAST
from olsmooth.runs.reader import soft_label_files
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.results import exact_csv_text, read_exact_csv
from olsmooth.studies.spec import Study, baseline_pairs, load_study, resolve_study_path

from .common import exit_status

MODULE = "benchmarks.many_classes"
CALIBRATION_KEYS = (*EVALUATION_KEYS, "temperature", "nll_ts", "ece_ts")
TESTED_KEYS = ("top5", "nll_ts", "ece_ts")
MATRIX_KEYS = ("diagonal_mean", "diagonal_min", "diagonal_max", "entropy_mean", "largest_off_diagonal_mean")
NEAREST_COLUMNS = ("cell", "class", "rank", "neighbour", "mass")
CSV_COLUMNS = {"calibration": ("cell", "seed", *CALIBRATION_KEYS), "matrices": ("cell", "seed", *MATRIX_KEYS),
               "nearest": NEAREST_COLUMNS}
"""The columns of each CSV, by role."""
SAMPLED_CLASSES, NEIGHBOURS, SAMPLE_SEED = 12, 5, 0


def file_names(study: Study) -> dict[str, str]:
    """The published files of the study, by role."""
    return {"calibration": f"{study.name}-calibration.csv", "matrices": f"{study.name}-matrices.csv",
            "nearest": f"{study.name}-nearest.csv", "page": f"{study.name}-calibration.md",
            "figure": f"{study.name}-nearest.png"}


def is_ols(cell_options: Mapping[str, Any]) -> bool:
    return cell_options.get("method") == "ols"


def calibration_row(run_folder: Path) -> dict[str, float]:
    """The run's last checkpoint evaluated as `olsmooth eval --calibration-data validation` does."""
    from olsmooth.engine.inference import evaluate_calibrated

    metrics = evaluate_calibrated([run_folder / LAST], batch_size=512, calibration_data="validation").metrics
    return {key: float(metrics[key]) for key in CALIBRATION_KEYS}


def matrix_row(matrix: np.ndarray) -> dict[str, float]:
    """Structure of one soft-label matrix: its diagonal (mean, min, max), mean row entropy (nats) and the mean of
    each row's largest off-diagonal entry."""
    diagonal = diagonal_mass(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    return {"diagonal_mean": float(diagonal.mean()), "diagonal_min": float(diagonal.min()),
            "diagonal_max": float(diagonal.max()), "entropy_mean": float(np.nanmean(row_entropy(matrix))),
            "largest_off_diagonal_mean": float(off.max(axis=1).mean())}


def last_matrix(run_folder: Path) -> np.ndarray:
    matrix = load_matrix(list(soft_label_files(run_folder).values())[-1])
    if not isinstance(matrix, np.ndarray):
        raise UserInputError(f"{run_folder}: its last soft labels are top-k rows; this study keeps K dense")
    return matrix


def nearest_rows(cell: str, matrix: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """For a seeded sample of classes, the NEIGHBOURS classes of largest mass in their row (the class itself
    left out)."""
    classes = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(matrix), SAMPLED_CLASSES, replace=False))
    rows = []
    for c in classes:
        row = matrix[c].copy()
        row[c] = -np.inf
        for rank, j in enumerate(np.argsort(-row, kind="stable")[:NEIGHBOURS], start=1):
            rows.append({"cell": cell, "class": names[c], "rank": rank, "neighbour": names[j], "mass": row[j]})
    return rows


def collect(study: Study, runs: Path) -> dict[str, list[dict[str, Any]]]:
    """Every finished run's calibration and (OLS) matrix rows, and each OLS cell's nearest characters."""
    calibration, matrices, nearest, by_cell = [], [], [], {}
    for run in plan_runs(study, runs):
        if run.status.state != "done":
            continue
        print(f"{run.label}", file=sys.stderr, flush=True)
        calibration.append({"cell": run.cell.name, "seed": run.seed, **calibration_row(run.folder)})
        if is_ols(run.cell.options):
            matrix = last_matrix(run.folder)
            matrices.append({"cell": run.cell.name, "seed": run.seed, **matrix_row(matrix)})
            by_cell.setdefault(run.cell.name, []).append((matrix, run.folder))
    for cell, entries in by_cell.items():
        names = checkpoint_class_names(entries[0][1]) or [str(i) for i in range(len(entries[0][0]))]
        nearest += nearest_rows(cell, np.mean([matrix for matrix, _ in entries], axis=0), names)
    if not calibration:
        raise UserInputError(f"{runs} holds no finished run of study {study.name}")
    return {"calibration": calibration, "matrices": matrices, "nearest": nearest}


def groups(study: Study, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[Group]:
    """One Group per cell of the study (grid order) holding each seed's figures of `keys`."""
    result = []
    for cell in study.cells:
        group = Group(study.shown_options(cell))
        for row in rows:
            if row["cell"] == cell.name:
                group.add(row["seed"], {k: row[k] for k in keys}, Path(cell.name))
        if group.runs:
            result.append(group)
    return result


def page_text(study: Study, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The generated page: calibration after temperature scaling with paired tests against the baselines, the OLS
    matrices' structure, and the nearest characters of the sampled classes."""
    names = file_names(study)
    calibration = groups(study, tables["calibration"], CALIBRATION_KEYS)
    cells = [cell for cell in study.cells if any(g.options == study.shown_options(cell) for g in calibration)]
    pairs = [(cells.index(study.cells[i]), cells.index(study.cells[j])) for i, j in baseline_pairs(study)
             if study.cells[i] in cells and study.cells[j] in cells]
    text = (f"# Study {study.name}: top-5, temperature scaling and the OLS matrices\n\n"
            f"Generated by `python -m {MODULE}` from {names['calibration']}, {names['matrices']} and "
            f"{names['nearest']}; the study's main page is [{study.name}.md]({study.name}.md).\n\n"
            "## Calibration after temperature scaling\n\nEach run's last epoch: T fitted by NLL on its validation "
            "split (training typefaces), the scaled NLL and ECE (`_ts`) on the whole test set (held-out "
            "typefaces). Mean ± sample std over seeds; top-1, top-5 and ECE in %, NLL in nats.\n\n")
    text += markdown_report(calibration, CALIBRATION_KEYS, pairs, tested_keys=TESTED_KEYS)
    matrices = groups(study, tables["matrices"], MATRIX_KEYS)
    text += ("\n## What the OLS matrix learned\n\nThe last epoch's soft-label matrix S of each OLS run: the mass a "
             "class keeps on itself (mean, smallest and largest over classes), the mean row entropy in nats, and "
             "the mean over rows of the largest off-diagonal entry. Mean ± sample std over seeds.\n\n")
    text += markdown_report(matrices, MATRIX_KEYS, [], {k: ".3f" for k in MATRIX_KEYS}, ())
    text += (f"\n## The characters S finds most alike\n\n{SAMPLED_CLASSES} classes drawn with seed {SAMPLE_SEED}; "
             f"for each, the {NEIGHBOURS} other characters with the most mass in its row of S averaged over "
             f"seeds (drawn as glyphs in [{names['figure']}](../figures/{names['figure']})).\n\n")
    by_cell: dict[str, dict[str, list[str]]] = {}
    for row in tables["nearest"]:
        by_cell.setdefault(row["cell"], {}).setdefault(row["class"], []).append(f"{row['neighbour']} {row['mass']:.3f}")
    for cell, classes in by_cell.items():
        text += f"\n{cell}:\n\n" + markdown_table(
            [{"class": c, "nearest (mass)": ", ".join(n)} for c, n in classes.items()], ["class", "nearest (mass)"])
    return text


def draw_nearest(rows: Sequence[Mapping[str, Any]], cell: str, data_root: Path, path: Path) -> None:
    """The sampled classes of one OLS cell and their nearest characters, each as its first clean test rendering
    (the dataset folder's arrays; class i is the manifest's i-th character)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chars = json.loads((data_root / "manifest.json").read_text(encoding="utf-8"))["charset"]["chars"]
    images, labels = np.load(data_root / "test-images.npy"), np.load(data_root / "test-labels.npy")
    first = {chars[c]: images[int(np.flatnonzero(labels == c)[0])] for c in range(len(chars))}
    classes = list(dict.fromkeys(row["class"] for row in rows if row["cell"] == cell))
    fig, axes = plt.subplots(len(classes), NEIGHBOURS + 1, figsize=(1.1 * (NEIGHBOURS + 1), 1.2 * len(classes)))
    for r, c in enumerate(classes):
        shown = [(c, "class")] + [(row["neighbour"], f"{row['mass']:.3f}") for row in rows
                                  if row["cell"] == cell and row["class"] == c]
        for k, (name, caption) in enumerate(shown):
            axes[r, k].imshow(first[name], cmap="Blues" if k == 0 else "gray")
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
            axes[r, k].set_xlabel(caption, fontsize=8)
    fig.suptitle(f"{cell}: a class (left) and the characters\nwith the most mass in its row of S", fontsize=9)
    fig.tight_layout()
    atomic_write_file(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def read_tables(study: Study, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The three CSVs of FOLDER, checked against the study (`read_exact_csv`)."""
    names, tables = file_names(study), {}
    for role, columns in CSV_COLUMNS.items():
        ints = ("rank",) if role == "nearest" else ("seed",)
        floats = [k for k in columns if k not in ("cell", "class", "neighbour", *ints)]
        tables[role] = read_exact_csv(study, folder / names[role], columns, ints, floats)
    return tables


def run(args: argparse.Namespace) -> int:
    """Print the page of --from-csv, or evaluate the runs and write the CSVs, the page and the figure."""
    study = load_study(resolve_study_path(args.study))
    if args.from_csv:
        print(page_text(study, read_tables(study, args.from_csv)), end="")
        return 0
    if not (args.runs and args.docs):
        raise UserInputError("give --runs and --docs, or --from-csv")
    tables = collect(study, args.runs)
    names, pages = file_names(study), args.docs / "benchmarks"
    for role, rows in tables.items():
        atomic_write_text(pages / names[role], exact_csv_text(CSV_COLUMNS[role], rows))
    tables = read_tables(study, pages)
    atomic_write_text(pages / names["page"], page_text(study, tables))
    cell = next((c for c in (row["cell"] for row in tables["nearest"]) if "fine-grained" in c),
                tables["nearest"][0]["cell"] if tables["nearest"] else None)
    if cell is not None:
        figure = args.docs / "figures" / names["figure"]
        draw_nearest(tables["nearest"], cell, Path(study.base["data_root"]), figure)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--study", default="many-classes-glyphs-1000", help="the study file (name or path)")
    parser.add_argument("--runs", type=Path, help="the study's output folder: evaluate and collect")
    parser.add_argument("--docs", type=Path, help="with --runs: write the CSVs and page under DOCS/benchmarks, "
                                                  "the figure under DOCS/figures")
    parser.add_argument("--from-csv", type=Path, metavar="FOLDER", help="print the page the CSVs in FOLDER give")
    args = parser.parse_args(argv)
    return exit_status(MODULE, lambda: run(args))

if __name__ == "__main__":
    sys.exit(main())
