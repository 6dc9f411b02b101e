"""Reports: reading run folders, mean ± sample std by hand, paired tests, markdown tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from olsmooth.analysis import final_metrics, markdown_table, paired_test, read_metrics, summarize
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
    assert result == {"n": 5, "mean_diff": 0.0, "t_stat": 0.0, "t_pvalue": 1.0, "wilcoxon_pvalue": 1.0}


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
