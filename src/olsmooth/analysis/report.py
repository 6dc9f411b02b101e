"""Multi-seed results: read run folders, group them by experiment, mean ± sample std, paired tests, markdown.

Used by `olsmooth report`, `olsmooth study` and the benchmarks. scipy (a scikit-learn dependency) is imported
only by `paired_test`, matplotlib only by `plot_groups`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import UserInputError
from ..option_roles import METHOD_OPTIONS, NON_EXPERIMENT_OPTIONS
from ..runs.reader import metrics_path, read_metrics, read_run_config, read_summary, run_status, summary_path
from .metrics import EVALUATION_KEYS, HEADLINE_KEYS, axis_label, metric_formats
from .stats import ALPHA, POWER, WILCOXON_MIN_FOR_005, holm, paired_test

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED_KEY = "seed"
"""The option that tells the runs of one experiment apart; paired tests match runs by it."""
PAIRED_COLUMNS = ("comparison", "setting", "metric", "n", "mean diff", "resolvable", "t-test p", "Holm p",
                  "Wilcoxon p")
PAIRED_FORMATS = {"mean diff": "+.3f", "resolvable": ".3f", "t-test p": ".3f", "Holm p": ".3f", "Wilcoxon p": ".3f"}
NO_PAIRED_TESTS = "Paired tests need at least 2 seeds that both groups have; none here."


def _select(records: Sequence[Mapping[str, Any]], which: str, where: Any) -> Mapping[str, Any]:
    """The last record, or with which="best" the (first) record with the highest top1 (val_top1 for a run with a
    validation split, whose best epoch is chosen on it)."""
    if which == "last":
        return records[-1]
    if which == "best":
        key = next((k for k in ("top1", "val_top1") if all(k in r for r in records)), None)
        if key is None:
            raise UserInputError(f"{where}: which='best' needs 'top1' (or 'val_top1') in every epoch record")
        return max(records, key=lambda r: _number(r, key, where))
    raise UserInputError(f"which must be 'last' or 'best', got {which!r}")


def final_metrics(run_dir: Union[str, os.PathLike], which: str = "last") -> dict[str, Any]:
    """The last epoch's record, or with which="best" the (first) epoch with the highest top1."""
    return dict(_select(read_metrics(run_dir), which, run_dir))


def _number(record: Mapping[str, Any], key: str, where: Any) -> float:
    """record[key] as a float; a missing or non-numeric entry is a user error naming where it is."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "lacks" if key not in record else f"has {value!r} for"
        raise UserInputError(f"{where}: epoch {record.get('epoch')} {what} {key!r} (expected a number)")
    return float(value)


@dataclass(frozen=True)
class FinishedRun:
    """A finished run: where it is, its configuration and its per-epoch records."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.config[SEED_KEY]

    def record(self, which: str = "last") -> Mapping[str, Any]:
        """The last epoch's record, or with which="best" the (first) epoch with the highest top1."""
        return _select(self.records, which, metrics_path(self.path))

    def figures(self, which: str = "last", keys: Sequence[str] = EVALUATION_KEYS) -> dict[str, float]:
        """The test metrics `keys` of the last or the best epoch, each checked to be a number: from summary.json
        (`test_KEY_last` / `test_KEY_best`) where it has them, the only test figures of a run with a validation
        split, else from that epoch's record."""
        tested = {key: f"test_{key}_{which}" for key in keys}
        if all(name in self.summary for name in tested.values()):
            return {key: _number(self.summary, name, summary_path(self.path)) for key, name in tested.items()}
        record = self.record(which)
        return {key: _number(record, key, metrics_path(self.path)) for key in keys}


def load_run(run_dir: Union[str, os.PathLike]) -> FinishedRun:
    """Read a finished run folder; an unfinished one is a user error."""
    status = run_status(run_dir)
    if status.state != "done":
        raise UserInputError(f"{run_dir} is not a finished run ({status.progress()})")
    return FinishedRun(Path(run_dir), read_run_config(run_dir), read_metrics(run_dir), read_summary(run_dir))


def load_finished_runs(folders: Sequence[Union[str, os.PathLike]], note: Callable[[str], None]) -> list[FinishedRun]:
    """The finished runs among `folders` (each read once); every other folder is skipped with a note."""
    runs, seen = [], set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            note(f"skipping {folder}: not a folder")
            continue
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        status = run_status(folder)
        if status.state == "done":
            runs.append(load_run(folder))
        else:
            note(f"skipping {folder}: not a finished run ({status.progress()})")
    return runs


def _canonical(value: Any) -> str:
    """A hashable, order-independent text of an option value (mappings compare by content)."""
    return json.dumps(value, sort_keys=True, default=str)


def option_text(value: Any) -> str:
    """An option value as tables and folder names show it: `-` for unset, YAML-like for the rest."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


METHOD_NAMES = {"ce": "CE", "ls": "LS", "ols": "OLS", "tfkd": "Tf-KD", "cskd": "CS-KD", "pskd": "PS-KD",
                "zipf": "Zipf's LS", "maxsup": "MaxSup", "focal": "focal loss", "mbls": "MbLS",
                "logitnorm": "LogitNorm", "sce": "SCE", "gce": "GCE", "bootsoft": "soft bootstrapping",
                "boothard": "hard bootstrapping", "forward": "forward correction", "backward": "backward correction",
                "elr": "ELR", "jo": "joint optim.", "pc": "PC", "disturb": "DisturbLabel"}
"""How figure legends name a method (`method_label`); a method not listed is shown by its --method name."""


def method_label(options: Mapping[str, Any]) -> str:
    """A group's options as a figure legend reads them, e.g. "OLS paper-cifar", "OLS (ours)", "LS 0.1, small_cnn":
    the method's name (OLS without a preset is ours), its preset or LS's epsilon, then the other options' values."""
    shown = {k: v for k, v in options.items() if option_text(v) != "-"}  # unset options say nothing here
    rest = {k: v for k, v in shown.items() if k not in ("method", "ols_preset", "ls_eps")}
    method = shown.get("method")
    name = METHOD_NAMES.get(method, option_text(method)) if method is not None else ""
    if "ols_preset" in shown:
        name += f" {shown['ols_preset']}"
    elif method == "ols":
        name += " (ours)"
    if "ls_eps" in shown:
        name += f" {option_text(shown['ls_eps'])}"
    extra = [option_text(v) if k in ("model", "dataset") else f"{k}={option_text(v)}" for k, v in rest.items()]
    return ", ".join(filter(None, [name, *extra])) or "-"


def grouping_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The options whose values differ between the configurations, in the order they first appear;
    the seed and NON_EXPERIMENT_OPTIONS are never among them."""
    keys: dict[str, None] = {}
    for config in configs:
        keys.update(dict.fromkeys(config))
    ignored = {SEED_KEY, *NON_EXPERIMENT_OPTIONS}
    return [k for k in keys if k not in ignored and len({_canonical(c.get(k)) for c in configs}) > 1]


@dataclass
class Group:
    """The runs of one experiment: the options that tell it from the other groups, and each seed's figures."""

    options: dict[str, Any]
    runs: dict[int, dict[str, float]] = field(default_factory=dict)
    folders: dict[int, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={option_text(v)}" for k, v in self.options.items()) or "all runs"

    def add(self, seed: int, figures: dict[str, float], folder: Path) -> None:
        """Record one run; two runs of one experiment with the same seed cannot be paired, so that is an error."""
        if seed in self.runs:
            raise UserInputError(f"{self.folders[seed]} and {folder} are the same experiment with the same seed "
                                 f"{seed}; report one of them")
        self.runs[seed], self.folders[seed] = figures, folder


def group_runs(runs: Sequence[FinishedRun], which: str = "last", keys: Sequence[str] = EVALUATION_KEYS) -> list[Group]:
    """Runs grouped by every option that differs between them (always showing the method), in first-seen order."""
    if not runs:
        raise UserInputError("no finished runs to report")
    differing = grouping_keys([run.config for run in runs])
    shown = ["method"] + [k for k in differing if k != "method"]
    groups: dict[str, Group] = {}
    for run in runs:
        options = {k: run.config.get(k) for k in shown}
        group = groups.setdefault(_canonical(options), Group(options))
        group.add(run.seed, run.figures(which, keys), run.path)
    return list(groups.values())


def summary_stats(runs: Sequence[Mapping[str, float]], keys: Sequence[str], name: str) -> dict[str, Any]:
    """n and, for each key, {"mean", "std"} over the runs (sample std; 0 for one run); name is for messages."""
    if not runs:
        raise UserInputError(f"method {name!r} has no runs")
    row: dict[str, Any] = {"n": len(runs)}
    for key in keys:
        missing = sum(key not in run for run in runs)
        if missing:
            raise UserInputError(f"method {name!r}: {missing} of {len(runs)} runs lack {key!r}")
        values = np.array([float(run[key]) for run in runs])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row[key] = {"mean": float(values.mean()), "std": std}
    return row


def summarize(
    results: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str] = EVALUATION_KEYS
) -> list[dict[str, Any]]:
    """Per method (in order): n and, for each key, {"mean", "std"} over its runs (sample std; 0 for one run)."""
    return [{"method": method, **summary_stats(runs, keys, method)} for method, runs in results.items()]


def summary_rows(groups: Sequence[Group], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per group: its options, n, and mean/std of each key (in seed order)."""
    return [{**g.options, **summary_stats([g.runs[s] for s in sorted(g.runs)], keys, g.label)} for g in groups]


def _factor(key: str) -> str:
    return "method" if key in METHOD_OPTIONS else key


def one_factor_pairs(groups: Sequence[Group]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of groups that differ in one factor only: one option, or the method with its options."""
    pairs = []
    for i, a in enumerate(groups):
        for j in range(i + 1, len(groups)):
            b = groups[j]
            keys = dict.fromkeys([*a.options, *b.options])
            differing = {_factor(k) for k in keys if _canonical(a.options.get(k)) != _canonical(b.options.get(k))}
            if len(differing) == 1:
                pairs.append((i, j))
    return pairs


def paired_rows(groups: Sequence[Group], pairs: Sequence[tuple[int, int]],
                keys: Sequence[str] = HEADLINE_KEYS) -> list[dict[str, Any]]:
    """Paired tests (by seed, over the seeds both groups have) of group i − group j for each pair and key, with
    the t-test's p corrected by Holm over the comparisons of each key in this list, and the difference the seeds
    can resolve (`stats.paired_mde`).

    `comparison` names the options that differ (a side that sets none of its own shows the other's as `-`),
    `setting` those the two share (less the options of two different methods); pairs with fewer than two common
    seeds are left out."""
    rows = []
    for i, j in pairs:
        a, b = groups[i], groups[j]
        seeds = sorted(set(a.runs) & set(b.runs))
        if len(seeds) < 2:
            continue
        same = {k: v for k, v in a.options.items() if _canonical(v) == _canonical(b.options.get(k))}
        own = [[k for k in g.options if k not in same] for g in (a, b)]
        own = [keys or other for keys, other in zip(own, own[::-1])]  # a side with none of its own: the other's, "-"
        text = [", ".join(f"{k}={option_text(g.options.get(k))}" for k in keys) for g, keys in zip((a, b), own)]
        if "method" in {*own[0], *own[1]}:  # two different methods: their shared options are no common setting
            same = {k: v for k, v in same.items() if k not in METHOD_OPTIONS}
        for key in keys:
            test = paired_test([a.runs[s][key] for s in seeds], [b.runs[s][key] for s in seeds])
            wilcoxon = test["wilcoxon_pvalue"]
            rows.append({"comparison": f"{text[0]} − {text[1]}",
                         "setting": ", ".join(f"{k}={option_text(v)}" for k, v in same.items()) or "-",
                         "metric": key, "n": str(test["n"]), "mean diff": test["mean_diff"],
                         "resolvable": test["mde"], "t-test p": test["t_pvalue"],
                         "Wilcoxon p": "n < 5" if wilcoxon is None else wilcoxon})
    for key in keys:
        family = [row for row in rows if row["metric"] == key]
        for row, corrected in zip(family, holm([row["t-test p"] for row in family])):
            row["Holm p"] = corrected
    return rows


def paired_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    """What a table of `paired_rows` shows, and what its seeds allow: the family Holm corrects over, the
    meaning of `resolvable`, and, with fewer than 6 pairs, that the Wilcoxon test cannot reach 0.05."""
    sizes = sorted({int(row["n"]) for row in rows})
    per_key = {row["metric"]: sum(r["metric"] == row["metric"] for r in rows) for row in rows}
    counts = sorted(set(per_key.values()))
    family = (f"the {counts[0]} comparisons of each metric" if len(counts) == 1 else
              "the comparisons of each metric (" + ", ".join(f"{k}: {m}" for k, m in per_key.items()) + ")")
    text = (f"Paired tests by seed (diff = first − second, over the seeds both have; n = "
            f"{'/'.join(map(str, sizes))} pairs). Holm p: the t-test's p corrected by Holm's method for {family} "
            f"in this table; only a Holm p below {ALPHA:g} is a significant difference. resolvable: the smallest "
            f"true difference the t-test detects with {POWER:.0%} power at the {ALPHA:g} level, given the sd of the "
            "paired differences; a |mean diff| below it is not resolvable with these seeds.")
    if sizes[0] < WILCOXON_MIN_FOR_005:
        text += (f" Wilcoxon: with {sizes[0]} pairs its two-sided p cannot go below "
                 f"{2 / 2 ** sizes[0]:.4g}, so it cannot reach {ALPHA:g} here" +
                 (" (not computed below 5 pairs)." if sizes[0] < 5 else "."))
    return text


def cell_text(value: Any, fmt: str) -> str:
    """'mean ± std' for a summary entry, a formatted number for a float, the text otherwise."""
    if isinstance(value, Mapping) and {"mean", "std"} <= value.keys():
        return f"{value['mean']:{fmt}} ± {value['std']:{fmt}}"
    if isinstance(value, float):
        return f"{value:{fmt}}"
    return str(value)


def _cell(value: Any, fmt: str) -> str:
    """`cell_text` with '|' escaped for a markdown table."""
    return cell_text(value, fmt).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: Union[str, Mapping[str, str]] = ".2f"
) -> str:
    """A GitHub-markdown table of rows (e.g. from summarize); fmt is one format spec or one per column."""
    if not columns:
        raise UserInputError("markdown_table needs at least one column")
    formats = {c: fmt.get(c, ".2f") if isinstance(fmt, Mapping) else fmt for c in columns}
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    for number, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserInputError(f"row {number} lacks column(s) {missing}")
        lines.append("| " + " | ".join(_cell(row[c], formats[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_table(groups: Sequence[Group], keys: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows and columns of the summary table: each group's options as text, n, and mean/std of the keys."""
    option_keys = list(dict.fromkeys(k for g in groups for k in g.options))
    rows = [{**{k: option_text(row.get(k)) for k in option_keys}, **{k: row[k] for k in ("n", *keys)}}
            for row in summary_rows(groups, keys)]
    return rows, [*option_keys, "n", *keys]


def markdown_report(groups: Sequence[Group], keys: Sequence[str], pairs: Sequence[tuple[int, int]],
                    fmt: Mapping[str, str] | None = None, tested_keys: Sequence[str] | None = None) -> str:
    """The summary table of the groups (options, n, mean ± std of keys) and their paired tests, in markdown
    (of `tested_keys`; by default the keys among HEADLINE_KEYS: top1, nll and ece)."""
    rows, columns = summary_table(groups, keys)
    text = markdown_table(rows, columns, metric_formats(keys) | dict(fmt or {}))
    tested = paired_rows(groups, pairs, [k for k in HEADLINE_KEYS if k in keys] if tested_keys is None else tested_keys)
    if tested:
        text += f"\n{paired_caption(tested)}\n\n" + markdown_table(tested, PAIRED_COLUMNS, PAIRED_FORMATS)
    elif pairs:
        text += f"\n{NO_PAIRED_TESTS}\n"
    return text


def plot_groups(groups: Sequence[Group], key: str = "top1", x_option: str | None = None,
                ylabel: str | None = None, title: str | None = None) -> Figure:
    """Mean ± sample std of `key` per group: a row per group with a horizontal error bar (labels of any length
    stay readable, one per row), or with `x_option` (a numeric option) one line per setting of the other options
    against it. The axis says what `key` is unless `ylabel` is given."""
    from matplotlib.figure import Figure

    ylabel = ylabel or axis_label(key)
    stats = [summary_stats([g.runs[s] for s in sorted(g.runs)], [key], g.label)[key] for g in groups]
    title = title or f"{ylabel}, mean ± std over seeds"
    labels = [method_label(g.options) for g in groups]
    if x_option is None:
        longest = max((len(label) for label in labels), default=0)
        fig = Figure(figsize=(max(7.0, 3.5 + 0.075 * longest, 1.0 + 0.075 * len(title)), 1.5 + 0.35 * len(groups)))
        ax = fig.add_subplot()
        ax.errorbar([s["mean"] for s in stats], range(len(groups)), xerr=[s["std"] for s in stats], fmt="o",
                    capsize=4)
        ax.set_yticks(range(len(groups)), labels, fontsize="small")
        ax.invert_yaxis()  # the first group on top, as in the tables
        ax.set_xlabel(ylabel)
    else:
        fig = Figure(figsize=(6.5, 4.5))
        ax = fig.add_subplot()
        lines: dict[str, list[tuple[float, dict[str, float]]]] = {}
        for group, stat in zip(groups, stats):
            rest = method_label({k: v for k, v in group.options.items() if k != x_option})
            lines.setdefault("" if rest == "-" else rest, []).append((float(group.options[x_option]), stat))
        for name, points in lines.items():
            points.sort(key=lambda p: p[0])
            ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points], yerr=[p[1]["std"] for p in points],
                        marker="o", capsize=4, label=name or None)
        ax.set(xlabel=x_option, ylabel=ylabel)
        if any(lines):
            ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")  # centred on the figure, which is sized to hold it
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


NOISE_OPTION = "noise"


def noise_setting(value: Any) -> tuple[str, float]:
    """(kind, rate) of a `noise` option value such as "symmetric:0.4"; clean labels (None) are ("clean", 0.0)."""
    if value is None:
        return "clean", 0.0
    kind, _, rate = str(value).partition(":")
    try:
        return kind, float(rate)
    except ValueError:
        raise UserInputError(f"noise setting {value!r} is not KIND:RATE") from None


def plot_noise_groups(groups: Sequence[Group], key: str = "top1", ylabel: str | None = None,
                      title: str | None = None) -> Figure:
    """`key` against the noise rate, one panel per noise kind and one line per setting of the other options
    (method, ...), mean with a ± sample-std band over seeds; clean-label groups are the rate-0 point of every
    panel. The axis says what `key` is, at the last epoch, unless `ylabel` is given."""
    from matplotlib.figure import Figure

    ylabel = ylabel or f"final {axis_label(key)}"
    settings = [noise_setting(g.options.get(NOISE_OPTION)) for g in groups]
    kinds = list(dict.fromkeys(kind for kind, _ in settings if kind != "clean")) or ["clean"]
    fig = Figure(figsize=(5.5 * len(kinds), 4.5))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for group, (group_kind, rate) in zip(groups, settings):
            if group_kind not in (kind, "clean"):
                continue
            stat = summary_stats([group.runs[s] for s in sorted(group.runs)], [key], group.label)[key]
            rest = ", ".join(f"{k}={option_text(v)}" for k, v in group.options.items() if k != NOISE_OPTION)
            lines.setdefault(rest, []).append((rate, stat["mean"], stat["std"]))
        for name, points in lines.items():
            rate, mean, std = (np.array(column) for column in zip(*sorted(points)))
            (line,) = ax.plot(rate, mean, marker="o", label=name or None)
            ax.fill_between(rate, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(xlabel=f"{kind} noise rate", ylabel=ylabel, title=kind)
        ax.grid(alpha=0.3)
        if any(lines):
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_noise_curves(curves: Sequence[tuple[Mapping[str, Any], Sequence[Sequence[float]]]], ylabel: str,
                      title: str | None = None) -> Figure:
    """Per-epoch curves of cells with label noise, one panel per noise setting and one line per setting of the
    other options (mean with a ± sample-std band over the runs): `curves` holds (cell options, runs' curves)."""
    from matplotlib.figure import Figure

    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for options, runs in curves:
        rest = ", ".join(f"{k}={option_text(v)}" for k, v in options.items() if k != NOISE_OPTION) or "all"
        length = max(len(r) for r in runs)
        table = np.full((len(runs), length), np.nan)
        for i, run in enumerate(runs):
            table[i, : len(run)] = run
        panels.setdefault(option_text(options.get(NOISE_OPTION)), []).append((rest, table))
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5.2 * columns, 3.8 * rows + 1.4))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (noise, lines) in zip(axes, panels.items()):
        for name, table in lines:
            x = np.arange(1, table.shape[1] + 1)
            mean = np.nanmean(table, axis=0)
            std = np.nanstd(table, axis=0, ddof=1) if table.shape[0] > 1 else np.zeros_like(mean)
            (line,) = ax.plot(x, mean, label=name)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(title=f"noise {noise}", xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 3), 1, 1))
    return fig
