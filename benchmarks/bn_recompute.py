"""Does a fine-tuned network's test top-1 change when its batch-norm statistics are recomputed on its training data?

The check behind the family page's reading of the 32 px transfer study (fine-tuning beats scratch by little
there): if the running statistics that fine-tuning left were stale, evaluating with statistics recomputed over the
training images (evaluation transforms, one pass, the average of the batches' statistics rather than a running one)
would change the test top-1. For every run of one cell of a study (default: the CE cell of
family-transfer-fashion-mnist, seeds 0-2; trained here through the study runner when missing), the test top-1 of
its last epoch with the running statistics and with recomputed ones. Writes OUT/bn-recompute.{csv,json,md};
--publish DOCS copies the CSV to DOCS/benchmarks/STUDY-bn.csv, which the family page quotes (the suite checks
every quoted figure against it).

    python -m benchmarks.bn_recompute [--quick] [--study NAME] [--cell CELL] [--publish DOCS]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from olsmooth.engine.evaluate import evaluate
from olsmooth.engine.trainer import Trainer, load_resume
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_bytes, atomic_write_text
from olsmooth.studies.plan import PlannedRun, plan_runs
from olsmooth.studies.results import exact_csv_text
from olsmooth.studies.runner import train_run
from olsmooth.studies.spec import load_study

from .common import (
    benchmark_parser,
    command_line,
    exit_status,
    machine_info,
    parse_benchmark_args,
    provenance_lines,
    published_paths,
    write_results,
)

MODULE = "benchmarks.bn_recompute"
STUDY, QUICK_STUDY, CELL = "family-transfer-fashion-mnist", "digits-quick", "method=ce"
NAME = "bn-recompute"
CSV_COLUMNS = ("cell", "seed", "folder", "top1_running", "top1_recomputed", "difference")
"""Per run: test top-1 (%) at the last epoch with the running batch-norm statistics, with recomputed ones, and
recomputed − running."""


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = benchmark_parser(MODULE, __doc__, out="benchmarks/out/bn-recompute", threads=None,
                              quick=f"the CE runs of the {QUICK_STUDY} study (digits, small_cnn): a smoke test",
                              device="cpu | cuda | cuda:N")
    parser.add_argument("--study", help=f"study file or shipped name (default {STUDY})")
    parser.add_argument("--cell", default=CELL, help=f"the cell whose runs are checked (default {CELL})")
    parser.add_argument("--runs", help="where the study's run folders are (default OUT/STUDY)")
    parser.add_argument("--publish", metavar="DOCS", help="then copy the CSV to DOCS/benchmarks/STUDY-bn.csv")
    args = parse_benchmark_args(parser, argv)
    if args.quick and args.study:
        parser.error(f"--quick runs the {QUICK_STUDY} study; give --quick or --study, not both")
    args.study = QUICK_STUDY if args.quick else args.study or STUDY
    return args


def recompute_batch_norm(model: nn.Module, loader: DataLoader, device: torch.device) -> int:
    """Replace every batch-norm layer's running statistics by their average over `loader`'s batches (torch's
    `update_bn`: momentum None, the cumulative average), leave the model in eval mode; returns the number of layers
    reset."""
    layers = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    update_bn(loader, model, device)
    model.eval()
    return layers


def check_run(run: PlannedRun, device: str | None) -> dict[str, Any]:
    """The run's last-epoch test top-1 with its running statistics and with recomputed ones."""
    cfg, checkpoint = load_resume(run.folder, {"device": device} if device else {})
    trainer = Trainer(cfg, checkpoint, log=lambda _line: None)  # the run's data and weights; nothing is written
    model = trainer.model.eval()
    running = evaluate([model], trainer.test_loader, trainer.dist).metrics["top1"]
    train = DataLoader(trainer.plain_training_set(), batch_size=trainer.cfg.batch_size * 2)
    if not recompute_batch_norm(model, train, trainer.dist.device):
        raise UserInputError(f"{run.label}: the network has no batch-norm layer")
    recomputed = evaluate([model], trainer.test_loader, trainer.dist).metrics["top1"]
    return {"cell": run.cell.name, "seed": run.seed, "folder": f"{run.cell.name}/{run.folder.name}",
            "top1_running": float(running), "top1_recomputed": float(recomputed),
            "difference": float(recomputed - running)}


def run(args: Any, argv: Sequence[str] | None) -> int:
    study = load_study(args.study)
    runs_root = Path(args.runs) if args.runs else Path(args.out) / study.name
    plan = [run for run in plan_runs(study, runs_root) if run.cell.name == args.cell]
    if not plan:
        raise UserInputError(f"study {study.name} has no cell {args.cell!r}; its cells: "
                             f"{', '.join(c.name for c in study.cells)}")
    rows = []
    for planned in plan:
        if planned.status.state != "done":
            print(f"{planned.label}: {train_run(planned, lambda _line: None)}")
        rows.append(check_run(planned, args.device))
        print(f"{planned.label}: top-1 {rows[-1]['top1_running']:.2f} with the running statistics, "
              f"{rows[-1]['top1_recomputed']:.2f} recomputed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{NAME}.csv"
    atomic_write_text(data, exact_csv_text(CSV_COLUMNS, rows))
    info, command = machine_info(), command_line(argv, MODULE)
    differences = [r["difference"] for r in rows]
    spread = f" ± {statistics.stdev(differences):.2f}" if len(differences) > 1 else ""
    page = "\n".join([f"# Batch-norm statistics recomputed: {study.name}, {args.cell}\n",
                      *(f"{line}\n" for line in provenance_lines(info, command)),
                      f"Recomputed − running test top-1: {statistics.mean(differences):+.2f}{spread} points over "
                      f"{len(rows)} run(s); per run in {data.name}.\n"])
    json_path, md_path = write_results(out, NAME, {"machine": info, "command": command, "rows": rows}, page)
    print(f"wrote {data}, {json_path} and {md_path}")
    if args.publish:
        target = published_paths(args.publish, f"{study.name}-bn")[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data.read_bytes())
        print(f"published {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train what is missing, check each run; bad input is one line and exit status 2."""
    args = parse_args(argv)
    return exit_status(MODULE, lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
