"""benchmarks/robustness.py end to end on the quick digits study: tables from the runs' own results files."""

from __future__ import annotations

import json

import numpy as np
from benchmarks import robustness


def test_quick_robustness_tables_match_the_results_files(tmp_path, capsys):
    assert robustness.main(["--quick", "--n", "20", "--eps", "8/255", "--steps", "2", "--out", str(tmp_path)]) == 0
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
    assert (tmp_path / "robustness-digits-quick.html").stat().st_size > 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("results/*.json")}
    assert robustness.main(["--quick", "--n", "20", "--eps", "8/255", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("results/*.json")} == before  # reused, not recomputed
