"""Snapshot ensembles against the last single model, for every method of a study (the paper's Table III).

Trains the study (`olsmooth study`, finished runs skipped, an interrupted one continued), evaluates each run's
epoch snapshots once on the test set, and averages the softmax of K snapshots spread uniformly over the epochs
after --after (by default the study's first learning-rate milestone, so that every member is near-converged) and,
as the paper picks them, over all of training. Writes OUT/snapshots.csv (one row per cell, seed, snapshot start and
ensemble size, 1 being the last snapshot alone: top-1, NLL, ECE), OUT/snapshots.{json,md} and OUT/snapshots.png.
The page is built from the CSV's rows alone: per cell and K, top-1 (mean ± sample std over seeds), NLL and ECE;
paired tests of each cell's largest ensemble against its last snapshot and against the study baselines' ensembles,
with Holm-corrected p and the resolvable difference. --from-csv prints the page from a CSV without evaluating;
--publish DOCS copies the CSV, the page and its figure into DOCS/benchmarks and DOCS/figures, named after the study
(STUDY-snapshots for a study that is not about snapshots, such as accuracy-fashion-mnist).

    python -m benchmarks.snapshots [--quick] [--study NAME] [--after EPOCH] [--sizes K ...] [--publish DOCS]
    python -m benchmarks.snapshots --from-csv CSV [--study NAME] [--publish DOCS]
"""

from __future__ import annotations

import io
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from olsmooth.analysis.metrics import HEADLINE_KEYS
from olsmooth.analysis.report import (
    PAIRED_COLUMNS,
    PAIRED_FORMATS,
    Group,
    cell_text,
    markdown_table,
    method_label,
    paired_caption,
    paired_rows,
    summary_stats,
)
from olsmooth.engine.inference import evaluate_each, pick_snapshots
from olsmooth.engine.resolve import resolve
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_bytes, atomic_write_text
from olsmooth.runs.reader import snapshot_files
from olsmooth.studies.plan import PlannedRun, plan_runs
from olsmooth.studies.publish import PUBLISHED_FIGURES
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
    write_results,
)

MODULE = "benchmarks.snapshots"
STUDY, QUICK_STUDY = "family-snapshots-fashion-mnist", "snapshots-quick"
DEFAULT_SIZES = (3, 5, 10)
NAME = "snapshots"
"""OUT/snapshots.{csv,json,md,png}."""
CSV_COLUMNS = ("cell", "seed", "folder", "after", "snapshots", *HEADLINE_KEYS)
"""One row per run and ensemble: the run's cell, seed and folder (under the study's run folder), the epoch after
which its snapshots were picked (0: over all of training) and how many (1: the last snapshot alone), and the
ensemble's test top-1, NLL and ECE (top-1 and ECE in %, NLL in nats)."""
EnsembleKey = tuple[int, int, int]
"""(cell index, snapshot start, number of snapshots; 1 is the last snapshot alone)."""
Ensembles = dict[EnsembleKey, dict[int, dict[str, float]]]


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = benchmark_parser(MODULE, __doc__, quick=f"the {QUICK_STUDY} study on digits: a smoke test",
                              device="cpu | cuda | cuda:N for training and evaluation", threads=None,
                              out="benchmarks/out/snapshots")
    parser.add_argument("--study", help=f"study file or shipped name (default {STUDY})")
    parser.add_argument("--runs", help="where the study's run folders go (default OUT/STUDY)")
    parser.add_argument("--after", type=int, help="late ensembles use only the snapshots after this epoch "
                                                  "(default: the study's first multistep milestone, else half)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help=f"ensemble sizes (default {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--from-csv", metavar="CSV", help="print the page regenerated from a snapshots CSV (and "
                        "with --publish publish it) instead of evaluating; the Machine and Command lines come from "
                        "the page of the same name beside it, when there is one")
    parser.add_argument("--publish", metavar="DOCS", help="then copy the CSV, the page regenerated from it and its "
                        "figure into a docs folder: DOCS/benchmarks/PAGE.{csv,md}, DOCS/figures/PAGE.png, PAGE "
                        "the study's name, followed by -snapshots unless it has 'snapshots' in it")
    args = parse_benchmark_args(parser, argv)
    if args.quick and args.study:
        parser.error(f"--quick runs the {QUICK_STUDY} study; give --quick or --study, not both")
    if any(size < 2 for size in args.sizes):
        parser.error(f"--sizes must be 2 or more snapshots, got {args.sizes}")
    args.study = QUICK_STUDY if args.quick else args.study or STUDY
    return args


def late_start(study: Study) -> int:
    """The epoch after which snapshots count as near-converged: the first milestone, else half of training."""
    cfg = resolve(study.cells[0].config)
    return min(cfg.milestones) if cfg.sched == "multistep" and cfg.milestones else cfg.epochs // 2


def evaluate_runs(study: Study, plan: Sequence[PlannedRun], after: int, sizes: Sequence[int],
                  device: str | None) -> list[dict[str, Any]]:
    """The CSV rows of every finished run: each ensemble's top1/nll/ece, of the last snapshot alone and of each size
    that fits, picked after `after` and over all of training; every snapshot a run needs is evaluated once and its
    test probabilities serve every ensemble. Rows in the grid's order, then seed, later start first, size."""
    rows: list[dict[str, Any]] = []
    index = {cell.name: number for number, cell in enumerate(study.cells)}
    for run in plan:
        epochs = list(snapshot_files(run.folder))
        if run.status.state != "done" or not epochs:
            continue
        starts = sorted({after, 0}, reverse=True)
        picks = {(start, size): pick_snapshots(run.folder, size, start)
                 for start in starts for size in (1, *sizes) if size <= sum(epoch > start for epoch in epochs)}
        needed = sorted({path for members in picks.values() for path in members})
        with evaluate_each(needed, device=device) as evaluated:
            for (start, size), members in picks.items():
                metrics = evaluated.ensemble(members).compute()
                rows.append({"cell": run.cell.name, "seed": run.seed,
                             "folder": f"{run.cell.name}/{run.folder.name}", "after": start, "snapshots": size,
                             **{k: float(metrics[k]) for k in HEADLINE_KEYS}})
    rows.sort(key=lambda r: (index[r["cell"]], r["seed"], -r["after"], r["snapshots"]))
    return rows


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """snapshots.csv: CSV_COLUMNS, read back exactly (`exact_csv_text`)."""
    return exact_csv_text(CSV_COLUMNS, rows)


def read_csv(study: Study, path: str | Path) -> list[dict[str, Any]]:
    """The rows of a snapshots CSV (as `csv_text` writes them), checked against the study: its columns, the study's
    cells, each cell, seed, start and size once; numbers parsed back exactly."""
    rows = read_exact_csv(study, path, CSV_COLUMNS, ("seed", "after", "snapshots"), HEADLINE_KEYS)
    keys = [(row["cell"], row["seed"], row["after"], row["snapshots"]) for row in rows]
    if len(set(keys)) != len(keys):
        raise UserInputError(f"{path}: a cell, seed, start and size appear twice")
    if not rows:
        raise UserInputError(f"{path}: no rows")
    return rows


def ensembles(study: Study, rows: Sequence[Mapping[str, Any]]) -> Ensembles:
    """The rows by (cell index, start, size): each seed's top1/nll/ece."""
    index = {cell.name: number for number, cell in enumerate(study.cells)}
    found: Ensembles = {}
    for row in rows:
        key = (index[row["cell"]], row["after"], row["snapshots"])
        found.setdefault(key, {})[row["seed"]] = {k: row[k] for k in HEADLINE_KEYS}
    return found


def ensemble_starts(found: Ensembles) -> list[int]:
    """The snapshot starts at which some ensemble (more than the last snapshot) fits, later first: a start where
    only the last snapshot fits gets no table and no panel."""
    return sorted({start for (_, start, size) in found if size > 1}, reverse=True)


def _fitted(found: Ensembles, cell: int, start: int, sizes: Sequence[int]) -> list[int]:
    """The ensemble sizes above 1 that a cell has for a start, when it also has the last snapshot alone."""
    return [size for size in sizes if size > 1 and found.get((cell, start, size))] if found.get((cell, start, 1)) \
        else []


def wide_rows(study: Study, found: Ensembles, start: int, sizes: Sequence[int]) -> tuple[list[dict[str, Any]],
                                                                                       list[str]]:
    """One row per cell: n, the last snapshot's top-1, each size's ensemble top-1, and NLL and ECE of the single
    model → of the largest ensemble that fits (mean over the seeds the single model has)."""
    rows = []
    for index, cell in enumerate(study.cells):
        fitted = _fitted(found, index, start, sizes)
        if not fitted:
            continue
        seeds = sorted(found[index, start, 1])
        stats = {size: summary_stats([found[index, start, size][s] for s in seeds if s in found[index, start, size]],
                                     HEADLINE_KEYS, cell.name) for size in (1, *fitted)}
        row = {"cell": cell.name, "n": str(len(seeds)), "single top-1": cell_text(stats[1]["top1"], ".2f")}
        row |= {f"{size} top-1": cell_text(stats[size]["top1"], ".2f") for size in fitted}
        for key, fmt in (("nll", ".3f"), ("ece", ".2f")):
            row[key.upper()] = f"{stats[1][key]['mean']:{fmt}} → {stats[fitted[-1]][key]['mean']:{fmt}}"
        rows.append(row)
    shown = [s for s in sizes if any(f"{s} top-1" in r for r in rows)]
    return rows, ["cell", "n", "single top-1", *(f"{s} top-1" for s in shown), "NLL", "ECE"]


def gain_tests(study: Study, found: Ensembles, start: int, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Paired tests (top-1, NLL, ECE) of each cell's largest ensemble against its last snapshot alone; Holm over
    the cells of each metric."""
    groups, pairs = [], []
    for index, cell in enumerate(study.cells):
        fitted = _fitted(found, index, start, sizes)
        if not fitted:
            continue
        for size in (fitted[-1], 1):
            group = Group({**cell.options, "snapshots": size})
            for seed, figures in sorted(found[index, start, size].items()):
                group.add(seed, figures, Path(cell.name) / f"seed-{seed}")
            groups.append(group)
        pairs.append((len(groups) - 2, len(groups) - 1))
    return paired_rows(groups, pairs, HEADLINE_KEYS)


def ensemble_tests(study: Study, found: Ensembles, start: int, size: int) -> list[dict[str, Any]]:
    """Paired tests (top-1, NLL, ECE) of each cell's `size`-snapshot ensemble against the baselines' ensembles."""
    groups = [Group(dict(cell.options)) for cell in study.cells]
    for index, group in enumerate(groups):
        for seed, figures in sorted(found.get((index, start, size), {}).items()):
            group.add(seed, figures, Path(study.cells[index].name) / f"seed-{seed}")
    return paired_rows(groups, baseline_pairs(study), HEADLINE_KEYS)


def section_title(start: int) -> str:
    return (f"## Near-converged snapshots: after epoch {start}" if start else
            "## Snapshots over all of training (the paper's protocol)")


def page_text(study: Study, rows: Sequence[Mapping[str, Any]], figure: str = f"{NAME}.png",
              provenance: Sequence[str] = ()) -> str:
    """The page, from the CSV's rows alone (and the study's cells, description and baselines): per snapshot start
    (later first) the table of each cell's ensembles, the paired tests of its largest ensemble against its last
    snapshot, and those of the largest ensembles against the baselines'. `provenance` lines (Machine, Command) go
    under the title; `figure` is the link of the figure."""
    found = ensembles(study, rows)
    sizes = sorted({size for (_, _, size) in found})
    lines = [f"# Snapshot ensembles: {study.name}\n", *(f"{line}\n" for line in provenance)]
    if study.description:
        lines.append(study.description.strip() + "\n")
    lines.append("Softmax average of K epoch snapshots against the last snapshot alone (single); top-1 and ECE in %, "
                 "NLL in nats, mean ± sample std over seeds; NLL and ECE are the means of the single model → of the "
                 "largest ensemble. Per-run figures: the CSV of the same name, one row per cell, seed, snapshot "
                 f"start and ensemble size; `python -m {MODULE} --from-csv CSV` prints this page from it.\n")
    for start in ensemble_starts(found):
        table, columns = wide_rows(study, found, start, sizes)
        lines += [f"{section_title(start)}\n", markdown_table(table, columns)]
        gains = gain_tests(study, found, start, sizes)
        if gains:
            lines += ["Each cell's largest ensemble against its last snapshot alone (gain = ensemble − single). "
                      f"{paired_caption(gains)}\n", markdown_table(gains, PAIRED_COLUMNS, PAIRED_FORMATS)]
        largest = max(size for (_, s, size) in found if s == start)
        tests = ensemble_tests(study, found, start, largest)
        if tests:
            lines += [f"The {largest}-snapshot ensembles against the baselines' (same seeds). "
                      f"{paired_caption(tests)}\n", markdown_table(tests, PAIRED_COLUMNS, PAIRED_FORMATS)]
    lines.append(f"![gain of each snapshot ensemble over its last model]({figure})\n")
    return "\n".join(lines)


def plot(study: Study, rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The gain in test top-1 of each ensemble over the last snapshot alone (paired by seed, mean ± sample std)
    against the number of snapshots, a line per cell, a panel per snapshot start (near-converged, then over all of
    training): the gain, not the top-1 itself, so that a method far below the others does not flatten the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = ensembles(study, rows)
    starts = ensemble_starts(found)
    seeds = len({row["seed"] for row in rows})
    fig, axes = plt.subplots(1, len(starts), figsize=(5.5 * len(starts) + 2.5, 4.5), sharey=True, squeeze=False)
    for ax, start in zip(axes[0], starts):
        sizes = sorted({size for (_, s, size) in found if s == start})
        for index, cell in enumerate(study.cells):
            single = found.get((index, start, 1), {})
            points = [(size, [found[index, start, size][seed]["top1"] - single[seed]["top1"]
                              for seed in found.get((index, start, size), {}) if seed in single]) for size in sizes]
            points = [(size, gains) for size, gains in points if gains]
            if points:
                ax.errorbar([p[0] for p in points], [statistics.mean(p[1]) for p in points],
                            yerr=[statistics.stdev(p[1]) if len(p[1]) > 1 else 0.0 for p in points], marker="o",
                            capsize=3, label=method_label(study.shown_options(cell)))
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set(xlabel="snapshots in the ensemble (1 = the last model)", xscale="log",
               title=f"after epoch {start}" if start else "over all of training (the paper's protocol)")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 gain over the last snapshot (points)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Snapshot ensembles, {study.name}: gain over the last model, mean ± std over {seeds} seed(s)",
                 fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def page_name(study: Study) -> str:
    """The name of the published CSV, page and figure: a snapshots study's own name, else STUDY-snapshots, so that
    they lie beside the study's own page (`olsmooth study --publish`) without replacing it."""
    return study.name if "snapshots" in study.name else f"{study.name}-snapshots"


def published_figure(study: Study, docs: str | Path) -> Path:
    """DOCS/figures/PAGE.png."""
    return Path(docs) / PUBLISHED_FIGURES / f"{page_name(study)}.png"


def published_link(study: Study) -> str:
    return f"../{PUBLISHED_FIGURES}/{page_name(study)}.png"


def publish(study: Study, source: Path, docs: str | Path) -> list[Path]:
    """Copy a snapshots CSV verbatim into DOCS/benchmarks/PAGE.csv (`page_name`), write the page regenerated from it
    (with the Machine and Command lines of the page beside the CSV) and its figure, plotted from the same rows."""
    rows = read_csv(study, source)
    written = publish_page(source, docs, page_name(study),
                           lambda lines: page_text(study, rows, published_link(study), lines))
    figure = published_figure(study, docs)
    figure.parent.mkdir(parents=True, exist_ok=True)
    return [*written, plot(study, rows, figure)]


def published_page_difference(docs: str | Path, study: Study | None = None) -> str:
    """'' when DOCS/benchmarks/PAGE.md is exactly the page its committed PAGE.csv regenerates (its Machine and
    Command lines taken from the page), else a unified diff (published page first)."""
    study = study or load_study(resolve_study_path(STUDY))
    return published_difference(docs, page_name(study), lambda data, lines: page_text(study, read_csv(study, data),
                                                                                published_link(study), lines))


def from_csv(args: Any) -> int:
    """Print the page a CSV regenerates, and publish it with --publish."""
    study, source = load_study(args.study), Path(args.from_csv)
    rows = read_csv(study, source)
    link = published_link(study) if source.name == f"{page_name(study)}.csv" else f"{NAME}.png"
    print(page_text(study, rows, link, provenance_of(source.with_suffix(".md"))), end="")
    if args.publish:
        print("published " + ", ".join(map(str, publish(study, source, args.publish))), file=sys.stderr)
    return 0


def run(args: Any, argv: Sequence[str] | None) -> int:
    if args.from_csv:
        return from_csv(args)
    study = load_study(args.study)
    runs = Path(args.runs) if args.runs else Path(args.out) / study.name
    run_study(study, runs)
    after = late_start(study) if args.after is None else args.after
    sizes = sorted(set(args.sizes))
    rows = evaluate_runs(study, plan_runs(study, runs), after, sizes, args.device)
    if not rows:
        raise UserInputError(f"no finished run of {study.name} in {runs} has epoch snapshots (train with "
                             "--save-every)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / f"{NAME}.csv"
    atomic_write_text(data_path, csv_text(rows))
    figure = plot(study, rows, out / f"{NAME}.png")
    info, command = machine_info(), command_line(argv, MODULE)
    payload: dict[str, Any] = {"machine": info, "command": command, "study": study.name, "runs": str(runs),
                               "after": after, "sizes": sizes, "ensembles": rows}
    page = page_text(study, rows, figure.name, provenance_lines(info, command))
    json_path, md_path = write_results(out, NAME, payload, page)
    print(f"wrote {data_path}, {json_path}, {md_path} and {figure}")
    if args.publish:
        print("published " + ", ".join(map(str, publish(study, data_path, args.publish))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and report; bad input (a study file, an option value) is one line and exit status 2."""
    args = parse_args(argv)
    return exit_status(MODULE, lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
