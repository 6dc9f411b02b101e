"""Studies: a grid of training runs (every combination of the axes' values, times the seeds) from one YAML file.

Runs go one after another through the public trainer API into `OUT/CELL/seed-N`; a rerun skips finished runs
and continues an interrupted one from its last.pt. At the end `results.csv` (one row per run), `results.md`
(mean ± std per cell, paired tests by seed against the baselines) and `results.png` are written beside them.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

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
from ..option_roles import LOSS_OPTION_ALIASES, NON_EXPERIMENT_OPTIONS, SET_BY_STUDY
from ..runs.layout import CONFIG, METRICS, indices_name
from ..runs.reader import RunStatus, read_metrics, read_run_config, run_status
from .config import (
    FIELDS,
    OPTIONS,
    TrainConfig,
    build_config,
    load_recipe,
    read_yaml,
    resolve_recipe_path,
)
from .resolve import resolve, upgrade_subset_draw
from .trainer import Trainer, load_resume

STUDY_KEYS = ("description", "base", "grid", "seeds", "baselines")
DEFAULT_SEEDS = (0,)
RESULT_KEYS = ("top1", "nll", "ece")
"""Shown per cell for the last epoch and, as best_*, for each run's epoch with the highest test top-1."""
TABLE_KEYS = (*RESULT_KEYS, *(f"best_{k}" for k in RESULT_KEYS))
CSV_NAME, MARKDOWN_NAME, FIGURE_NAME = "results.csv", "results.md", "results.png"
MEMORISATION_FIGURE = "memorisation.png"
MEMORISATION_KEYS = ("noisy_fit_clean", "noisy_fit_noisy", "ols_noise_mass")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    """One combination of axis values: the options it sets (in axis order), which value of each axis, and the
    configuration of its runs (defaults < base < these options; the seed and folder are set per run)."""

    options: dict[str, Any]
    choices: tuple[int, ...]
    config: TrainConfig

    @property
    def name(self) -> str:
        return cell_name(self.options)


def cell_name(options: Mapping[str, Any]) -> str:
    """A cell's folder name, e.g. `method=ols,model=small_cnn` (characters unsafe in paths become `_`)."""
    return _UNSAFE.sub("_", ",".join(f"{k}={option_text(v)}" for k, v in options.items()))


@dataclass(frozen=True)
class Study:
    """A validated study file: shared options, the cells of the grid, the seeds and the baseline specifications."""

    name: str
    description: str
    base: dict[str, Any]
    axes: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    baselines: tuple[dict[str, Any], ...]

    def shown_options(self, cell: Cell) -> dict[str, Any]:
        """The cell's value of every option some cell sets, in the grid's order: a cell that leaves one to the base
        shows the base's value (so that `pretrained: null` in one cell is not shown like the base's file in
        another); options neither sets stay out."""
        keys = dict.fromkeys(k for other in self.cells for k in other.options)
        return {k: cell.options[k] if k in cell.options else self.base[k] for k in keys
                if k in cell.options or k in self.base}

    def config(self, cell: Cell, seed: int, folder: Path) -> TrainConfig:
        """The run's configuration: defaults < base < cell < {seed, out}."""
        return dataclasses.replace(cell.config, seed=seed, out=str(folder))


@dataclass(frozen=True)
class PlannedRun:
    """One cell and seed: its folder, its configuration and how far it got ("done", "partial" or "new")."""

    cell: Cell
    seed: int
    folder: Path
    config: TrainConfig
    status: RunStatus

    @property
    def label(self) -> str:
        return f"{self.cell.name}/seed-{self.seed}"

    def epochs_left(self) -> int:
        """Epochs still to train (those a partial run has done are not counted)."""
        if self.status.state == "done":
            return 0
        done = self.status.epochs_done if self.status.state == "partial" else 0
        return resolve(self.config).epochs - done


def studies_dir() -> Path:
    """Folder of the shipped study files."""
    return Path(str(resources.files("olsmooth") / "configs" / "studies"))


def resolve_study_path(name: str) -> Path:
    """A study argument is a YAML path, or the name of a shipped study."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = sorted(p.stem for p in studies_dir().glob("*.yaml"))
    if name in shipped:
        return studies_dir() / f"{name}.yaml"
    raise UserInputError(f"no study file or shipped study {name!r}; shipped: {', '.join(shipped)}")


def _option(key: Any, where: str) -> str:
    """A base/grid/baseline key, checked to be an option of `olsmooth train` that the study does not set itself."""
    name = str(key).replace("-", "_")
    if name in SET_BY_STUDY:
        raise UserInputError(f"{where}: {name} is set by the study for every run (seeds, --out), not here")
    known = [*FIELDS, *LOSS_OPTION_ALIASES]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        raise UserInputError(f"{where}: unknown option {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return name


def _options(values: Any, where: str) -> dict[str, Any]:
    """A mapping of options with checked names (their values are checked when the cells' configurations build)."""
    if not isinstance(values, Mapping):
        raise UserInputError(f"{where} must be a mapping of option: value, got {values!r}")
    return {_option(key, where): value for key, value in values.items()}


def _base(value: Any, where: str) -> dict[str, Any]:
    """The base options: a mapping, or a recipe name or path whose options are read (less the seed, folder and
    --force of the recipe, which the study sets)."""
    if isinstance(value, str):
        recipe = load_recipe(resolve_recipe_path(value))
        kept = {k: v for k, v in recipe.items() if str(k).replace("-", "_") not in SET_BY_STUDY}
        return _options(kept, f"{where}: base recipe {value}")
    return _options(value if value is not None else {}, f"{where}: base")


def _axes(grid: Any, where: str) -> tuple[tuple[str, tuple[dict[str, Any], ...]], ...]:
    """Each axis with its values, each value as the options it sets (a plain value sets the axis option)."""
    if not isinstance(grid, Mapping) or not grid:
        raise UserInputError(f"{where}: grid must be a non-empty mapping of option: [values], got {grid!r}")
    axes = []
    for key, values in grid.items():
        name = _option(key, f"{where}: grid")
        if not isinstance(values, list):
            raise UserInputError(f"{where}: grid axis {name} must be a list of values, got {values!r}")
        if not values:
            raise UserInputError(f"{where}: grid axis {name} is empty")
        settings = []
        for value in values:
            setting = _options(value if isinstance(value, Mapping) else {name: value}, f"{where}: grid axis {name}")
            if name not in setting:
                raise UserInputError(f"{where}: grid axis {name}: the value {value!r} must set {name}")
            # the axis option first, then the others by name: folder names do not depend on how the file orders them
            settings.append({name: setting[name], **{k: setting[k] for k in sorted(setting) if k != name}})
        axes.append((name, tuple(settings)))
    return tuple(axes)


def _cells(base: dict[str, Any], axes: Sequence[tuple[str, Sequence[dict[str, Any]]]], where: str) -> tuple[Cell, ...]:
    """Every combination of the axes' values, each with its configuration; options set by two axes, two equal
    cells and values the configuration rejects are errors."""
    cells, names = [], {}
    for choices in itertools.product(*(range(len(values)) for _, values in axes)):
        options: dict[str, Any] = {}
        for (axis, values), choice in zip(axes, choices):
            twice = set(options) & set(values[choice])
            if twice:
                raise UserInputError(f"{where}: grid axis {axis} sets {', '.join(sorted(twice))}, which another "
                                     "axis sets too")
            options.update(values[choice])
        try:
            cell = Cell(options, choices, build_config(base, options))
        except UserInputError as err:
            raise UserInputError(f"{where}: cell {cell_name(options)}: {err}") from None
        if cell.name in names:
            raise UserInputError(f"{where}: the grid holds the cell {cell.name} twice")
        names[cell.name] = cell
        cells.append(cell)
    return tuple(cells)


def _seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserInputError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UserInputError(f"{where}: seeds repeat: {seeds}")
    return tuple(OPTIONS["seed"].check(seed, f"{where}: seed") for seed in seeds)  # each a valid run seed


def parse_study(data: Any, name: str, where: str, seeds: Sequence[int] | None = None) -> Study:
    """Validate a study's content (as read from YAML) and build its cells; `seeds` replaces the file's."""
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where} must hold a mapping with base, grid, seeds, baselines")
    unknown = [k for k in data if k not in STUDY_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), STUDY_KEYS, n=1)
        raise UserInputError(f"{where}: unknown key {unknown[0]!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                      f"; expected {', '.join(STUDY_KEYS)}"))
    if "grid" not in data:
        raise UserInputError(f"{where}: no grid (a mapping of option: [values])")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UserInputError(f"{where}: description must be a string")
    base = _base(data.get("base"), where)
    try:
        build_config(base, {})
    except UserInputError as err:
        raise UserInputError(f"{where}: base: {err}") from None
    axes = _axes(data["grid"], where)
    cells = _cells(base, axes, where)
    study_seeds = _seeds(list(seeds) if seeds is not None else data.get("seeds", list(DEFAULT_SEEDS)),
                         "--seeds" if seeds is not None else where)
    baselines = data.get("baselines")
    baselines = [] if baselines is None else baselines
    if not isinstance(baselines, list):
        raise UserInputError(f"{where}: baselines must be a list of option mappings, got {baselines!r}")
    study = Study(name, description, base, axes, cells, study_seeds,
                  tuple(_options(b, f"{where}: baseline") for b in baselines))
    for baseline in study.baselines:
        if not matching_cells(study, baseline):
            raise UserInputError(f"{where}: baseline {option_text(baseline)} matches no cell of the grid")
    return study


def load_study(path: str | Path, seeds: Sequence[int] | None = None) -> Study:
    """Read and validate a study file (a path or the name of a shipped study)."""
    resolved = resolve_study_path(str(path))
    return parse_study(read_yaml(resolved), resolved.stem, str(resolved), seeds)


def matching_cells(study: Study, baseline: Mapping[str, Any]) -> list[int]:
    """Indices of the cells that set (in the grid, or through the base) every option of `baseline` to its value."""
    unset = object()
    return [index for index, cell in enumerate(study.cells)
            if all(cell.options.get(k, study.base.get(k, unset)) == v for k, v in baseline.items())]


def baseline_pairs(study: Study) -> list[tuple[int, int]]:
    """(cell, baseline cell) index pairs: each cell that is not a baseline, against every baseline cell that has
    the same values on the axes the baseline does not name."""
    pairs: list[tuple[int, int]] = []
    for baseline in study.baselines:
        named = [i for i, (_, values) in enumerate(study.axes) if any(set(v) & set(baseline) for v in values)]
        matches = matching_cells(study, baseline)
        for index, cell in enumerate(study.cells):
            if index in matches:
                continue
            for match in matches:
                other = study.cells[match]
                same = all(cell.choices[a] == other.choices[a] for a in range(len(study.axes)) if a not in named)
                if same and (index, match) not in pairs:
                    pairs.append((index, match))
    return pairs


def _check_existing(run: PlannedRun) -> None:
    """An existing run folder must hold the run the study asks for: the same resolved options, except those that
    do not change the experiment (NON_EXPERIMENT_OPTIONS). A config.yaml from before train_subset_draw, beside the
    train_indices.npy that only the seeded draw writes, is read as the stratified draw it trained on."""
    saved = read_run_config(run.folder)
    if (run.folder / indices_name("train")).is_file():
        saved = upgrade_subset_draw(saved, indices_saved=True)
    wanted = resolve(run.config).to_dict()
    for key in wanted:
        if key in saved and key not in NON_EXPERIMENT_OPTIONS and saved[key] != wanted[key]:
            raise UserInputError(f"{run.folder} holds a run with {key}={saved.get(key)!r}, the study asks for "
                                 f"{wanted[key]!r}; move that folder away or choose another --out")


def plan_runs(study: Study, out: str | Path) -> list[PlannedRun]:
    """Every cell and seed (seed by seed, so a stopped study has whole seeds), with the state of its folder.

    Reads only; a folder that is not a run of this study is an error."""
    plan = []
    for seed in study.seeds:
        for cell in study.cells:
            folder = Path(out) / cell.name / f"seed-{seed}"
            if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG).is_file():
                raise UserInputError(f"{folder} exists and is not a run folder; move it away or choose another --out")
            run = PlannedRun(cell, seed, folder, study.config(cell, seed, folder), run_status(folder))
            if run.status.state != "new":
                _check_existing(run)
            plan.append(run)
    return plan


def _duration(seconds: float) -> str:
    """3.2s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def describe_plan(plan: Sequence[PlannedRun]) -> list[str]:
    """One line per run: its state and progress (what `--dry-run` prints)."""
    lines = []
    for run in plan:
        progress = f" ({run.status.epochs_done} of {run.status.epochs} epochs)" if run.status.epochs else ""
        lines.append(f"{run.status.state:<8} {run.folder}{progress}")
    return lines


def train_run(run: PlannedRun, log: Log) -> str:
    """Continue a partial run from its last.pt or train a new one; return what was done."""
    if run.status.state == "partial":
        cfg, checkpoint = load_resume(run.folder, {})
        Trainer(cfg, checkpoint, log=log).fit()
        return "resumed"
    # a config.yaml without last.pt is what a run left that stopped before its first checkpoint: replace it
    Trainer(dataclasses.replace(run.config, force=(run.folder / CONFIG).is_file()), log=log).fit()
    return "trained"


def run_study(study: Study, out: str | Path, log: Log = print) -> list[Path]:
    """Train what is missing, one run after another, with a line per run (elapsed time, estimate of the time
    left); then write the results files and return their paths. The trainer's own lines go to `log` indented."""
    plan = plan_runs(study, out)
    epochs_left = sum(run.epochs_left() for run in plan)
    start, trained_s, trained_epochs = time.perf_counter(), 0.0, 0
    for number, run in enumerate(plan, start=1):
        prefix = f"[{number}/{len(plan)}] {run.label}"
        if run.status.state == "done":
            log(f"{prefix}: done, skipped")
            continue
        run_start, epochs = time.perf_counter(), run.epochs_left()
        action = train_run(run, lambda text: log("    " + text.replace("\n", "\n    ")))
        trained_s += time.perf_counter() - run_start
        trained_epochs += epochs
        epochs_left -= epochs
        left = trained_s / max(trained_epochs, 1) * epochs_left
        log(f"{prefix}: {action} {epochs} epoch(s) in {_duration(time.perf_counter() - run_start)}; elapsed "
            f"{_duration(time.perf_counter() - start)}, about {_duration(left)} left")
    return write_results(study, plan_runs(study, out), out)


def _is_noise_study(study: Study) -> bool:
    """True when label noise is an axis: the figure then plots top-1 against the noise rate."""
    return any(NOISE_OPTION in cell.options for cell in study.cells)


RUN_COLUMNS = ("epochs", "top1", "top5", "nll", "ece", "best_epoch", "best_top1", "best_top5", "best_nll", "best_ece",
               "best_val_top1", "train_top1", "epoch_time_s", *MEMORISATION_KEYS)
"""Per run in results.csv: its epochs; the last epoch's test figures; the chosen epoch (highest validation top-1
where the run has a validation split, else test top-1) and its test figures; that epoch's validation top-1; the
last epoch's train top-1 (on the training batches, as trained); the mean epoch time in seconds; and, for runs with
label noise, the last epoch's memorisation figures. A figure a run lacks is left empty."""
_INT_COLUMNS = ("seed", "epochs", "best_epoch")


def run_row(study: Study, run: PlannedRun, out: Path) -> dict[str, Any]:
    """The results.csv row of a finished run, read from its folder."""
    folder = load_run(run.folder)
    last, best = folder.record("last"), folder.record("best")
    figures = {**folder.figures("last", ("top1", "top5", "nll", "ece")),
               **{f"best_{k}": v for k, v in folder.figures("best", ("top1", "top5", "nll", "ece")).items()}}
    times = [r["epoch_time_s"] for r in folder.records if "epoch_time_s" in r]
    return {"cell": run.cell.name, "seed": run.seed, "folder": run.folder.relative_to(out).as_posix(),
            **{k: option_text(study.shown_options(run.cell).get(k)) for k in _option_columns(study)},
            "epochs": len(folder.records), **figures, "best_epoch": best["epoch"],
            "best_val_top1": best.get("val_top1"), "train_top1": last.get("train_top1"),
            "epoch_time_s": sum(times) / len(times) if times else None,
            **{k: last.get(k) for k in MEMORISATION_KEYS}}


def _option_columns(study: Study) -> list[str]:
    return list(dict.fromkeys(k for cell in study.cells for k in study.shown_options(cell)))


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
    return ["cell", "seed", "folder", *_option_columns(study), *RUN_COLUMNS]


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
                 f"over seeds of the last epoch's test top1, nll, ece and of each run's epoch with the highest "
                 f"{chosen} (best_*); top-1 and ECE in %, NLL in nats. Per-run figures: results.csv.\n")
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


def write_results(study: Study, plan: Sequence[PlannedRun], out: str | Path) -> list[Path]:
    """results.csv, results.md and results.png in `out`, each written atomically; every run must be finished."""
    out = Path(out)
    unfinished = [run.label for run in plan if run.status.state != "done"]
    if unfinished:
        raise UserInputError(f"cannot write the results: {len(unfinished)} run(s) not finished, e.g. {unfinished[0]}")
    rows = [run_row(study, run, out) for run in plan]
    groups = groups_from_rows(study, rows)
    texts = (csv_text(study, rows), markdown_text(study, rows, out))
    title = f"{study.name}: final test top-1, mean ± std over {len(study.seeds)} seed(s)"
    figures = {FIGURE_NAME: plot_noise_groups(groups, "top1", title=title) if _is_noise_study(study) else
               plot_groups(groups, "top1", _numeric_axis(study), ylabel="final test top-1 (%)", title=title)}
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


PUBLISHED_PAGES, PUBLISHED_FIGURES = "benchmarks", "figures"
"""Under a docs folder: a study's page and per-run data (NAME.md, NAME.csv), and its figures (NAME-*.png)."""
_OUT_LINE = re.compile(r"run folders under `([^`]+)`")


def published_links(study: Study) -> dict[str, str]:
    """The links a published page uses for the study's figures."""
    return {FIGURE_NAME: f"../{PUBLISHED_FIGURES}/{study.name}-top1.png",
            MEMORISATION_FIGURE: f"../{PUBLISHED_FIGURES}/{study.name}-memorisation.png"}


def publish(study: Study, out: str | Path, docs: str | Path) -> list[Path]:
    """Copy a finished study's results into a docs folder: its per-run data verbatim, its page regenerated from
    that data with the figures' links, and its figures; returns the paths written."""
    out, docs = Path(out), Path(docs)
    source = out / CSV_NAME
    if not source.is_file():
        raise UserInputError(f"{source}: no such file; the study has not written its results yet")
    data = source.read_bytes()
    rows = read_results_csv(study, source)
    pages, figures = docs / PUBLISHED_PAGES, docs / PUBLISHED_FIGURES
    written = {pages / f"{study.name}.csv": data,
               pages / f"{study.name}.md": markdown_text(study, rows, out, published_links(study)).encode("utf-8")}
    for name, link in published_links(study).items():
        if (out / name).is_file():
            written[figures / Path(link).name] = (out / name).read_bytes()
    for path, content in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_file(path, lambda handle, content=content: handle.write(content))
    return list(written)


def published_page_difference(study: Study, docs: str | Path) -> str:
    """'' when docs/benchmarks/NAME.md is exactly the page its committed NAME.csv regenerates, else a unified
    diff (published page first); the run folders named on the page are not needed."""
    pages = Path(docs) / PUBLISHED_PAGES
    page = (pages / f"{study.name}.md").read_text(encoding="utf-8")
    found = _OUT_LINE.search(page)
    out = found.group(1) if found else f"runs/{study.name}"
    rows = read_results_csv(study, pages / f"{study.name}.csv")
    fresh = markdown_text(study, rows, out, published_links(study))
    return "".join(difflib.unified_diff(page.splitlines(True), fresh.splitlines(True), "published", "regenerated"))
