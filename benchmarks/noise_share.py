"""Fill the `noise_source_mass` column of a published noisy study's per-run data from the study's own draws.

`noise_source_mass` (the true share of a row's samples that come from other classes, 1 - P(clean = y | noisy = y)
averaged over y) is what each OLS run with label noise records beside `ols_noise_mass`; results.csv has carried
it since the noisy Fashion-MNIST study was published. The labels are a function of the data, the run's options and
its seed, so this script draws them again exactly as each run's trainer did (same training subset, validation
split and noise seed, the saved indices' rule) and writes the figure into the rows that have `ols_noise_mass`:

    .venv/bin/python -m benchmarks.noise_share docs/benchmarks/noisy-fashion-mnist.csv   # needs Fashion-MNIST
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

from olsmooth.engine.trainer import Trainer
from olsmooth.fileio import atomic_write_text
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.results import csv_text, read_results_csv
from olsmooth.studies.spec import load_study


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="a published results CSV, docs/benchmarks/STUDY.csv")
    parser.add_argument("--study", help="the study file (default: the shipped study named like the CSV)")
    args = parser.parse_args(argv)
    study = load_study(args.study or args.csv.stem)
    rows = read_results_csv(study, args.csv)
    shares: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        runs = {(run.cell.name, run.seed): run for run in plan_runs(study, scratch)}
        for row in rows:
            if row.get("ols_noise_mass") is None:
                continue
            run = runs[row["cell"], row["seed"]]
            key = (str(run.config.noise), run.seed)
            if key not in shares:
                cfg = dataclasses.replace(run.config, out=str(Path(scratch) / f"draw-{len(shares)}"))
                trainer = Trainer(cfg)
                shares[key] = trainer.noise.noise_source_mass(trainer.bundle.num_classes)
                print(f"{key[0]} seed {key[1]}: noise_source_mass {shares[key]:.6f}")
            row["noise_source_mass"] = shares[key]
    atomic_write_text(args.csv, csv_text(study, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
