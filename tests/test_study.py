"""`olsmooth study`: a 2-cell x 2-seed grid on digits, stopped in its second run and continued; the tables checked
against the run folders' metrics.jsonl with numpy and scipy; bad study files; --dry-run; baseline pairing."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from olsmooth.cli import main
from olsmooth.data import NOISE_KINDS, NoiseSpec
from olsmooth.engine.trainer import Trainer
from olsmooth.errors import UserInputError
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import baseline_pairs, load_study, parse_study, studies_dir

STUDY = {
    "description": "CE against LS on digits.",
    "base": {"dataset": "digits", "epochs": 2, "train_subset": 300},
    "grid": {"method": ["ce", {"method": "ls", "ls_eps": 0.1}]},
    "seeds": [0, 1],
    "baselines": [{"method": "ce"}],
}
CELLS = ("method=ce", "method=ls,ls_eps=0.1")
SEEDS = (0, 1)


def write_study(folder: Path, content) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(content) if isinstance(content, dict) else content)
    return path


def tree(folder: Path) -> dict[str, int]:
    """Every file under folder with its modification time in ns: what a rerun must leave alone."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


class StopInSecondRun:
    """A log that records every line and raises KeyboardInterrupt (as Ctrl-C would) after the second run's
    first epoch was saved: the trainer logs an epoch's line once its files are written."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        if any(line.startswith("[1/4]") for line in self.lines) and text.strip().startswith("epoch"):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study stopped in its second run, then listed with --dry-run, then run to the end, then rerun."""
    root = tmp_path_factory.mktemp("study")
    path, out = write_study(root, STUDY), root / "out"
    stop = StopInSecondRun()
    with pytest.raises(KeyboardInterrupt):
        run_study(load_study(path), out, log=stop)
    interrupted = out / CELLS[1] / "seed-0"
    state = {"stop_lines": stop.lines, "first_row": metrics(interrupted), "tree": tree(out)}
    capture = {}
    for step, argv in (("dry", ["--dry-run"]), ("run", []), ("rerun", [])):
        capture[step] = run_cli(["study", "-c", str(path), "--out", str(out), *argv])
        state[f"tree_after_{step}"] = tree(out)
    return {"path": path, "out": out, "interrupted": interrupted, **state, **capture}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_stopped_study_left_one_run_done_and_one_partial(study):
    assert study["stop_lines"][-1].strip().startswith("epoch   1")
    assert len(study["first_row"]) == 1  # the second run was stopped after its first epoch
    folders = {str(Path(name).parent) for name in study["tree"]}
    assert {f"{CELLS[0]}/seed-0", f"{CELLS[1]}/seed-0"} <= folders and not any("seed-1" in f for f in folders)
    assert f"{CELLS[1]}/seed-0/last.pt" in study["tree"]


def test_dry_run_lists_states_and_writes_nothing(study):
    code, out, _ = study["dry"]
    assert code == 0
    states = [line.split()[0] for line in out.splitlines()[:4]]
    assert states == ["done", "partial", "new", "new"]
    assert "(1 of 2 epochs)" in out.splitlines()[1]
    assert out.splitlines()[-1] == "4 runs (2 cells x 2 seeds), 3 to train"
    assert study["tree_after_dry"] == study["tree"]


def test_run_continues_the_partial_run_from_last_pt_and_skips_the_done_one(study):
    code, out, _ = study["run"]
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert lines[0] == f"[1/4] {CELLS[0]}/seed-0: done, skipped"
    assert re.fullmatch(rf"\[2/4\] {re.escape(CELLS[1])}/seed-0: resumed 1 epoch\(s\) in \S+; elapsed \S+, "
                        r"about \S+ left", lines[1])
    assert lines[2].startswith(f"[3/4] {CELLS[0]}/seed-1: trained 2 epoch(s) in ")
    assert f"resuming {study['interrupted']} after epoch 1" in out
    rows = metrics(study["interrupted"])
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == study["first_row"][0]  # epoch 1 was not trained again (its timings would differ)
    done = f"{CELLS[0]}/seed-0/"
    assert {k: v for k, v in study["tree_after_run"].items() if k.startswith(done)} == \
           {k: v for k, v in study["tree"].items() if k.startswith(done)}


def test_the_continued_run_ends_as_an_uninterrupted_one(study, tmp_path):
    spec = load_study(study["path"])
    cell = next(c for c in spec.cells if c.name == CELLS[1])
    Trainer(spec.config(cell, 0, tmp_path / "whole"), log=lambda _text: None).fit()
    untimed = [[{k: v for k, v in row.items() if not k.endswith(("_s", "_per_s"))} for row in metrics(folder)]
               for folder in (tmp_path / "whole", study["interrupted"])]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 2


def test_rerun_skips_every_finished_run(study):
    code, out, _ = study["rerun"]
    assert code == 0
    assert [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("[")] == ["done, skipped"] * 4
    runs_only = {k: v for k, v in study["tree_after_rerun"].items() if not k.startswith("results.")}
    assert runs_only == {k: v for k, v in study["tree_after_run"].items() if not k.startswith("results.")}


def finals(study) -> dict[tuple[str, int], list[dict]]:
    return {(cell, seed): metrics(study["out"] / cell / f"seed-{seed}") for cell in CELLS for seed in SEEDS}


def test_results_csv_has_one_row_per_run_from_metrics(study):
    with open(study["out"] / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cell"], int(r["seed"])) for r in rows] == [(c, s) for s in SEEDS for c in CELLS]
    for row in rows:
        records = metrics(study["out"] / row["folder"])
        best = int(np.argmax([r["top1"] for r in records]))  # the first of tied maxima
        assert float(row["top1"]) == records[-1]["top1"] and float(row["ece"]) == records[-1]["ece"]
        assert int(row["best_epoch"]) == best + 1 and float(row["best_nll"]) == records[best]["nll"]
        assert row["method"] in ("ce", "ls") and row["ls_eps"] == ("0.1" if row["method"] == "ls" else "-")


def md_rows(text: str, first: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if "|" in line]
    return [r for r in rows if r[0] == first]


def test_results_md_summary_and_paired_test_against_the_baseline(study):
    text = (study["out"] / "results.md").read_text()
    runs = finals(study)
    for cell, method in zip(CELLS, ("ce", "ls")):
        top1 = np.array([runs[cell, s][-1]["top1"] for s in SEEDS])
        best_nll = np.array([max(runs[cell, s], key=lambda r: r["top1"])["nll"] for s in SEEDS])
        row = md_rows(text, method)[0]
        assert row[2] == "2"
        assert row[3] == f"{top1.mean():.2f} ± {top1.std(ddof=1):.2f}"
        assert row[7] == f"{best_nll.mean():.4f} ± {best_nll.std(ddof=1):.4f}"
    ls = np.array([runs[CELLS[1], s][-1]["nll"] for s in SEEDS])
    ce = np.array([runs[CELLS[0], s][-1]["nll"] for s in SEEDS])
    nll = next(r for r in md_rows(text, "method=ls, ls_eps=0.1 − method=ce") if r[2] == "nll")
    assert nll[4] == f"{(ls - ce).mean():+.3f}"
    if len(set(ls - ce)) > 1:  # two equal differences give the documented limit, not scipy's NaN
        assert nll[6] == f"{stats.ttest_rel(ls, ce).pvalue:.3f}"
        assert nll[7] == nll[6]  # one comparison per metric: Holm leaves its p as it is
    assert not md_rows(text, "method=ce − method=ce")
    assert (study["out"] / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_publish_from_a_csv_of_rows_trained_apart(study, tmp_path):
    """Seeds trained on two machines: their results.csv rows concatenated publish the page, data and figure that
    publishing the whole study's folder gives; a missing CSV stops in one line before anything is written."""
    header, *rows = (study["out"] / "results.csv").read_text().splitlines(keepends=True)
    seed = {row: next(csv.reader([row]))[1] for row in rows}
    merged = tmp_path / "merged.csv"  # the rows of seed 0, then those of seed 1, as two machines wrote them
    merged.write_text(header + "".join(r for r in rows if seed[r] == "0") + "".join(r for r in rows if seed[r] == "1"))
    whole, apart = tmp_path / "whole", tmp_path / "apart"
    code, _, _ = run_cli(["study", "-c", str(study["path"]), "--out", str(study["out"]), "--publish", str(whole)])
    assert code == 0
    code, out, _ = run_cli(["study", "-c", str(study["path"]), "--out", str(study["out"]), "--from-csv", str(merged),
                            "--publish", str(apart)])
    assert code == 0 and out.count("wrote ") == 3
    assert (apart / "benchmarks" / "study.csv").read_bytes() == merged.read_bytes()
    assert (apart / "benchmarks" / "study.md").read_text() == (whole / "benchmarks" / "study.md").read_text()
    assert (apart / "figures" / "study-top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(["study", "-c", str(study["path"]), "--from-csv", str(tmp_path / "none.csv"),
                            "--publish", str(tmp_path / "docs")])
    assert code == 2 and err.count("\n") == 1 and "none.csv: no such file" in err
    assert not (tmp_path / "docs").exists()


def test_report_on_the_study_folders_groups_like_the_study(study, capsys):
    folders = [study["out"] / cell / f"seed-{seed}" for cell in CELLS for seed in SEEDS]
    assert main(["report", *map(str, folders)]) == 0
    out = capsys.readouterr().out
    assert [r[:2] for r in md_rows(out, "ce") + md_rows(out, "ls")] == [["ce", "{}"], ["ls", '{"eps":0.1}']]


BAD = [
    ({**STUDY, "grids": {}}, r"unknown key 'grids'; did you mean 'grid'\?"),
    ({**STUDY, "base": {"dataset": "digits", "epoch": 2}}, r"base: unknown option 'epoch'; did you mean 'epochs'"),
    ({**STUDY, "base": {"dataset": "digits", "epochs": "two"}}, r"epochs"),
    ({**STUDY, "grid": {"metod": ["ce"]}}, r"grid: unknown option 'metod'; did you mean 'method'"),
    ({**STUDY, "grid": {"method": []}}, r"grid axis method is empty"),
    ({**STUDY, "grid": {"method": "ce"}}, r"grid axis method must be a list of values, got 'ce'"),
    ({**STUDY, "grid": {"method": ["ce"], "seed": [0, 1]}}, r"seed is set by the study"),
    ({**STUDY, "grid": {"method": ["ce", "ce"]}}, r"holds the cell method=ce twice"),
    ({**STUDY, "grid": {"method": [{"ls_eps": 0.1}]}}, r"must set method"),
    ({**STUDY, "baselines": [{"method": "tfkd"}]}, r"baseline \{\"method\":\"tfkd\"\} matches no cell"),
    ({**STUDY, "baselines": [{"metod": "ce"}]}, r"baseline: unknown option 'metod'"),
    ({**STUDY, "seeds": []}, r"seeds must be a non-empty list of integers"),
    ({**STUDY, "seeds": [0, 0]}, r"seeds repeat"),
    ("grid: [unclosed\n", r"malformed YAML"),
    ("- a\n- list\n", r"must hold a mapping"),
]


@pytest.mark.parametrize("content, message", BAD)
def test_bad_study_file_is_one_line_exit_2_and_writes_nothing(tmp_path, content, message):
    path, out = write_study(tmp_path, content), tmp_path / "out"
    for argv in ([], ["--dry-run"]):
        code, stdout, stderr = run_cli(["study", "-c", str(path), "--out", str(out), *argv])
        assert code == 2 and stdout == ""
        assert len(stderr.splitlines()) == 1 and stderr.startswith("olsmooth: error: "), stderr
        assert re.search(message, stderr), stderr
    assert not out.exists()


def test_bad_seeds_flag_and_missing_study(tmp_path):
    path = write_study(tmp_path, STUDY)
    with pytest.raises(UserInputError, match="seeds repeat"):
        load_study(path, seeds=[1, 1])
    code, out, _ = run_cli(["study", "-c", str(path), "--out", str(tmp_path / "out"), "--seeds", "3", "4", "5",
                            "--dry-run"])
    assert code == 0 and out.splitlines()[-1] == "6 runs (2 cells x 3 seeds), 6 to train"
    assert [line.split("/")[-1] for line in out.splitlines()[:6:2]] == ["seed-3", "seed-4", "seed-5"]
    code, _, err = run_cli(["study", "-c", "no-such-study", "--out", str(tmp_path / "out")])
    assert code == 2 and "no study file or shipped study 'no-such-study'; shipped: " in err


def test_a_folder_of_another_experiment_is_refused_before_training(tmp_path):
    path, out = write_study(tmp_path, STUDY), tmp_path / "out"
    folder = out / CELLS[0] / "seed-0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"dataset": "digits", "method": "ce", "seed": 0, "epochs": 5,
                                                        "train_subset": 300, "model": "small_cnn"}))
    (folder / "metrics.jsonl").write_text("")
    (folder / "last.pt").write_bytes(b"")
    before = tree(out)
    code, _, err = run_cli(["study", "-c", str(path), "--out", str(out)])
    assert code == 2 and "holds a run with epochs=5, the study asks for 2" in err and len(err.splitlines()) == 1
    assert tree(out) == before
    (folder / "config.yaml").unlink()
    code, _, err = run_cli(["study", "-c", str(path), "--out", str(out), "--dry-run"])
    assert code == 2 and "exists and is not a run folder" in err


def test_baseline_pairs_keep_the_other_axes_fixed():
    study = parse_study({"grid": {"model": ["a_net", "b_net"],
                                  "method": ["ce", {"method": "ls", "ls_eps": 0.1}, "ols"]},
                         "baselines": [{"method": "ce"}, {"method": "ls"}]}, "pairs", "test")
    names = [cell.name for cell in study.cells]
    assert names[:3] == ["model=a_net,method=ce", "model=a_net,method=ls,ls_eps=0.1", "model=a_net,method=ols"]
    pairs = {(names[i], names[j]) for i, j in baseline_pairs(study)}
    expected = {(f"model={m},method={x}", f"model={m},method={b}") for m in ("a_net", "b_net")
                for x, b in (("ls,ls_eps=0.1", "ce"), ("ols", "ce"), ("ce", "ls,ls_eps=0.1"), ("ols", "ls,ls_eps=0.1"))}
    assert pairs == expected


def test_a_cell_that_leaves_an_option_to_the_base_shows_the_base_value():
    """A cell setting lr: null (the dataset default) and one leaving lr to the base's 0.2 must not look alike."""
    study = parse_study({"base": {"dataset": "digits", "lr": 0.2},
                         "grid": {"method": ["ce", {"method": "ce", "lr": None}, {"method": "ls", "ls_eps": 0.1}]}},
                        "shown", "test")
    assert [study.shown_options(cell) for cell in study.cells] == [
        {"method": "ce", "lr": 0.2}, {"method": "ce", "lr": None}, {"method": "ls", "lr": 0.2, "ls_eps": 0.1}]
    assert [cell.name for cell in study.cells] == ["method=ce", "method=ce,lr=-", "method=ls,ls_eps=0.1"]


def test_shipped_studies_are_valid():
    shipped = {p.stem: load_study(p) for p in studies_dir().glob("*.yaml")}
    accuracy = shipped["accuracy-fashion-mnist"]
    assert len(accuracy.cells) == 10 and accuracy.seeds == (0, 1, 2)
    assert accuracy.base == {"dataset": "fashion-mnist", "train_subset": 12000, "train_subset_draw": "first",
                             "epochs": 10, "save_every": 1}
    assert {c.name for c in accuracy.cells} >= {"model=small_resnet,method=ols,ols_preset=paper-cifar",
                                                "model=small_cnn,method=ls,ls_eps=0.1", "model=small_cnn,method=tfkd"}
    assert len(shipped["digits-quick"].cells) == 3


def test_shipped_studies_have_well_formed_noise_specs():
    """Every cell's label noise (grid or base) reads with the toolkit's parser and is written in its canonical
    form, so a cell's name and report group are those of its configuration; the noise studies have some."""
    seen = 0
    for path in sorted(studies_dir().glob("*.yaml")):
        study = load_study(path)
        for cell in study.cells:
            written = cell.options.get("noise", study.base.get("noise"))
            if written is not None:
                spec = NoiseSpec.parse(written)
                assert spec.kind in NOISE_KINDS and 0.0 <= spec.rate < 1.0, (path.name, cell.name)
                assert written == str(spec) == cell.config.noise, (path.name, cell.name)
                seen += 1
    assert seen >= 3 * 4  # the three noisy-* studies, four noise settings each at least


def test_base_can_be_a_recipe_and_the_grid_overrides_it():
    configs = studies_dir().parent
    recipe = yaml.safe_load((configs / "cifar100-resnet34-ce.yaml").read_text())
    protocol = yaml.safe_load((configs / f"{recipe['base']}.yaml").read_text())  # the recipe's epochs come from it
    study = parse_study({"base": "cifar100-resnet34-ce", "grid": {"lr": [0.05, 0.1]}}, "recipe", "test")
    assert [c.config.lr for c in study.cells] == [0.05, 0.1]
    assert all(c.config.epochs == protocol["epochs"] and c.config.model == recipe["model"] for c in study.cells)
    assert [c.name for c in study.cells] == ["lr=0.05", "lr=0.1"]


def test_a_noise_study_plots_top1_against_the_rate_and_collects_memorisation(tmp_path):
    from olsmooth.analysis.report import plot_noise_groups
    from olsmooth.studies.plan import plan_runs
    from olsmooth.studies.results import cell_groups, write_results
    study = parse_study({"base": {"epochs": 1, "train_subset": 200},
                         "grid": {"noise": [None, "symmetric:0.4", "pairflip:0.2"], "method": ["ce", "ols"]},
                         "seeds": [0, 1]}, "noisy", "test")
    run_study(study, tmp_path, log=lambda _line: None)
    text = (tmp_path / "results.md").read_text()
    assert "## Memorisation" in text and (tmp_path / "memorisation.png").stat().st_size > 0
    memorised = [json.loads((tmp_path / "noise=symmetric_0.4,method=ols" / f"seed-{s}" / "metrics.jsonl")
                            .read_text().splitlines()[-1])["noisy_fit_noisy"] for s in (0, 1)]
    assert f"{np.mean(memorised):.2f} ± {np.std(memorised, ddof=1):.2f}" in text
    for row in csv.DictReader((tmp_path / "results.csv").open()):  # the true share of a row's samples from other
        if row["method"] != "ols" or row["noise"] == "-":         # classes, from the run's saved labels
            assert row["noise_source_mass"] == ""
            continue
        clean, noisy = (np.load(tmp_path / row["folder"] / f"{kind}_labels.npy") for kind in ("clean", "noisy"))
        share = np.mean([np.mean(clean[noisy == y] != y) for y in np.unique(noisy)])
        assert float(row["noise_source_mass"]) == pytest.approx(share)
    groups = cell_groups(study, plan_runs(study, tmp_path))
    figure = plot_noise_groups(groups)
    assert [ax.get_title() for ax in figure.axes] == ["symmetric", "pairflip"]
    # one line per method in each panel, from the clean point (rate 0) to the noisy one
    assert [list(line.get_xdata()) for line in figure.axes[0].get_lines()] == [[0.0, 0.4], [0.0, 0.4]]
    assert write_results(study, plan_runs(study, tmp_path), tmp_path)[-1].name == "memorisation.png"


def test_a_study_with_a_validation_split_reports_test_figures_and_the_best_validation_epoch(tmp_path):
    study = parse_study({"base": {"epochs": 2, "train_subset": 200, "val_fraction": 0.2},
                         "grid": {"method": ["ce", "ols"]}, "seeds": [0, 1]}, "val", "test")
    run_study(study, tmp_path, log=lambda _line: None)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    for row in rows:
        summary = json.loads((tmp_path / row["folder"] / "summary.json").read_text())
        assert int(row["best_epoch"]) == summary["best_epoch"]
        assert float(row["top1"]) == pytest.approx(summary["test_top1_last"])
        assert float(row["best_top1"]) == pytest.approx(summary["test_top1_best"])
