"""A study's plan: every cell and seed with its run folder `OUT/CELL/seed-N` and how far that run got.

A folder that holds something else than the run the study asks for is an error before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine.config import TrainConfig, input_files
from ..engine.resolve import check_names, resolve, upgrade_subset_draw
from ..errors import UserInputError
from ..option_roles import NON_EXPERIMENT_OPTIONS
from ..runs.layout import CONFIG, indices_name
from ..runs.reader import RunStatus, read_run_config, run_status
from .spec import Cell, Study


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


def _check_startable(run: PlannedRun) -> None:
    """A run still to train must be able to start: its dataset, model and label noise (`check_names`), and, for a
    new run, the files its options name (a partial run resumes from its last.pt and reads none of them). Found
    here, a typo in the last cell stops the study before its first run, not hours into it."""
    try:
        check_names(run.config)
    except UserInputError as err:
        raise UserInputError(f"{run.label}: {err}") from None
    if run.status.state != "new":
        return
    missing = [f"{option} {path}" for option, path in input_files(run.config).items() if not Path(path).is_file()]
    if missing:
        raise UserInputError(f"{run.label}: no such file: {'; '.join(missing)}")


def plan_runs(study: Study, out: str | Path) -> list[PlannedRun]:
    """Every cell and seed (seed by seed, so a stopped study has whole seeds), with the state of its folder.

    Reads only; a folder that is not a run of this study is an error, and so is a run still to train that could
    not start (`_check_startable`)."""
    plan = []
    for seed in study.seeds:
        for cell in study.cells:
            folder = Path(out) / cell.name / f"seed-{seed}"
            if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG).is_file():
                raise UserInputError(f"{folder} exists and is not a run folder; move it away or choose another --out")
            run = PlannedRun(cell, seed, folder, study.config(cell, seed, folder), run_status(folder))
            if run.status.state != "new":
                _check_existing(run)
            if run.status.state != "done":
                _check_startable(run)
            plan.append(run)
    return plan


def describe_plan(plan: Sequence[PlannedRun]) -> list[str]:
    """One line per run: its state and progress (what `--dry-run` prints)."""
    lines = []
    for run in plan:
        progress = f" ({run.status.epochs_done} of {run.status.epochs} epochs)" if run.status.epochs else ""
        lines.append(f"{run.status.state:<8} {run.folder}{progress}")
    return lines
