"""benchmarks/robustness.py end to end on the quick digits study: the per-run CSV holds what the runs' own results
files say, the page is regenerated from the CSV alone (--from-csv, --publish, published_page_difference), and a
rerun reuses the saved results."""

from __future__ import annotations

import json

import numpy as np
from benchmarks import robustness

from olsmooth.studies.spec import load_study

ARGS = ["--quick", "--n", "20", "--eps", "8/255", "--steps", "2"]


def test_quick_robustness_tables_match_the_results_files(tmp_path, capsys):
    assert robustness.main([*ARGS, "--out", str(tmp_path)]) == 0
    page = (tmp_path / "robustness-digits-quick.md").read_text()
    runs = tmp_path / "robustness" / "digits-quick"
    ols = [json.loads((runs / "method=ols" / f"seed-{s}" / "results" / "attack-pgd-linf-8_255.json").read_text())
           for s in range(3)]
    robust = [r["robust_top1"] for r in ols]
    assert all(r["n"] == 20 and r["steps"] == 2 and r["surrogate"] is None for r in ols)
    assert f"{np.mean(robust):.2f} ± {np.std(robust, ddof=1):.2f}" in page
    transfer = json.loads((runs / "method=ls,ls_eps=0.1" / "seed-1" / "results" /
                           "attack-pgd-linf-8_255-transfer.json").read_text())
    assert transfer["surrogate"].endswith("method=ce/seed-1/last.pt")
    evals = [json.loads((runs / "method=ce" / f"seed-{s}" / "results" / "eval-last.json").read_text())
             for s in range(3)]
    assert f"{np.mean([e['ece_ts'] for e in evals]):.2f} ± {np.std([e['ece_ts'] for e in evals], ddof=1):.2f}" in page
    assert "Holm p" in page and "resolvable" in page
    assert (tmp_path / "robustness-digits-quick.html").stat().st_size > 0

    # the CSV: one row per run and seed, each figure the one its results file holds
    study = load_study("digits-quick")
    data = robustness.read_csv(study, tmp_path / "robustness-digits-quick.csv")
    rows = {(row["cell"], row["seed"]): row for row in data}
    assert len(rows) == 9
    assert [rows["method=ols", s]["pgd_top1@8/255"] for s in range(3)] == robust
    assert rows["method=ls,ls_eps=0.1", 1]["transfer_top1@8/255"] == transfer["robust_top1"]
    assert rows["method=ce", 0]["transfer_top1@8/255"] is None  # the baseline is not attacked by itself
    assert [rows["method=ce", s]["ece_ts"] for s in range(3)] == [e["ece_ts"] for e in evals]
    assert (rows["method=ls,ls_eps=0.1", 0]["method"], rows["method=ls,ls_eps=0.1", 0]["ls_eps"]) == ("ls", "0.1")

    # the page is what the CSV regenerates, printed and published
    capsys.readouterr()
    assert robustness.main(["--from-csv", str(tmp_path / "robustness-digits-quick.csv"), "--study", "digits-quick",
                            "--publish", str(tmp_path / "docs")]) == 0
    assert capsys.readouterr().out == page
    assert (tmp_path / "docs" / "benchmarks" / "digits-quick.md").read_text() == page
    assert robustness.published_page_difference(tmp_path / "docs", study) == ""

    before = {p: p.stat().st_mtime_ns for p in runs.rglob("results/*.json")}
    assert robustness.main([*ARGS, "--out", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("results/*.json")} == before  # reused, not recomputed


def test_a_bad_csv_is_one_line_and_status_2(tmp_path, capsys):
    path = tmp_path / "robustness.csv"
    assert robustness.main(["--from-csv", str(path), "--study", "digits-quick"]) == 2
    assert capsys.readouterr().err == f"python -m benchmarks.robustness: error: {path}: no such file\n"
    path.write_text("cell,seed\nmethod=ce,0\n")
    assert robustness.main(["--from-csv", str(path), "--study", "digits-quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "columns ['cell', 'seed'] are not" in err
