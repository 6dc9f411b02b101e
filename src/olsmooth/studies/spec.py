"""A study file: a grid of training runs (every combination of the axes' values, times the seeds) from one YAML file.

`load_study` reads and checks it whole before anything runs: every key, every option name, every cell's
configuration (defaults < base < the cell's options), the seeds and the baselines.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..analysis.report import option_text
from ..engine.config import (
    FIELDS,
    OPTIONS,
    TrainConfig,
    build_config,
    load_recipe,
    read_yaml,
    resolve_recipe_path,
)
from ..errors import UserInputError
from ..option_roles import LOSS_OPTION_ALIASES, SET_BY_STUDY

STUDY_KEYS = ("description", "base", "grid", "seeds", "baselines")
DEFAULT_SEEDS = (0,)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")


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

    def option_columns(self) -> list[str]:
        """The options some cell shows (`shown_options`), in the grid's order: the option columns of per-run tables."""
        return list(dict.fromkeys(k for cell in self.cells for k in self.shown_options(cell)))

    def config(self, cell: Cell, seed: int, folder: Path) -> TrainConfig:
        """The run's configuration: defaults < base < cell < {seed, out}."""
        return dataclasses.replace(cell.config, seed=seed, out=str(folder))


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
