"""Calibration and adversarial robustness of a finished study's runs: temperature scaling, white-box FGSM, PGD,
APGD-CE and APGD-DLR, and PGD transferred from the baseline (cross-entropy) model of the same seed
(docs/results/robustness-fashion-mnist.md).

Trains the study (`olsmooth study`, finished runs skipped), then evaluates and attacks each run's last.pt with the
engine functions `olsmooth eval --save-to-run` and `olsmooth attack --save-to-run` call (results already in a run's
`results/` are reused), and writes OUT/robustness-STUDY.csv (one row per run and seed: the cell's options, the
evaluation before and after temperature scaling, and per eps the clean, FGSM, PGD, APGD-CE, APGD-DLR and transfer
top-1), the page built from that CSV alone (OUT/robustness-STUDY.md: mean ± sample std over seeds, paired tests
against the baselines with Holm-corrected p and the resolvable difference) and the HTML report of the runs.
--from-csv prints the page from a CSV; --publish DOCS copies the CSV and its page into DOCS/benchmarks.

    python -m benchmarks.robustness [--quick] [--study NAME] [--n N] [--eps E ...] [--steps S] [--publish DOCS]
    python -m benchmarks.robustness --from-csv CSV [--study NAME] [--publish DOCS]
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from olsmooth.analysis.html_report import write_html_report
from olsmooth.analysis.metrics import HEADLINE_KEYS
from olsmooth.analysis.report import Group, load_finished_runs, markdown_report, option_text
from olsmooth.engine.attack import attack_settings, result_name, run_attack
from olsmooth.engine.inference import evaluate_calibrated, save_evaluation
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_text
from olsmooth.runs.checkpoints import checkpoint_class_names
from olsmooth.runs.layout import LAST, eval_result_name
from olsmooth.runs.results import read_results, results_folder
from olsmooth.studies.plan import PlannedRun, plan_runs
from olsmooth.studies.results import exact_csv_text, read_exact_csv
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import Study, baseline_pairs, load_study, resolve_study_path

from .common import (
    benchmark_parser,
    command_line,
    exit_status,
    machine_info,
    parse_benchmark_args,
    provenance_lines,
    provenance_of,
    publish_page,
    published_difference,
)

MODULE = "benchmarks.robustness"
STUDY, QUICK_STUDY = "robustness-fashion-mnist", "digits-quick"
ATTACKED = ("pgd", "apgd-ce", "apgd-dlr")  # white-box; FGSM runs alongside PGD (its figure is in the PGD record)
SCALED = tuple(f"{key}_ts" for key in HEADLINE_KEYS[1:])
"""NLL and ECE after temperature scaling."""
EVAL_KEYS = (*HEADLINE_KEYS, "temperature", *SCALED)
ROBUST_KEYS = ("clean_top1", "fgsm_top1", *(f"{attack}_top1" for attack in ATTACKED), "transfer_top1")
"""Per eps, in % of the attacked images: clean top-1, then robust top-1 under each attack (transfer: PGD crafted on
the baseline model of the same seed; empty for a baseline's own rows)."""
INT_KEYS = ("seed", "n", "steps")
EPS_MARK = "@"
"""A robust column is KEY@EPS, e.g. pgd_top1@8/255."""


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = benchmark_parser(MODULE, __doc__, quick=f"the {QUICK_STUDY} study, 100 samples: a smoke test",
                              device="cpu | cuda | cuda:N for training and attacks", threads=1)
    parser.add_argument("--study", help=f"study file or shipped name (default {STUDY})")
    parser.add_argument("--runs", help="where the study's run folders go (default OUT/robustness/STUDY)")
    parser.add_argument("--n", type=int, help="attack the first N test samples (default 1000; 100 with --quick)")
    parser.add_argument("--eps", nargs="+", default=["2/255", "8/255"], help="linf budgets in pixel space")
    parser.add_argument("--steps", type=int, default=10, help="PGD and APGD iterations (default 10)")
    parser.add_argument("--from-csv", metavar="CSV", help="print the page regenerated from a robustness CSV (and "
                        "with --publish publish it) instead of evaluating; the Machine and Command lines come from "
                        "the page of the same name beside it, when there is one")
    parser.add_argument("--publish", metavar="DOCS", help="then copy the CSV and the page regenerated from it into "
                        "a docs folder: DOCS/benchmarks/STUDY.{csv,md}")
    args = parse_benchmark_args(parser, argv)
    if args.quick and args.study:
        parser.error(f"--quick runs the {QUICK_STUDY} study; give --quick or --study, not both")
    args.study = QUICK_STUDY if args.quick else args.study or STUDY
    if args.n is None:
        args.n = 100 if args.quick else 1000
    return args


# -- evaluating and attacking the runs -----------------------------------------------------------------------------
def evaluate_run(folder: Path, surrogate: Path | None, args: Any) -> dict[Any, dict[str, Any]]:
    """Calibration and attack results of one run ('eval', and (attack, eps) for each attack), from its results/
    folder, computing and saving there what is missing."""
    last = folder / LAST
    results = results_folder(last, required=True)
    saved = {result.path.name: result.data for result in read_results(folder)}
    record: dict[Any, dict[str, Any]] = {}
    record["eval"] = (saved.get(eval_result_name(last.stem)) or
                      save_evaluation(results, last, evaluate_calibrated([last], device=args.device)))
    for eps in args.eps:
        for attack in (*ATTACKED, *(("transfer",) if surrogate else ())):
            transfer = attack == "transfer"
            settings = attack_settings("pgd" if transfer else attack, "linf", eps, args.steps)
            saved_attack = saved.get(result_name(settings, transfer))
            if saved_attack is not None and (saved_attack["n"], saved_attack["steps"]) == (args.n, args.steps):
                record[(attack, eps)] = saved_attack  # the same attack at the same budget: reused
                continue
            report = run_attack(last, settings, surrogate if transfer else None, n=args.n, device=args.device,
                                save_to_run=True)
            for line in report.warnings:
                print(f"python -m {MODULE}: warning: {folder}: {line}", file=sys.stderr)
            record[(attack, eps)] = report.record
    return record


def csv_columns(study: Study, eps: Sequence[str]) -> list[str]:
    """cell, seed, folder, the cell's options, where T was fitted, EVAL_KEYS, the images attacked and the steps,
    then ROBUST_KEYS for each eps."""
    return ["cell", "seed", "folder", *study.option_columns(), "calibration_data", *EVAL_KEYS, *INT_KEYS[1:],
            *(f"{key}{EPS_MARK}{e}" for e in eps for key in ROBUST_KEYS)]


def run_row(study: Study, run: PlannedRun, record: Mapping[Any, Mapping[str, Any]], eps: Sequence[str]
            ) -> dict[str, Any]:
    """One run's CSV row from its eval and attack results."""
    evaluation, first = record["eval"], record[("pgd", eps[0])]
    shown = study.shown_options(run.cell)
    row: dict[str, Any] = {"cell": run.cell.name, "seed": run.seed, "folder": f"{run.cell.name}/{run.folder.name}",
                           **{k: option_text(shown.get(k)) for k in study.option_columns()},
                           "calibration_data": evaluation["calibration_data"],
                           **{k: float(evaluation[k]) for k in EVAL_KEYS}, "n": first["n"], "steps": first["steps"]}
    for e in eps:
        pgd, transfer = record[("pgd", e)], record.get(("transfer", e))
        figures = {"clean_top1": pgd["clean_top1"], "fgsm_top1": pgd["fgsm_top1"],
                   **{f"{attack}_top1": record[(attack, e)]["robust_top1"] for attack in ATTACKED},
                   "transfer_top1": None if transfer is None else transfer["robust_top1"]}
        row |= {f"{key}{EPS_MARK}{e}": None if value is None else float(value) for key, value in figures.items()}
    return row


def csv_text(study: Study, rows: Sequence[Mapping[str, Any]], eps: Sequence[str]) -> str:
    """The robustness CSV: `csv_columns`, read back exactly (`exact_csv_text`)."""
    return exact_csv_text(csv_columns(study, eps), rows)


def _eps_in_header(path: Path) -> list[str]:
    """The eps budgets a robustness CSV's header names (its KEY@EPS columns), in order; none when the file cannot
    be read (the reader then says why)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return list(dict.fromkeys(column.partition(EPS_MARK)[2] for column in header if EPS_MARK in column))


def read_csv(study: Study, path: str | Path) -> list[dict[str, Any]]:
    """The rows of a robustness CSV (as `csv_text` writes them), checked against the study: its columns, the
    study's cells, each cell and seed once, a figure in every entry but a baseline's transfer; numbers parsed back
    exactly."""
    path = Path(path)
    eps = _eps_in_header(path)
    robust = [f"{key}{EPS_MARK}{e}" for e in eps for key in ROBUST_KEYS]
    rows = read_exact_csv(study, path, csv_columns(study, eps), INT_KEYS, [*EVAL_KEYS, *robust], blank_is_none=True)
    if not rows or not eps:
        raise UserInputError(f"{path}: no rows" if eps else f"{path}: no KEY{EPS_MARK}EPS columns")
    pairs = [(row["cell"], row["seed"]) for row in rows]
    if len(set(pairs)) != len(pairs):
        raise UserInputError(f"{path}: a cell and seed appear twice")
    for number, row in enumerate(rows, start=2):
        empty = [k for k in (*INT_KEYS, *EVAL_KEYS, *robust) if row[k] is None and not k.startswith("transfer_")]
        if empty:
            raise UserInputError(f"{path}:{number}: no figure for {', '.join(empty)}")
    return rows


# -- the page, from the CSV's rows alone ---------------------------------------------------------------------------
def _groups(study: Study, rows: Sequence[Mapping[str, Any]], figures_of: Any) -> list[Group]:
    """One group per cell (its options), each row's figures (`figures_of(row)`) under its seed."""
    groups = {cell.name: Group(dict(cell.options)) for cell in study.cells}
    for row in rows:
        groups[row["cell"]].add(row["seed"], figures_of(row), Path(row["folder"]))
    return list(groups.values())


def _one(rows: Sequence[Mapping[str, Any]], key: str) -> Any:
    """The value every row has for `key`; the page describes one setting, so rows that differ are an error."""
    values = sorted({row[key] for row in rows}, key=str)
    if len(values) != 1:
        raise UserInputError(f"the rows differ in {key} ({', '.join(map(str, values))}); the page describes one")
    return values[0]


def page_text(study: Study, rows: Sequence[Mapping[str, Any]], provenance: Sequence[str] = ()) -> str:
    """The page, from the CSV's rows alone (and the study's cells, description and baselines): calibration per
    cell, then per eps robust top-1 per attack with paired tests against the baselines, and the transfer table.
    `provenance` lines (Machine, Command) go under the title."""
    pairs = baseline_pairs(study)
    eps = list(dict.fromkeys(k.partition(EPS_MARK)[2] for k in rows[0] if EPS_MARK in k))
    n, steps = _one(rows, "n"), _one(rows, "steps")
    lines = [f"# Robustness: {study.name}\n", *(f"{line}\n" for line in provenance)]
    if study.description:
        lines.append(study.description.strip() + "\n")
    lines += ["Mean ± sample std over seeds. Per-run figures: the CSV of the same name, one row per run and seed; "
              f"`python -m {MODULE} --from-csv CSV` prints this page from it.\n",
              "## Calibration before and after temperature scaling\n",
              f"Temperature fitted on held-out data ({_one(rows, 'calibration_data')}), never on the images it is "
              "reported on; ECE in %, NLL in nats.\n",
              markdown_report(_groups(study, rows, lambda row: {k: row[k] for k in EVAL_KEYS}), EVAL_KEYS, pairs,
                              tested_keys=(*HEADLINE_KEYS, *SCALED))]
    baselines = ", ".join(dict.fromkeys(study.cells[b].name for _, b in pairs)) or "none"
    for e in eps:
        def figures(row: Mapping[str, Any], e: str = e) -> dict[str, float]:
            found = {key: row[f"{key}{EPS_MARK}{e}"] for key in ROBUST_KEYS}
            return {key: value for key, value in found.items() if value is not None}
        keys = list(ROBUST_KEYS[:-1])
        attacked = _groups(study, rows, figures)
        lines += [f"\n## Robust top-1 at eps {e} (linf, pixel space), first {n} test images\n",
                  f"White-box FGSM, PGD, APGD-CE and APGD-DLR ({steps} steps; APGD-DLR's loss is invariant to the "
                  "logits' scale) on each model; top-1 in % (a sample counts when it is right both clean and "
                  "attacked).\n",
                  markdown_report(attacked, keys, pairs, tested_keys=keys[1:])]
        transferred = [g for g in attacked if g.runs and all("transfer_top1" in f for f in g.runs.values())]
        if transferred:
            lines += [f"\nPGD crafted on the baseline model ({baselines}) of the same seed and transferred "
                      f"(eps {e}):\n", markdown_report(transferred, ["clean_top1", "transfer_top1", "pgd_top1"], [])]
    lines.append(f"\nHTML report of all runs: `python -m {MODULE}` writes OUT/robustness-STUDY.html "
                 "(`olsmooth report RUN... --html FILE`).\n")
    return "\n".join(lines)


def publish(study: Study, source: Path, docs: str | Path) -> list[Path]:
    """Copy a robustness CSV verbatim into DOCS/benchmarks/STUDY.csv and write the page regenerated from it (with
    the Machine and Command lines of the page beside the CSV)."""
    rows = read_csv(study, source)
    return publish_page(source, docs, study.name, lambda lines: page_text(study, rows, lines))


def published_page_difference(docs: str | Path, study: Study | None = None) -> str:
    """'' when DOCS/benchmarks/STUDY.md is exactly the page its committed STUDY.csv regenerates (its Machine and
    Command lines taken from the page), else a unified diff (published page first)."""
    study = study or load_study(resolve_study_path(STUDY))
    return published_difference(docs, study.name, lambda data, lines: page_text(study, read_csv(study, data), lines))


# -- the command ---------------------------------------------------------------------------------------------------
def note(text: str) -> None:
    print(f"python -m {MODULE}: note: {text}", file=sys.stderr)


def from_csv(args: Any) -> int:
    """Print the page a CSV regenerates, and publish it with --publish."""
    study, source = load_study(args.study), Path(args.from_csv)
    print(page_text(study, read_csv(study, source), provenance_of(source.with_suffix(".md"))), end="")
    if args.publish:
        print("published " + ", ".join(map(str, publish(study, source, args.publish))), file=sys.stderr)
    return 0


def run(args: Any, argv: Sequence[str] | None) -> int:
    if args.from_csv:
        return from_csv(args)
    study = load_study(args.study)
    eps = [attack_settings("pgd", "linf", e).eps_text for e in args.eps]  # canonical, checked before any work
    args.eps = eps
    runs = Path(args.runs or Path(args.out) / "robustness" / study.name)
    run_study(study, runs, log=print)
    plan = plan_runs(study, runs)
    baseline: dict[int, int] = {}  # a cell's first baseline cell: its runs craft the transfer attack
    for cell, base in baseline_pairs(study):
        baseline.setdefault(cell, base)
    by_cell = {(run.cell.name, run.seed): run.folder for run in plan}
    rows = []
    for run in plan:
        index = study.cells.index(run.cell)
        surrogate = by_cell[study.cells[baseline[index]].name, run.seed] / LAST if index in baseline else None
        print(f"evaluating and attacking {run.folder}")
        rows.append(run_row(study, run, evaluate_run(run.folder, surrogate, args), eps))
    out = Path(args.out)
    data_path, page_path, html = (out / f"robustness-{study.name}.{suffix}" for suffix in ("csv", "md", "html"))
    atomic_write_text(data_path, csv_text(study, rows, eps))
    text = page_text(study, read_csv(study, data_path), provenance_lines(machine_info(), command_line(argv, MODULE)))
    atomic_write_text(page_path, text)
    write_html_report(html, load_finished_runs([run.folder for run in plan], note=note), "last",
                      checkpoint_class_names, note=note)
    print(text)
    print(f"wrote {data_path}, {page_path} and {html}")
    if args.publish:
        print("published " + ", ".join(map(str, publish(study, data_path, args.publish))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate, attack and report; bad input (a study file, an option value) is one line and exit status 2."""
    args = parse_args(argv)
    return exit_status(MODULE, lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
