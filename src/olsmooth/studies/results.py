"""A study's results beside its run folders: `results.csv` (one row per run), `results.md` (mean ± std per cell,
paired tests by seed against the baselines) and `results.png`, and the exact CSV reader and writer they share.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.metrics import EVALUATION_KEYS, HEADLINE_KEYS, axis_label, units_text
from ..analysis.report import (
    NOISE_OPTION,
    Group,
    load_run,
    markdown_report,
    option_text,
    plot_groups,
    plot_noise_curves,
    plot_noise_groups,
)
from ..errors import UserInputError
from ..fileio import atomic_write_file
from ..runs.layout import METRICS
from ..runs.reader import read_metrics
from .plan import PlannedRun
from .spec import Study, baseline_pairs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TABLE_KEYS = (*HEADLINE_KEYS, *(f"best_{k}" for k in HEADLINE_KEYS))
"""Shown per cell for the last epoch and, as best_*, for each run's epoch with the highest test top-1."""
CSV_NAME, MARKDOWN_NAME, FIGURE_NAME = "results.csv", "results.md", "results.png"
MEMORISATION_FIGURE = "memorisation.png"
MEMORISATION_KEYS = ("noisy_fit_clean", "noisy_fit_noisy", "ols_noise_mass", "noise_source_mass")


def _is_noise_study(study: Study) -> bool:
    """True when label noise is an axis: the figure then plots top-1 against the noise rate."""
    return any(NOISE_OPTION in cell.options for cell in study.cells)


RUN_COLUMNS = ("epochs", *EVALUATION_KEYS, "best_epoch", *(f"best_{k}" for k in EVALUATION_KEYS), "best_val_top1",
               "train_top1", "epoch_time_s", *MEMORISATION_KEYS)
"""Per run in results.csv: its epochs; the last epoch's test figures; the chosen epoch (highest validation top-1
where the run has a validation split, else test top-1) and its test figures; that epoch's validation top-1; the
last epoch's train top-1 (on the training batches, as trained); the mean epoch time in seconds; and, for runs with
label noise, the last epoch's memorisation figures (OLS runs add the soft labels' mass on the noise's source classes
and that true share, `noise_source_mass`). A figure a run lacks is left empty."""
_INT_COLUMNS = ("seed", "epochs", "best_epoch")


def run_row(study: Study, run: PlannedRun, out: Path) -> dict[str, Any]:
    """The results.csv row of a finished run, read from its folder."""
    folder = load_run(run.folder)
    last, best = folder.record("last"), folder.record("best")
    figures = {**folder.figures("last", EVALUATION_KEYS),
               **{f"best_{k}": v for k, v in folder.figures("best", EVALUATION_KEYS).items()}}
    times = [r["epoch_time_s"] for r in folder.records if "epoch_time_s" in r]
    return {"cell": run.cell.name, "seed": run.seed, "folder": run.folder.relative_to(out).as_posix(),
            **{k: option_text(study.shown_options(run.cell).get(k)) for k in study.option_columns()},
            "epochs": len(folder.records), **figures, "best_epoch": best["epoch"],
            "best_val_top1": best.get("val_top1"), "train_top1": last.get("train_top1"),
            "epoch_time_s": sum(times) / len(times) if times else None,
            **{k: last.get(k) for k in MEMORISATION_KEYS}}


def exact_csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of `rows` under `columns`: floats (numpy's too) written with repr, so that the file reads back to the exact
    values every table is computed from; None as an empty entry."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else repr(float(row[k])) if isinstance(row[k], (float, np.floating))
                         else row[k] for k in columns])
    return buffer.getvalue()


def read_exact_csv(study: Study, path: str | Path, columns: Sequence[str], int_keys: Sequence[str],
                   float_keys: Sequence[str], blank_is_none: bool = False) -> list[dict[str, Any]]:
    """The rows of a CSV `exact_csv_text` wrote for `study`: exactly `columns`, every row's cell one of the study's,
    `int_keys` and `float_keys` parsed back exactly (an empty entry as None where `blank_is_none`)."""
    path = Path(path)
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        records = list(reader)
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserInputError(f"{path}: cannot read ({err})") from None
    if reader.fieldnames != list(columns):
        raise UserInputError(f"{path}: columns {reader.fieldnames} are not {list(columns)}")
    cells, rows = {cell.name for cell in study.cells}, []
    for number, record in enumerate(records, start=2):
        if record["cell"] not in cells:
            raise UserInputError(f"{path}:{number}: cell {record['cell']!r} is not a cell of {study.name}")
        row: dict[str, Any] = dict(record)
        for kind, keys in ((int, int_keys), (float, float_keys)):
            for key in keys:
                text = record[key]
                try:
                    row[key] = None if blank_is_none and text == "" else kind(text)
                except ValueError:
                    raise UserInputError(f"{path}:{number}: {key} is not a number: {text!r}") from None
        rows.append(row)
    return rows


def csv_text(study: Study, rows: Sequence[Mapping[str, Any]]) -> str:
    """results.csv: one row per run (cell, seed, folder, the cell's options, RUN_COLUMNS), read back exactly."""
    return exact_csv_text(_csv_columns(study), rows)


def _csv_columns(study: Study) -> list[str]:
    return ["cell", "seed", "folder", *study.option_columns(), *RUN_COLUMNS]


def read_results_csv(study: Study, path: str | Path) -> list[dict[str, Any]]:
    """The rows of a study's results.csv (as `csv_text` writes them), checked against the study: every cell and
    seed once, the columns it writes; numbers parsed back exactly, empty entries as None."""
    rows = read_exact_csv(study, path, _csv_columns(study), _INT_COLUMNS,
                          [k for k in RUN_COLUMNS if k not in _INT_COLUMNS], blank_is_none=True)
    pairs = [(row["cell"], row["seed"]) for row in rows]
    if len(set(pairs)) != len(pairs):
        raise UserInputError(f"{path}: a cell and seed appear twice")
    return rows


def groups_from_rows(study: Study, rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = TABLE_KEYS,
                     root: Path | None = None) -> list[Group]:
    """Per cell, in the grid's order, each seed's figures `keys` (a row lacking one leaves it out); each run's
    folder is the row's, under `root` when given."""
    groups = {cell.name: Group(study.shown_options(cell)) for cell in study.cells}
    for row in rows:
        figures = {k: row[k] for k in keys if row.get(k) is not None}
        groups[row["cell"]].add(row["seed"], figures, (root or Path()) / row["folder"])
    return list(groups.values())


def cell_groups(study: Study, plan: Sequence[PlannedRun]) -> list[Group]:
    """Per cell, each seed's figures (every RUN_COLUMNS figure but the epoch counts and times), read from the
    finished run folders of `plan` (whose folders lie in one study folder)."""
    out = plan[0].folder.parent.parent if plan else Path()
    keys = [k for k in RUN_COLUMNS if k not in _INT_COLUMNS and k != "epoch_time_s"]
    return groups_from_rows(study, [run_row(study, run, out) for run in plan], keys, out)


def markdown_text(study: Study, rows: Sequence[Mapping[str, Any]], out: str | Path,
                  figures: Mapping[str, str] | None = None) -> str:
    """results.md from the rows of results.csv: mean ± std per cell of the last and the chosen epoch, paired tests
    against the baselines (Holm-corrected, with the resolvable difference), and, under label noise, memorisation.
    `figures` maps a figure's file name to the link the page uses (default: the name, beside the page)."""
    links = dict(figures or {})
    groups = groups_from_rows(study, rows)
    lines = [f"# Study {study.name}\n"]
    if study.description:
        lines.append(study.description.strip() + "\n")
    chosen = ("validation top-1 (its test figures)" if any(cell.config.val_fraction for cell in study.cells)
              else "test top-1")
    lines.append(f"{len(study.cells)} cell(s) x {len(study.seeds)} seed(s) = {len(rows)} runs; run folders under "
                 f"`{out}`; shared options: {option_text(study.base) if study.base else 'none'}. Mean ± sample std "
                 f"over seeds of the last epoch's test {', '.join(HEADLINE_KEYS)} and of each run's epoch with the "
                 f"highest {chosen} (best_*); {units_text(HEADLINE_KEYS)}. Per-run figures: results.csv.\n")
    lines.append(markdown_report(groups, TABLE_KEYS, baseline_pairs(study)))
    lines.append(f"\n![test top-1 per cell]({links.get(FIGURE_NAME, FIGURE_NAME)})\n")
    noisy = [g for g in groups_from_rows(study, rows, MEMORISATION_KEYS[:2])
             if g.runs and all(k in run for run in g.runs.values() for k in MEMORISATION_KEYS[:2])]
    if noisy:
        lines.append("## Memorisation\n\nOn the training samples whose label the noise changed, at the last epoch: "
                     "% predicted as their clean label (`noisy_fit_clean`) and as their noisy label "
                     f"(`noisy_fit_noisy`, memorised noise); per epoch in each run's {METRICS}.\n")
        lines.append(markdown_report(noisy, MEMORISATION_KEYS[:2], []))
        lines.append(f"\n![memorised noise per epoch]({links.get(MEMORISATION_FIGURE, MEMORISATION_FIGURE)})\n")
    return "\n".join(lines)


def _numeric_axis(study: Study) -> str | None:
    """The first axis whose values are plain numbers (it becomes the figure's x axis), or None."""
    for name, values in study.axes:
        numbers = [v[name] for v in values]
        if len(values[0]) == 1 and all(len(v) == 1 and isinstance(n, (int, float)) and not isinstance(n, bool)
                                       for v, n in zip(values, numbers)):
            return name
    return None


def top1_figure(study: Study, rows: Sequence[Mapping[str, Any]]) -> Figure:
    """results.png from the rows of results.csv: final test top-1 per cell, mean ± std over seeds (against the
    numeric axis, or the noise rate in a study with label noise as an axis)."""
    groups = groups_from_rows(study, rows)
    title = f"{study.name}: final test top-1, mean ± std over {len(study.seeds)} seed(s)"
    if _is_noise_study(study):
        return plot_noise_groups(groups, "top1", title=title)
    return plot_groups(groups, "top1", _numeric_axis(study), ylabel=f"final {axis_label('top1')}", title=title)


def write_results(study: Study, plan: Sequence[PlannedRun], out: str | Path) -> list[Path]:
    """results.csv, results.md and results.png in `out`, each written atomically; every run must be finished."""
    out = Path(out)
    unfinished = [run.label for run in plan if run.status.state != "done"]
    if unfinished:
        raise UserInputError(f"cannot write the results: {len(unfinished)} run(s) not finished, e.g. {unfinished[0]}")
    rows = [run_row(study, run, out) for run in plan]
    texts = (csv_text(study, rows), markdown_text(study, rows, out))
    figures = {FIGURE_NAME: top1_figure(study, rows)}
    records = [(cell, [read_metrics(run.folder) for run in plan if run.cell.name == cell.name])
               for cell in study.cells]
    curves = [(cell.options, [[r["noisy_fit_noisy"] for r in epochs] for epochs in runs]) for cell, runs in records
              if runs and all("noisy_fit_noisy" in epochs[-1] for epochs in runs)]
    if curves:
        figures[MEMORISATION_FIGURE] = plot_noise_curves(curves, "% predicted as their noisy label",
                                                         "memorised noise: training samples with a corrupted label")
    paths = [out / CSV_NAME, out / MARKDOWN_NAME]
    for path, text in zip(paths, texts):
        atomic_write_file(path, lambda handle, text=text: handle.write(text.encode("utf-8")))
    for name, figure in figures.items():
        atomic_write_file(out / name, lambda handle, figure=figure: figure.savefig(handle, format="png", dpi=120))
        paths.append(out / name)
    return paths
