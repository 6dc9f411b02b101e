"""One self-contained HTML page about a set of finished runs, for `olsmooth report RUN... --html FILE`.

It holds the final metrics (mean ± std per group of seeds, paired tests: `report.py`'s grouping and tests),
the training curves of every run, reliability diagrams where a run folder has predictions, the soft labels of
OLS runs, and the evaluation and attack results saved in `RUN/results/*.json`. Figures are PNG data URIs and
the style sheet is inline: the file references nothing else, so it can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import UserInputError
from ..fileio import atomic_write_text
from ..runs.layout import RESULTS
from ..runs.reader import has_soft_labels, soft_label_files
from ..runs.results import SavedResult, read_results
from .metrics import EVALUATION_KEYS, HEADLINE_KEYS, axis_label, metric_formats, units_text
from .report import (
    NO_PAIRED_TESTS,
    PAIRED_COLUMNS,
    PAIRED_FORMATS,
    FinishedRun,
    Group,
    cell_text,
    group_runs,
    one_factor_pairs,
    option_text,
    paired_caption,
    paired_rows,
    summary_stats,
    summary_table,
)
from .soft_labels import (
    MAX_FULL_VIEW,
    SoftLabels,
    class_rows,
    dataset_class_names,
    epoch_curves,
    load_matrix,
    num_classes_of,
    resolve_class_names,
    soft_label_figures,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, os.PathLike]
ClassNames = Callable[[Path], Union[Sequence[str], None]]
FIGURE_DPI = 96
CURVES = ("top1", "val_top1", "train_loss", "nll", "ece")
"""The per-epoch keys drawn as training curves, each where every run of the report has it."""
RESULT_COMMANDS = {"eval": "Evaluation", "attack": "Adversarial robustness"}
"""The `command` of a results/*.json file, and the heading of its table."""
RESULT_METRICS = {"attack": ("clean_top1", "robust_top1", "adversarial_top1", "fgsm_top1")}
"""Per command, the figures averaged over seeds; for the others every number not in RESULT_SETTINGS."""
RESULT_SETTINGS = ("attack", "norm", "eps", "eps_text", "steps", "restarts", "loss", "step_size", "seed", "n",
                   "max_shift", "samples", "samples_ts", "calibration_data", "checkpoint", "surrogate")
"""Entries of a result that say how it was measured rather than what: shown per run, never averaged."""
TOP_SIMILAR = 3
"""Similar classes listed per class in the soft-label table."""
MAX_METRIC_COLUMNS = 6
"""A table of results with more figures than this is turned: a row per figure."""
_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232a;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #e3e7ec}
h3{font-size:16px;margin:20px 0 8px}
p{margin:6px 0}
.meta,.note,figcaption{color:#56616e}
.note,figcaption{font-size:13.5px}
nav{margin:10px 0 0;font-size:14px}
nav a{margin-right:16px;color:#1f5fa8;text-decoration:none}
.table-wrap{overflow-x:auto;margin:6px 0 14px}
table{border-collapse:collapse;font-size:13.5px}
th,td{padding:5px 10px;border-bottom:1px solid #e3e7ec;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f1f4f7;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:260px}
tbody tr:nth-child(even){background:#fafbfc}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.figures.small{grid-template-columns:repeat(auto-fill,minmax(330px,1fr))}
figure{margin:0;border:1px solid #e3e7ec;border-radius:6px;padding:8px}
figure.wide{grid-column:1/-1}
figure img{width:100%;height:auto;display:block}
figure.wide img{max-width:1100px;margin:0 auto}
details{margin:8px 0}
summary{cursor:pointer;color:#1f5fa8}
.warn{color:#9a4a00}
"""


@dataclass(frozen=True)
class RunResult(SavedResult):
    """One results/*.json of a run folder, with the run it belongs to."""

    run: FinishedRun


def find_predictions(run_dir: PathLike) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """The .npz files directly in a run folder or in its results/ that hold `probs` (N, K) and `labels` (N,)
    (what `--save-predictions` writes), with those arrays; other .npz files are not predictions and are passed."""
    found = []
    for folder in (Path(run_dir), Path(run_dir) / RESULTS):
        for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
            try:
                with np.load(path, allow_pickle=False) as data:
                    if not {"probs", "labels"} <= set(data.files):
                        continue
                    probs, labels = data["probs"], data["labels"]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise UserInputError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
            if probs.ndim != 2 or labels.shape != (probs.shape[0],):
                raise UserInputError(f"{path}: expected probs (N, K) and labels (N,), got {probs.shape} and "
                                     f"{labels.shape}")
            found.append((path, probs, labels))
    return found


def run_names(runs: Sequence[FinishedRun]) -> dict[Path, str]:
    """Each run's folder as the report names it: its path below the folder the runs share."""
    paths = [run.path.resolve() for run in runs]
    if len(paths) == 1:
        return {runs[0].path: paths[0].name}
    common = Path(os.path.commonpath(paths))
    return {run.path: path.relative_to(common).as_posix() or path.name for run, path in zip(runs, paths)}


def figure_uri(fig: Figure) -> str:
    """A matplotlib figure as a PNG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(fig: Figure, alt: str, caption: str | None = None, wide: bool = False) -> str:
    """A figure as <figure> with its image embedded; `caption` below it where it adds to the figure's title."""
    kind = ' class="wide"' if wide else ""
    below = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure{kind}><img alt="{html.escape(alt)}" src="{figure_uri(fig)}">{below}</figure>'


def _value_text(value: Any, fmt: str) -> str:
    """A table cell's text: report.cell_text for numbers and mean ± std, lists joined, mappings as JSON."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value)) or "-"
    if isinstance(value, dict) and not {"mean", "std"} <= value.keys():
        return json.dumps(value, separators=(", ", ": "))
    return cell_text(value, fmt)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], formats: Mapping[str, str] | None = None,
               wrap: Sequence[str] = (), right: Sequence[str] = ()) -> str:
    """An HTML table of rows (missing entries shown as '-'); numbers, mean ± std and the columns `right`
    right-aligned, the columns `wrap` allowed to wrap."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            numeric = column in right or (isinstance(value, (int, float, dict)) and not isinstance(value, bool))
            kind = "num" if numeric else "wrap" if column in wrap else ""
            text = html.escape(_value_text(value, formats.get(column, ".2f")))
            cells.append(f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


@dataclass(frozen=True)
class Section:
    """One part of the page: its anchor (for the contents line), heading and HTML body."""

    anchor: str
    title: str
    body: str

    def html(self) -> str:
        return f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>{self.body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _summary_section(groups: Sequence[Group], pairs: Sequence[tuple[int, int]], which: str) -> Section:
    rows, columns = summary_table(groups, EVALUATION_KEYS)
    content = _note(f"Test metrics of the {which} epoch of each run, mean ± sample std over the seeds of each group; "
                    f"{units_text(EVALUATION_KEYS)}.")
    content += html_table(rows, columns, metric_formats(EVALUATION_KEYS))
    tested = paired_rows(groups, pairs, HEADLINE_KEYS)
    if tested:
        content += f"<h3>Paired tests</h3>{_note(paired_caption(tested))}"
        content += html_table(tested, PAIRED_COLUMNS, PAIRED_FORMATS, wrap=("comparison", "setting"))
    elif pairs:
        content += _note(NO_PAIRED_TESTS)
    return Section("summary", "Final metrics", content)


def _runs_section(runs: Sequence[FinishedRun], groups: Sequence[Group], names: Mapping[Path, str],
                  which: str) -> Section:
    label = {folder: g.label for g in groups for folder in g.folders.values()}
    rows = []
    for run in runs:
        best = run.record("best") if all("top1" in r for r in run.records) else {}
        rows.append({"run": names[run.path], "group": label[run.path], "seed": run.seed, "epochs": len(run.records),
                     f"top1 ({which})": run.figures(which, ("top1",))["top1"], "best top1": best.get("top1"),
                     "best epoch": best.get("epoch"), "soft labels": "yes" if has_soft_labels(run.path) else "-",
                     "results": len(read_results(run.path)) or "-"})
    return Section("runs", "Runs", html_table(rows, list(rows[0]), wrap=("group",)))


def _curves_section(runs: Sequence[FinishedRun], groups: Sequence[Group]) -> Section | None:
    from .plots import plot_curves

    by_path = {run.path: run for run in runs}
    figures = []
    for key in CURVES:
        if not all(all(key in r for r in run.records) for run in runs):
            continue
        label = axis_label(key)
        series = {g.label: {seed: [r[key] for r in by_path[folder].records] for seed, folder in g.folders.items()}
                  for g in groups}
        figures.append(_figure(plot_curves(series, None, ylabel=label), f"{label} per epoch"))
    if not figures:
        return None
    intro = _note("One line per group: the mean over its seeds, with a band of ± one sample std where it has several.")
    return Section("curves", "Training curves", intro + f'<div class="figures">{"".join(figures)}</div>')


def _reliability_section(runs: Sequence[FinishedRun], names: Mapping[Path, str]) -> Section | None:
    import torch

    from .plots import plot_reliability

    figures = []
    for run in runs:
        for path, probs, labels in find_predictions(run.path):
            title = f"{names[run.path]}/{path.relative_to(run.path).as_posix()}"
            fig = plot_reliability(torch.from_numpy(np.asarray(probs, dtype=np.float32)),
                                   torch.from_numpy(np.asarray(labels, dtype=np.int64)), None, title=names[run.path])
            figures.append(_figure(fig, f"reliability of {title}", f"{title}: {len(labels)} samples"))
    if not figures:
        return None
    return Section("reliability", "Reliability", _note("From the predictions saved in the run folders (probs and "
                                                       "labels, as --save-predictions writes them).")
                   + f'<div class="figures small">{"".join(figures)}</div>')


def _soft_label_section(runs: Sequence[FinishedRun], groups: Sequence[Group], names: Mapping[Path, str],
                        class_names: ClassNames | None) -> Section | None:
    by_path = {run.path: run for run in runs}
    parts = []
    for group in groups:
        ols = [by_path[group.folders[s]] for s in sorted(group.folders) if has_soft_labels(group.folders[s])]
        if not ols:
            continue
        shown = ols[0]
        names_of = (class_names(shown.path) if class_names else None) or dataset_class_names(shown.path)
        curves = {names[run.path]: epoch_curves(soft_label_files(run.path)) for run in ols}
        figures = soft_label_figures(shown.path, None, class_names=names_of, curves=curves)
        files = soft_label_files(shown.path)
        last = max(files)
        html_figures = [_figure(fig, f"{names[shown.path]}: {name.removeprefix('soft-labels-')} view", wide=True)
                        for name, fig in figures.items() if name != "soft-labels-curves"]
        html_figures.append(_figure(figures["soft-labels-curves"], "soft-label curves", "Means over the classes after "
                                    "each saved epoch, a line per seed.", wide=True))
        parts.append(f"<h3>{html.escape(group.label)}</h3>"
                     + _note(f"Heatmaps of {names[shown.path]} (seed {shown.seed}); row c is the soft label of "
                             f"class c.") + f'<div class="figures">{"".join(html_figures)}</div>'
                     + _similar_table(load_matrix(files[last]), names_of, last))
    if not parts:
        return None
    return Section("soft-labels", "Soft labels (OLS)", "".join(parts))


def _similar_table(matrix: SoftLabels, class_names: Sequence[str] | None, epoch: int) -> str:
    """Per class (up to MAX_FULL_VIEW of them: those keeping the least mass on themselves) its diagonal mass,
    entropy and most similar classes."""
    rows = class_rows(matrix, resolve_class_names(num_classes_of(matrix), class_names), TOP_SIMILAR)
    if len(rows) > MAX_FULL_VIEW:
        rows = sorted(rows, key=lambda row: row["diagonal"])[:MAX_FULL_VIEW]
        which = f"the {MAX_FULL_VIEW} classes of lowest diagonal mass"
    else:
        which = "every class"
    table = [{"class": row["name"], "diagonal": row["diagonal"], "entropy (nats)": row["entropy"],
              "most similar classes (mass)": ", ".join(f"{s['name']} ({s['mass']:.3f})" for s in row["similar"])}
             for row in rows]
    return (f"<details><summary>Most similar classes after epoch {epoch} ({which})</summary>"
            + html_table(table, list(table[0]), {"diagonal": ".3f", "entropy (nats)": ".3f"}) + "</details>")


def _result_columns(results: Sequence[RunResult]) -> tuple[list[str], list[str]]:
    """The settings and the averaged figures of results of one command, in the order the files give them."""
    keys = list(dict.fromkeys(k for r in results for k in r.data if k != "command"))
    declared = RESULT_METRICS.get(results[0].command)
    metrics = [k for k in (declared or keys) if k not in RESULT_SETTINGS
               and all(_is_number(r.data.get(k)) for r in results)]
    return [k for k in keys if k not in metrics], metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any, run: FinishedRun) -> Any:
    """A path inside the run folder as its path there (best.pt), other paths by their last two parts."""
    if not isinstance(value, str) or os.sep not in value:
        return value
    path = Path(value)
    try:
        return path.resolve().relative_to(run.path.resolve()).as_posix()
    except ValueError:
        return "/".join(path.parts[-2:])


def _results_section(results: Sequence[RunResult], groups: Sequence[Group], names: Mapping[Path, str]
                     ) -> Section | None:
    label = {folder: g.label for g in groups for folder in g.folders.values()}
    parts = []
    for command, title in RESULT_COMMANDS.items():
        chosen = [r for r in results if r.command == command]
        if not chosen:
            continue
        settings, metrics = _result_columns(chosen)
        buckets: dict[tuple[str, str], list[RunResult]] = {}
        for result in chosen:
            buckets.setdefault((label[result.run.path], result.path.name), []).append(result)
        summary = [{"group": group, "result": Path(file).stem,
                    **summary_stats([r.data for r in bucket], metrics, f"{group}: {file}")}
                   for (group, file), bucket in buckets.items()]
        per_run = [{"run": names[r.run.path], "file": r.path.name,
                    **{k: _shown(r.data.get(k), r.run) for k in (*settings, *metrics)}} for r in chosen]
        formats = metric_formats(metrics)
        parts.append(f"<h3>{html.escape(title)}</h3>"
                     + _note(f"{RESULTS}/*.json of olsmooth {command} --save-to-run: mean ± sample std over the "
                             f"runs of each group with the same result file.")
                     + (_attacks_note(chosen) if command == "attack" else "")
                     + _summary_of_results(summary, metrics, formats)
                     + "<details><summary>Every run</summary>"
                     + html_table(per_run, ["run", "file", *settings, *metrics],
                                  dict.fromkeys(settings, ".4g") | formats, wrap=("warnings",))
                     + "</details>")
    if not parts:
        return None
    return Section("results", "Evaluation and robustness results", "".join(parts))


def _attacks_note(results: Sequence[SavedResult]) -> str:
    """What each registered attack among the results does, from the attack registry's help."""
    from .attacks import ATTACKS  # torch, only where a report has attack results
    names = dict.fromkeys(str(r.data.get("attack")) for r in results)
    known = [f"{name}: {ATTACKS[name].help} ({ATTACKS[name].access})" for name in names if name in ATTACKS]
    return _note("; ".join(known) + ".") if known else ""


def _summary_of_results(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], formats: Mapping[str, str]) -> str:
    """The mean ± std table of results: a row per group and result file, or with more than MAX_METRIC_COLUMNS
    figures (too wide for a page) a row per figure and a column per group and result file."""
    if len(metrics) <= MAX_METRIC_COLUMNS:
        return html_table(rows, ["group", "result", "n", *metrics], formats, wrap=("group",))
    columns = [f"{row['group']} · {row['result']}" for row in rows]
    table = [{"figure": key, **{c: _value_text(row[key], formats.get(key, ".2f")) for c, row in zip(columns, rows)}}
             for key in ("n", *metrics)]
    return html_table(table, ["figure", *columns], right=columns)


def _saved_results(runs: Sequence[FinishedRun], note: Callable[[str], None]) -> list[RunResult]:
    """Every results/*.json of the runs; files of another command are passed with a note."""
    found = []
    for run in runs:
        for result in read_results(run.path):
            if result.command in RESULT_COMMANDS:
                found.append(RunResult(result.path, result.data, run))
            else:
                note(f"skipping {result.path}: not a result of {' or '.join(RESULT_COMMANDS)} (command "
                     f"{result.data.get('command')!r})")
    return found


def html_report(runs: Sequence[FinishedRun], which: str = "last", class_names: ClassNames | None = None,
                note: Callable[[str], None] = print, title: str = "olsmooth report") -> str:
    """The report page of finished runs (`report.load_finished_runs`); `class_names(run_dir)` names the classes
    of an OLS run's soft labels where it can (e.g. from its checkpoint)."""
    groups = group_runs(runs, which)
    pairs = one_factor_pairs(groups)
    names = run_names(runs)
    sections = [_summary_section(groups, pairs, which), _curves_section(runs, groups),
                _reliability_section(runs, names), _soft_label_section(runs, groups, names, class_names),
                _results_section(_saved_results(runs, note), groups, names), _runs_section(runs, groups, names, which)]
    shown = [s for s in sections if s is not None]
    links = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in shown)
    heading = (f"<h1>{html.escape(title)}</h1><p class=\"meta\">{len(runs)} runs in {len(groups)} groups "
               f"({html.escape(', '.join(sorted({option_text(r.config.get('dataset')) for r in runs})))})</p>"
               f"<nav>{links}</nav>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><main>{heading}{''.join(s.html() for s in shown)}</main>"
            "</body></html>\n")


def write_html_report(path: PathLike, runs: Sequence[FinishedRun], which: str = "last",
                      class_names: ClassNames | None = None, note: Callable[[str], None] = print) -> Path:
    """Build the page (`html_report`) and write it atomically to `path`; nothing is written if building fails."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"--html {path}: is a folder; give a file name such as report.html")
    atomic_write_text(path, html_report(runs, which, class_names, note))
    return path
