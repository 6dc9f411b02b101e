"""A run folder's results/: what `eval` and `attack` keep there with --save-to-run, written and read here only.

The rule every reader follows (`olsmooth report --html`, `attack`'s gradient-masking check, the benchmarks):
each `results/*.json` is one result, a JSON object whose `command` names what wrote it; a file that is not a JSON
object (malformed, truncated, a list) is a one-line error naming it, never skipped, since a result dropped in
silence would change a table or hide a warning. Results of other commands are the caller's to pass over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..fileio import atomic_write_text
from .layout import CONFIG, RESULTS
from .reader import PathLike, is_run_folder, read_json_object


@dataclass(frozen=True)
class SavedResult:
    """One results/*.json: the file and its JSON object."""

    path: Path
    data: dict[str, Any]

    @property
    def command(self) -> str:
        return str(self.data.get("command", ""))


def results_folder(checkpoint: PathLike, required: bool) -> Path | None:
    """The results/ folder of the run folder a checkpoint lies in; outside one, None, or with `required` (the
    --save-to-run flag) a one-line user error."""
    folder = Path(checkpoint).parent
    if is_run_folder(folder):
        return folder / RESULTS
    if required:
        raise UserInputError(f"--save-to-run: {folder}, where {Path(checkpoint).name} lies, is not a run folder "
                             f"(it has no {CONFIG})")
    return None


def write_result(folder: Path, name: str, record: dict[str, Any]) -> Path:
    """Write one result (`record`, with its `command`) as `folder/name` atomically; return its path."""
    path = folder / name
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_results(run_dir: PathLike, command: str | None = None) -> list[SavedResult]:
    """The results/*.json of a run folder in name order (those of `command` only, when given), under the rule
    above."""
    folder = Path(run_dir) / RESULTS
    found = [SavedResult(path, read_json_object(path)) for path in sorted(folder.glob("*.json"))] \
        if folder.is_dir() else []
    return [result for result in found if command is None or result.command == command]
