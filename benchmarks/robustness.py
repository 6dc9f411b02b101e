"""Calibration and adversarial robustness of a finished study's runs: temperature scaling, white-box FGSM, PGD,
APGD-CE and APGD-DLR, and PGD transferred from the cross-entropy model of the same seed
(docs/results/robustness-fashion-mnist.md).

Trains the study (`olsmooth study`, finished runs skipped), then runs `olsmooth eval --save-to-run` and
`olsmooth attack --save-to-run` on each run's last.pt (results already in a run's `results/` are reused), and
writes the tables, mean ± sample std over seeds with paired t-tests against cross-entropy, and the HTML report.

    python -m benchmarks.robustness [--quick] [--study NAME] [--n N] [--eps E ...] [--steps S]
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olsmooth.analysis.report import Group, markdown_report
from olsmooth.cli import main as olsmooth
from olsmooth.engine.attack import attack_settings, result_name
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_text
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import load_study

from .common import benchmark_parser, command_line, machine_info, parse_benchmark_args, report_header

MODULE = "benchmarks.robustness"
WHITE_BOX = ("pgd", "apgd-ce", "apgd-dlr")  # FGSM runs alongside PGD (its figure is in the PGD record)
EVAL_KEYS = ("top1", "nll", "ece", "temperature", "nll_ts", "ece_ts")


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = benchmark_parser(MODULE, __doc__, quick="the digits study, 100 samples: a smoke test",
                              device="cpu | cuda | cuda:N for training and attacks", threads=1)
    parser.add_argument("--study", default="robustness-fashion-mnist", help="study file or shipped name")
    parser.add_argument("--runs", help="where the study's run folders go (default OUT/STUDY)")
    parser.add_argument("--n", type=int, help="attack the first N test samples (default 1000; 100 with --quick)")
    parser.add_argument("--eps", nargs="+", default=["2/255", "8/255"], help="linf budgets in pixel space")
    parser.add_argument("--steps", type=int, default=10, help="PGD and APGD iterations (default 10)")
    parser.add_argument("--markdown", help="also write the page here (e.g. docs/results/robustness-fashion-mnist.md)")
    args = parse_benchmark_args(parser, argv)
    if args.quick:
        args.study = "digits-quick"
    if args.n is None:
        args.n = 100 if args.quick else 1000
    return args


def quiet(argv: list[str]) -> dict[str, Any]:
    """Run an olsmooth command in this process; its --json output, parsed (a failure is a one-line error)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = olsmooth(argv)
    if code != 0:
        raise UserInputError(f"olsmooth {' '.join(argv)} exited with {code}")
    return json.loads(out.getvalue())


def evaluate_run(folder: Path, surrogate: Path | None, args: Any) -> dict[str, Any]:
    """Calibration and attack results of one run, from its results/ folder, computing what is missing."""
    last, results = folder / "last.pt", folder / "results"
    device = ["--device", args.device] if args.device else []
    record: dict[str, Any] = {}
    saved = results / "eval-last.json"
    record["eval"] = (json.loads(saved.read_text()) if saved.is_file() else
                      quiet(["eval", "--checkpoint", str(last), "--json", "--save-to-run", *device]))
    for eps in args.eps:
        for attack in (*WHITE_BOX, *(("transfer",) if surrogate else ())):
            name = "pgd" if attack == "transfer" else attack
            path = results / result_name(attack_settings(name, "linf", eps, args.steps), attack == "transfer")
            saved = json.loads(path.read_text()) if path.is_file() else None
            if saved is not None and (saved["n"], saved["steps"]) == (args.n, args.steps):
                record[(attack, eps)] = saved  # the same attack at the same budget: reused
                continue
            argv = ["attack", "--checkpoint", str(last), "--attack", name, "--norm", "linf", "--eps", eps,
                    "--n", str(args.n), "--steps", str(args.steps), "--json", "--save-to-run", *device]
            if attack == "transfer":
                argv += ["--surrogate", str(surrogate)]
            record[(attack, eps)] = quiet(argv)
    return record


def tables(study: Any, plan: Sequence[Any], records: dict[Path, dict[str, Any]], args: Any) -> list[str]:
    """Markdown: calibration per cell, then robust top-1 per attack and eps, each with paired tests against CE."""
    baseline = [i for i, cell in enumerate(study.cells) if cell.options.get("method") == "ce"]
    pairs = [(i, baseline[0]) for i in range(len(study.cells)) if baseline and i != baseline[0]]

    def groups(figures_of: Any) -> list[Group]:
        found = [Group(dict(cell.options)) for cell in study.cells]
        for run in plan:
            figures = figures_of(records[run.folder], run)
            if figures is not None:
                found[study.cells.index(run.cell)].add(run.seed, figures, run.folder)
        return found

    calibration = groups(lambda r, _run: {k: float(r["eval"][k]) for k in EVAL_KEYS})
    where = records[plan[0].folder]["eval"]["calibration_data"]
    sections = ["## Calibration before and after temperature scaling\n",
                f"Temperature fitted on held-out data ({where}), never on the images it is reported on; ECE in %, "
                "NLL in nats.\n",
                markdown_report(calibration, EVAL_KEYS, pairs, tested_keys=("top1", "nll", "ece", "nll_ts", "ece_ts"))]
    for eps in args.eps:
        def robust(record: dict[str, Any], run: Any, eps: str = eps) -> dict[str, float] | None:
            pgd = record[("pgd", eps)]
            values = {"clean_top1": float(pgd["clean_top1"]), "fgsm_top1": float(pgd["fgsm_top1"])}
            for attack in (*WHITE_BOX, "transfer"):
                if (attack, eps) in record:
                    values[f"{attack}_top1"] = float(record[(attack, eps)]["robust_top1"])
            return values
        keys = ["clean_top1", "fgsm_top1", *(f"{a}_top1" for a in WHITE_BOX)]
        attacked = groups(robust)
        sections += [f"\n## Robust top-1 at eps {eps} (linf, pixel space), first {args.n} test images\n",
                     "White-box FGSM, PGD, APGD-CE and APGD-DLR (its loss is invariant to the logits' scale) on "
                     "each model; top-1 in % (a sample counts when it is right both clean and attacked).\n",
                     markdown_report(attacked, keys, pairs, tested_keys=keys[1:])]
        transferred = [g for g in attacked if all("transfer_top1" in f for f in g.runs.values()) and g.runs]
        if transferred:
            sections += [f"\nPGD crafted on the cross-entropy model of the same seed and transferred (eps {eps}):\n",
                         markdown_report(transferred, ["clean_top1", "transfer_top1", "pgd_top1"], [])]
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    study = load_study(args.study)
    runs = Path(args.runs or Path(args.out) / "robustness" / study.name)
    run_study(study, runs, log=print)
    plan = plan_runs(study, runs)
    ce = {run.seed: run.folder / "last.pt" for run in plan if run.cell.options.get("method") == "ce"}
    records = {}
    for run in plan:
        surrogate = None if run.cell.options.get("method") == "ce" else ce.get(run.seed)
        print(f"evaluating and attacking {run.folder}")
        records[run.folder] = evaluate_run(run.folder, surrogate, args)
    machine = machine_info()
    payload = {"command": command_line(argv, MODULE), "machine": machine, "study": study.name, "runs": str(runs),
               "load_average_1min_end": machine.get("load_average_1min")}
    lines = [*report_header(f"Robustness: {study.name}", payload), "", *tables(study, plan, records, args)]
    html = Path(args.out) / f"robustness-{study.name}.html"
    olsmooth(["report", *(str(run.folder) for run in plan), "--html", str(html)])
    lines.append(f"\nHTML report of all runs: `{html}` (`olsmooth report RUN... --html FILE`).\n")
    text = "\n".join(lines)
    for target in filter(None, (Path(args.out) / f"robustness-{study.name}.md", args.markdown)):
        atomic_write_text(Path(target), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
