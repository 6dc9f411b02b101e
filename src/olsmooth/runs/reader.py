"""The one reader of a run folder: its configuration, metrics, summary, state, snapshots and soft-label files.

Used by `report`, `study`, `soft-labels`, the HTML report, `eval`/`ensemble` and the benchmarks alike. Malformed
content is a one-line `UserInputError` naming the file (and line); a file a run may lack (summary.json of older
versions, soft labels of a run without OLS) reads as absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import UserInputError
from .layout import (
    CONFIG,
    EPOCH_PLACEHOLDER,
    LAST,
    METRICS,
    SNAPSHOT_GLOB,
    SOFT_LABELS,
    SUMMARY,
    snapshot_epoch,
    soft_labels_epoch,
)

PathLike = Union[str, os.PathLike]
# config.yaml entries a report relies on, with the type each must have
_CONFIG_TYPES = {"method": str, "dataset": str, "seed": int, "epochs": int}


def is_run_folder(folder: PathLike) -> bool:
    """Whether `folder` is a run folder: it holds a config.yaml."""
    return (Path(folder) / CONFIG).is_file()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl, blank lines skipped; malformed lines name the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserInputError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            if not isinstance(record, dict) or "epoch" not in record:
                raise UserInputError(f"{path}:{number}: expected a JSON object with an 'epoch' key")
            records.append(record)
    return records


def metrics_path(run_dir: PathLike) -> Path:
    """A run folder's metrics.jsonl (a file given directly is itself)."""
    path = Path(run_dir)
    return path / METRICS if path.is_dir() else path


def read_metrics(run_dir: PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run folder's metrics.jsonl (or of that file given directly), in order."""
    path = metrics_path(run_dir)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (is {run_dir} a run folder?)")
    records = read_records(path)
    if not records:
        raise UserInputError(f"{path}: no epochs recorded")
    return records


def read_config(run_dir: PathLike) -> dict[str, Any]:
    """A run folder's config.yaml as a mapping; a missing, malformed or non-mapping file is a user error."""
    path = Path(run_dir) / CONFIG
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file (is {run_dir} a run folder?)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise UserInputError(f"{path}: expected a mapping of option: value")
    return config


def read_run_config(run_dir: PathLike) -> dict[str, Any]:
    """A run folder's config.yaml, with the entries a report relies on checked (method, dataset, seed, epochs)."""
    config = read_config(run_dir)
    for key, kind in _CONFIG_TYPES.items():
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (key == "epochs" and value < 1):
            expected = "a string" if kind is str else "an integer" + (" >= 1" if key == "epochs" else "")
            raise UserInputError(f"{Path(run_dir) / CONFIG}: {key} must be {expected}, got {value!r}")
    return config


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; malformed content is a one-line user error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: malformed JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a JSON object")
    return data


def summary_path(run_dir: PathLike) -> Path:
    """A run folder's summary.json."""
    return Path(run_dir) / SUMMARY


def read_summary(run_dir: PathLike) -> dict[str, Any]:
    """summary.json of a run folder, or {} where there is none (runs of older versions)."""
    path = summary_path(run_dir)
    return read_json_object(path) if path.is_file() else {}


@dataclass(frozen=True)
class RunStatus:
    """How far a run folder got: "done" (finished), "partial" (has a last.pt to continue from) or "new"."""

    state: str
    epochs_done: int = 0
    epochs: int | None = None

    def progress(self) -> str:
        """How far it got, in words: the epochs done of those asked for."""
        if self.epochs is None:
            return f"no {CONFIG}"
        return f"{self.epochs_done} of {self.epochs} epochs"


def run_status(run_dir: PathLike) -> RunStatus:
    """Finished means metrics.jsonl holds as many epochs as config.yaml asks for, or summary.json exists."""
    folder = Path(run_dir)
    if not is_run_folder(folder):
        return RunStatus("new")
    epochs = read_run_config(folder)["epochs"]
    metrics = folder / METRICS
    done = len(read_records(metrics)) if metrics.is_file() else 0
    if done >= epochs or summary_path(folder).is_file():
        return RunStatus("done", done, epochs)
    return RunStatus("partial" if (folder / LAST).is_file() else "new", done, epochs)


def snapshot_files(run_dir: PathLike) -> dict[int, Path]:
    """The epoch-NNN.pt snapshots of a run, by epoch."""
    found = {}
    for path in Path(run_dir).glob(SNAPSHOT_GLOB):
        epoch = snapshot_epoch(path.name)
        if epoch is not None:
            found[epoch] = path
    return dict(sorted(found.items()))


def _soft_label_matrices(run_dir: PathLike) -> dict[int, Path]:
    folder = Path(run_dir) / SOFT_LABELS
    found = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        epoch = soft_labels_epoch(path.name)
        if epoch is not None:
            found[epoch] = path
    return dict(sorted(found.items()))


def has_soft_labels(run_dir: PathLike) -> bool:
    """Whether the run folder holds at least one saved soft-label matrix (an OLS run)."""
    return bool(_soft_label_matrices(run_dir))


def soft_label_files(run_dir: PathLike) -> dict[int, Path]:
    """Epoch -> the soft-label matrix a run folder saved for it (soft_labels/epoch-NNN.npy, or .npz for top-k
    rows), in epoch order; none is a user error."""
    if not Path(run_dir).is_dir():
        raise UserInputError(f"{run_dir}: no such run folder")
    files = _soft_label_matrices(run_dir)
    if not files:
        raise UserInputError(f"{run_dir} has no {SOFT_LABELS}/{EPOCH_PLACEHOLDER}.npy (soft labels are saved by "
                             f"OLS runs)")
    return files
