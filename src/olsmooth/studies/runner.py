"""Running a study: its runs one after another through the public trainer API, then its results files.

A rerun skips finished runs and continues an interrupted one from its last.pt.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from ..engine.trainer import Trainer, load_resume
from ..runs.layout import CONFIG
from .plan import PlannedRun, plan_runs
from .results import write_results
from .spec import Study

Log = Callable[[str], None]


def _duration(seconds: float) -> str:
    """3.2s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


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
