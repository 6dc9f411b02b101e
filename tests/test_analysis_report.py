"""Reports: reading run folders, mean ± sample std by hand, paired tests, markdown tables."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from olsmooth.analysis import final_metrics, markdown_table, paired_test, read_metrics, summarize
from olsmooth.analysis.report import Group, method_label, paired_rows, plot_groups
from olsmooth.cli import main
from olsmooth.errors import UserInputError

EPOCHS = [
    {"epoch": 1, "train_loss": 2.0, "top1": 60.0, "top5": 90.0, "nll": 1.2, "ece": 8.0, "lr": 0.1},
    {"epoch": 2, "train_loss": 1.5, "top1": 75.0, "top5": 95.0, "nll": 0.9, "ece": 5.0, "lr": 0.05},
    {"epoch": 3, "train_loss": 1.2, "top1": 71.0, "top5": 96.0, "nll": 0.8, "ece": 4.0, "lr": 0.01},
]


def write_run(folder, lines: list[str]):
    """A run folder whose metrics.jsonl holds these lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", [json.dumps(e) for e in EPOCHS[:2]] + [""] + [json.dumps(EPOCHS[2])])


def test_read_metrics_from_folder_or_file(run):
    assert read_metrics(run) == EPOCHS  # the blank line is skipped
    assert read_metrics(str(run / "metrics.jsonl")) == EPOCHS


def test_final_metrics_last_and_best(run):
    assert final_metrics(run) == EPOCHS[2]
    assert final_metrics(run, which="best") == EPOCHS[1]
    with pytest.raises(UserInputError, match="'last' or 'best'"):
        final_metrics(run, which="worst")


def test_best_takes_the_first_of_tied_epochs(tmp_path):
    records = [{"epoch": e, "top1": t} for e, t in [(1, 50.0), (2, 70.0), (3, 70.0)]]
    assert final_metrics(write_run(tmp_path, [json.dumps(r) for r in records]), "best")["epoch"] == 2


@pytest.mark.parametrize("lines, message", [
    ([json.dumps(EPOCHS[0]), '{"epoch": 2, "top1": 7'], r"metrics\.jsonl:2: malformed JSON"),
    ([json.dumps(EPOCHS[0]), "[1, 2]"], r"metrics\.jsonl:2: expected a JSON object"),
    (['{"top1": 50.0}'], r"metrics\.jsonl:1: .*'epoch'"),
    ([""], "no epochs"),
])
def test_malformed_metrics_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(UserInputError, match=message):
        read_metrics(write_run(tmp_path, lines))


def test_missing_metrics_file_names_it(tmp_path):
    with pytest.raises(UserInputError, match=r"metrics\.jsonl: no such file"):
        read_metrics(tmp_path)
    with pytest.raises(UserInputError, match="no such file"):
        final_metrics(tmp_path / "absent")


def test_best_needs_top1(tmp_path):
    with pytest.raises(UserInputError, match="top1"):
        final_metrics(write_run(tmp_path, ['{"epoch": 1, "nll": 1.0}']), "best")


def test_summarize_by_hand():
    results = {
        "ols": [{"top1": 70.0, "nll": 1.0}, {"top1": 72.0, "nll": 1.5}, {"top1": 77.0, "nll": 2.0}],
        "ce": [{"top1": 68.0, "nll": 1.25}],
    }
    ols, ce = summarize(results, keys=("top1", "nll"))
    # top1: mean 73, deviations -3, -1, 4 -> (9 + 1 + 16) / (3 - 1) = 13; nll: mean 1.5, (0.25 + 0 + 0.25) / 2
    assert ols["method"] == "ols" and ols["n"] == 3
    assert ols["top1"] == {"mean": 73.0, "std": pytest.approx(math.sqrt(13))}
    assert ols["nll"] == {"mean": 1.5, "std": pytest.approx(0.5)}
    assert ce == {"method": "ce", "n": 1, "top1": {"mean": 68.0, "std": 0.0}, "nll": {"mean": 1.25, "std": 0.0}}


def test_summarize_default_keys_and_errors():
    row = summarize({"ls": EPOCHS})[0]
    assert set(row) == {"method", "n", "top1", "top5", "nll", "ece"}
    with pytest.raises(UserInputError, match="'ls': 1 of 3 runs lack 'top1'"):
        summarize({"ls": [{"top1": 1.0}, {"top1": 2.0}, {"nll": 1.0}]}, keys=("top1",))
    with pytest.raises(UserInputError, match="no runs"):
        summarize({"ls": []})


def test_paired_test_hand_case():
    # differences 1..5: mean 3, sample sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 3 * sqrt(2);
    # all five differences positive: exact two-sided signed-rank p = 2 / 2**5.
    result = paired_test([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    assert result["n"] == 5 and result["mean_diff"] == 3.0
    assert result["t_stat"] == pytest.approx(3 * math.sqrt(2))
    assert result["wilcoxon_pvalue"] == pytest.approx(2 / 32)


def test_paired_test_identical_lists():
    result = paired_test([70.1, 71.3, 69.8, 72.0, 70.5], [70.1, 71.3, 69.8, 72.0, 70.5])
    assert result == {"n": 5, "mean_diff": 0.0, "sd_diff": 0.0, "mde": 0.0, "t_stat": 0.0, "t_pvalue": 1.0,
                      "wilcoxon_pvalue": 1.0}


def test_paired_test_constant_shift_and_small_n():
    result = paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert result["t_stat"] == math.inf and result["t_pvalue"] == 0.0
    assert result["wilcoxon_pvalue"] is None  # fewer than 5 pairs


def test_paired_test_agrees_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 1, 8), rng.normal(69, 1, 8)
    result = paired_test(list(a), list(b))
    assert result["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a - b).pvalue)


@pytest.mark.parametrize("a, b, message", [([1.0, 2.0], [1.0], "equal-length"), ([1.0], [2.0], "at least 2")])
def test_paired_test_rejects_bad_lists(a, b, message):
    with pytest.raises(UserInputError, match=message):
        paired_test(a, b)


def test_markdown_table_by_hand():
    rows = [
        {"method": "ols", "n": 3, "top1": {"mean": 73.0, "std": 3.60555}, "nll": {"mean": 1.5, "std": 0.5}},
        {"method": "a|b", "n": 1, "top1": {"mean": 68.0, "std": 0.0}, "nll": {"mean": 1.25, "std": 0.0}},
    ]
    assert markdown_table(rows, ["method", "n", "top1", "nll"], fmt={"nll": ".3f"}) == (
        "| method | n | top1 | nll |\n"
        "|:---|---:|---:|---:|\n"
        "| ols | 3 | 73.00 ± 3.61 | 1.500 ± 0.500 |\n"
        "| a\\|b | 1 | 68.00 ± 0.00 | 1.250 ± 0.000 |\n"
    )
    assert markdown_table([{"m": "x", "v": 0.123456}], ["m", "v"], fmt=".1f").splitlines()[-1] == "| x | 0.1 |"
    with pytest.raises(UserInputError, match="lacks"):
        markdown_table(rows, ["method", "top5"])


# -- `olsmooth report` on run folders -----------------------------------------------------------------------------

def fake_run(folder, seed, top1s, method="ce", epochs=None, **options):
    """A finished (or, with epochs > len(top1s), unfinished) run folder with hand-chosen top-1 values per epoch."""
    folder.mkdir(parents=True)
    config = {"dataset": "digits", "model": "small_cnn", "method": method, "loss_options": {}, "epochs":
              epochs or len(top1s), "seed": seed, "out": str(folder), "device": f"cuda:{seed}", "workers": seed}
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, **options}))
    rows = [{"epoch": e, "top1": t, "top5": 100.0, "nll": t / 100, "ece": 100 - t} for e, t in enumerate(top1s, 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def report(capsys, *argv):
    code = main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(text: str, first: str) -> list[list[str]]:
    """The cells of each markdown row whose first cell is `first`."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if "|" in line]
    return [r for r in rows if r[0] == first]


def mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def test_report_groups_by_every_differing_option_with_method_and_n_columns(tmp_path, capsys):
    # out, device and workers differ between all runs and do not split groups; the dataset does
    folders = [fake_run(tmp_path / "d0", 0, [99.0]), fake_run(tmp_path / "d1", 1, [98.0]),
               fake_run(tmp_path / "f0", 0, [38.0], dataset="fashion-mnist"),
               fake_run(tmp_path / "f1", 1, [40.0], dataset="fashion-mnist"),
               fake_run(tmp_path / "f2", 2, [39.0], dataset="fashion-mnist")]
    code, out, _ = report(capsys, *folders)
    assert code == 0
    assert out.splitlines()[0] == "| method | dataset | n | top1 | top5 | nll | ece |"
    assert table_rows(out, "ce") == [
        ["ce", "digits", "2", mean_std([99, 98]), "100.00 ± 0.00", "0.9850 ± 0.0071", mean_std([1, 2])],
        ["ce", "fashion-mnist", "3", mean_std([38, 40, 39]), "100.00 ± 0.00", "0.3900 ± 0.0100",
         mean_std([62, 60, 61])],
    ]


def test_report_paired_tests_match_runs_by_seed(tmp_path, capsys):
    ce = {0: 90.0, 1: 92.0, 2: 91.0}
    ols = {0: 91.0, 1: 95.0, 2: 91.5}
    folders = [fake_run(tmp_path / f"ols{s}", s, [ols[s]], method="ols") for s in (2, 0, 1)]
    folders += [fake_run(tmp_path / f"ce{s}", s, [ce[s]]) for s in (1, 2, 0)]
    code, out, _ = report(capsys, *folders)
    assert code == 0
    a, b = np.array([ols[s] for s in range(3)]), np.array([ce[s] for s in range(3)])
    expected_p = stats.ttest_rel(a, b).pvalue
    # 80% power at the 0.05 level with 3 pairs: noncentrality 5.6535 (simulated in test_analysis_stats.py)
    mde = 5.6535 * (a - b).std(ddof=1) / np.sqrt(3)
    row = table_rows(out, "method=ols − method=ce")[0]
    assert row[:5] == ["method=ols − method=ce", "-", "top1", "3", f"{(a - b).mean():+.3f}"]
    assert float(row[5]) == pytest.approx(mde, abs=0.002)
    assert row[6:] == [f"{expected_p:.3f}", f"{expected_p:.3f}", "n < 5"]  # one comparison a metric: Holm = p
    assert [r[2] for r in table_rows(out, "method=ols − method=ce")] == ["top1", "nll", "ece"]


def test_report_pairs_only_groups_that_differ_in_one_factor(tmp_path, capsys):
    folders = []
    for model in ("small_cnn", "small_resnet"):
        for method, options in (("ce", {}), ("ols", {"preset": "paper-cifar"})):
            folders += [fake_run(tmp_path / f"{model}-{method}-{s}", s, [80.0 + s * s + len(method + model)],
                                 method=method, model=model, loss_options=options) for s in (0, 1)]
    code, out, _ = report(capsys, *folders)
    assert code == 0
    comparisons = {(r[0], r[1]) for r in table_rows(out, "method=ce, loss_options={} − method=ols, "
                                                         'loss_options={"preset":"paper-cifar"}')}
    assert comparisons == {("method=ce, loss_options={} − method=ols, loss_options={\"preset\":\"paper-cifar\"}",
                            f"model={m}") for m in ("small_cnn", "small_resnet")}
    assert len(table_rows(out, "model=small_cnn − model=small_resnet")) == 2 * 3  # per method, per metric
    assert "small_cnn − " not in out.replace("model=small_cnn − model=small_resnet", "")  # no diagonal pairs


def test_report_setting_leaves_out_the_options_of_two_different_methods(tmp_path, capsys):
    folders = [fake_run(tmp_path / f"{m}{s}", s, [80.0 + s * len(m)], method=m,
                        loss_options={"eps": 0.1} if m == "ls" else {}) for m in ("ce", "ols", "ls") for s in (0, 1)]
    code, out, _ = report(capsys, *folders)
    assert code == 0
    assert {r[1] for r in table_rows(out, "method=ce − method=ols")} == {"-"}  # not loss_options={}
    assert len(table_rows(out, 'method=ce, loss_options={} − method=ls, loss_options={"eps":0.1}')) == 3


def test_a_pair_of_one_method_names_the_option_one_side_leaves_unset():
    """A study cell shows only the options it sets: dense OLS against OLS with top_k reads `loss_options=-` on the
    dense side (it read empty), and the method both share is their setting."""
    dense, top_k = Group({"method": "ols"}), Group({"method": "ols", "loss_options": {"top_k": 32}})
    for seed, (a, b) in enumerate([(98.5, 98.4), (98.6, 98.6), (98.4, 98.5)]):
        dense.add(seed, {"top1": a}, Path(f"dense{seed}"))
        top_k.add(seed, {"top1": b}, Path(f"top_k{seed}"))
    (row,) = paired_rows([dense, top_k], [(0, 1)], ["top1"])
    assert row["comparison"] == 'loss_options=- − loss_options={"top_k":32}' and row["setting"] == "method=ols"
    assert row["mean diff"] == pytest.approx(0.0)


def test_report_skips_folders_that_are_not_finished_runs(tmp_path, capsys):
    done = [fake_run(tmp_path / "a", 0, [70.0, 80.0]), fake_run(tmp_path / "b", 1, [70.0, 82.0])]
    unfinished = fake_run(tmp_path / "c", 2, [10.0], epochs=2)
    with_summary = fake_run(tmp_path / "d", 3, [84.0], epochs=2)  # summary.json marks a finished run too
    (with_summary / "summary.json").write_text("{}")
    not_a_run = tmp_path / "tensorboard"
    not_a_run.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, out, err = report(capsys, *done, unfinished, with_summary, not_a_run, a_file)
    assert code == 0
    assert table_rows(out, "ce")[0][:3] == ["ce", "3", mean_std([80, 82, 84])]
    notes = err.splitlines()
    assert len(notes) == 3 and all(line.startswith("olsmooth: note: skipping ") for line in notes)
    assert f"{unfinished}: not a finished run (1 of 2 epochs)" in notes[0]
    assert str(not_a_run) in notes[1] and str(a_file) in notes[2]


@pytest.mark.parametrize("config, rows, message", [
    ({"method": 3}, None, r"config\.yaml: method must be a string, got 3"),
    ({"method": ["ce"]}, None, r"method must be a string"),
    ({"seed": "zero"}, None, r"seed must be an integer"),
    ({"epochs": 0}, None, r"epochs must be an integer >= 1"),
    (None, ['{"epoch": 1, "top1": "71.5", "top5": 99.0, "nll": 1.0, "ece": 1.0}'],
     r"metrics\.jsonl: epoch 1 has '71\.5' for 'top1' \(expected a number\)"),
    (None, ['{"epoch": 1, "top1": 71.5, "top5": 99.0, "nll": 1.0}'], r"epoch 1 lacks 'ece'"),
    (None, ['{"epoch": 1, "top1": 7'], r"metrics\.jsonl:1: malformed JSON"),
])
def test_report_malformed_run_content_is_one_line_exit_2(tmp_path, capsys, config, rows, message):
    good = fake_run(tmp_path / "good", 0, [90.0])
    bad = fake_run(tmp_path / "bad", 1, [90.0])
    if config:
        saved = yaml.safe_load((bad / "config.yaml").read_text())
        (bad / "config.yaml").write_text(yaml.safe_dump({**saved, **config}))
    if rows:
        (bad / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    code, out, err = report(capsys, good, bad)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("olsmooth: error: ") and str(bad) in err
    assert re.search(message, err), err


def test_report_config_that_is_not_a_mapping(tmp_path, capsys):
    bad = fake_run(tmp_path / "bad", 0, [90.0])
    (bad / "config.yaml").write_text("- just\n- a list\n")
    code, _, err = report(capsys, bad)
    assert code == 2 and "expected a mapping" in err and len(err.splitlines()) == 1


def test_report_two_runs_of_one_experiment_and_seed_are_an_error(tmp_path, capsys):
    code, _, err = report(capsys, fake_run(tmp_path / "a", 0, [90.0]), fake_run(tmp_path / "copy", 0, [90.0]))
    assert code == 2 and "same seed 0" in err and len(err.splitlines()) == 1
    code, _, err = report(capsys, tmp_path / "a", tmp_path / "a")  # the same folder twice counts once
    assert code == 0


def test_report_json_and_best_epoch(tmp_path, capsys):
    folders = [fake_run(tmp_path / f"ce{s}", s, [70.0 + s, 60.0]) for s in (0, 1)]
    folders += [fake_run(tmp_path / f"ls{s}", s, [50.0, 65.0 + 2 * s], method="ls") for s in (0, 1)]
    code, out, _ = report(capsys, *folders, "--which", "best", "--json")
    assert code == 0
    payload = json.loads(out)
    ce, ls = payload["summary"]
    assert ce["method"] == "ce" and ce["n"] == 2 and ce["top1"]["mean"] == pytest.approx(70.5)
    assert ls["top1"] == {"mean": pytest.approx(66.0), "std": pytest.approx(math.sqrt(2))}
    top1 = next(t for t in payload["paired_tests"] if t["metric"] == "top1")
    assert top1["comparison"] == "method=ce − method=ls" and top1["mean diff"] == pytest.approx(4.5)


def test_report_with_no_finished_run(tmp_path, capsys):
    code, _, err = report(capsys, fake_run(tmp_path / "a", 0, [1.0], epochs=3))
    assert code == 2 and err.splitlines()[-1] == "olsmooth: error: no finished runs to report"


def test_plot_groups_line_per_setting_for_a_numeric_option():
    groups = [Group({"lr": lr, "model": m}, {0: {"top1": 50.0 + lr}, 1: {"top1": 52.0 + lr}})
              for m in ("a", "b") for lr in (0.1, 0.01)]
    figure = plot_groups(groups, "top1", x_option="lr")
    lines = figure.axes[0].get_lines()
    data = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in lines if line.get_linestyle() != "None"]
    assert data == [((0.01, 0.1), (51.01, 51.1))] * 2  # mean of 50 + lr and 52 + lr, sorted by lr
    assert len(plot_groups(groups).axes[0].get_yticklabels()) == 4
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["a", "b"]


@pytest.mark.parametrize("options, label", [
    ({"method": "ols", "ols_preset": "paper-cifar"}, "OLS paper-cifar"),
    ({"method": "ols", "ols_preset": "-"}, "OLS (ours)"),
    ({"method": "ls", "ls_eps": 0.1, "model": "small_cnn"}, "LS 0.1, small_cnn"),
    ({"method": "tfkd", "lr": 0.05, "pretrained": None}, "Tf-KD, lr=0.05"),
    ({"method": "newloss"}, "newloss"),
    ({"lr": 0.1}, "lr=0.1"),
    ({}, "-"),
])
def test_figure_legends_name_methods(options, label):
    assert method_label(options) == label


def test_plot_groups_tick_labels_and_title_stay_apart_and_inside_the_figure():
    """Long cell labels (a weights path on every cell) neither overlap each other nor leave the canvas."""
    path = "weights/mobilenet_v2-imagenet.pt"
    groups = [Group({"method": m, "pretrained": path, "ols_preset": p}, {0: {"top1": 80.0}, 1: {"top1": 81.0}})
              for m, p in (("ce", "-"), ("ls", "-"), ("ols", "paper-cifar"), ("ols", "paper-fine-grained"),
                           ("ols", "-"), ("ce", "-"))]
    figure = plot_groups(groups, "top1", title="family-transfer-64px-fashion-mnist: final test top-1, mean ± std "
                                               "over 3 seed(s)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(figure).get_renderer()
    ax = figure.axes[0]
    boxes = [label.get_window_extent(renderer) for label in ax.get_yticklabels()]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    canvas = figure.bbox
    suptitle = next(text for text in figure.texts if text.get_text().startswith("family-transfer-64px"))
    for box in [*boxes, suptitle.get_window_extent(renderer)]:
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1
