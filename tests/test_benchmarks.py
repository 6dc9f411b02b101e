"""The benchmarks as a package: the GPU check's CPU dry run end to end, and the shared command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def common(monkeypatch):
    """benchmarks.common, imported as `python -m benchmarks.x` sees it (the repository root on sys.path)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import common

    return common


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PY": sys.executable, "OUT": str(out)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpu_check (cpu): all steps passed" in done.stderr
    results = {name: json.loads((out / f"{name}.json").read_text())
               for name in ("loss_speed", "amp_check", "trainer_overhead")}
    for name, payload in results.items():
        assert (out / f"{name}.md").read_text().startswith("# ")
        assert f"-m benchmarks.{name} --device cpu --out {out} --quick" in payload["command"]

    assert {entry["device"] for entry in results["loss_speed"]["results"]} == {"cpu"}

    amp = results["amp_check"]
    assert amp["device"] == "cpu"
    assert [(r["dtype"], r["steps"]) for r in amp["runs"]] == [("float16", 6), ("bfloat16", 6)]
    assert all(r["losses_finite"] and r["matrix_finite"] for r in amp["runs"])

    trainer = results["trainer_overhead"]
    assert trainer["dataset"] == "digits" and trainer["repeats"] == 2
    (entry,) = trainer["results"]
    # 256 images in batches of 128: two steps per epoch; two rounds of every case on each clock
    assert (entry["device"], entry["images_per_epoch"], entry["steps_per_epoch"]) == ("cpu", 256, 2)
    for clock in entry["clocks"].values():
        assert {case: len(seconds) for case, seconds in clock["seconds_per_epoch"].items()} == {
            "bare": 2, "trainer-ce": 2, "trainer-ols": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_trainer_overhead_takes_device_cuda_and_says_when_there_is_none():
    done = run_module("-m", "benchmarks.trainer_overhead", "--device", "cuda", "--quick")
    assert done.returncode == 2
    assert "--device cuda: no CUDA device on this machine" in done.stderr
    assert "unrecognized arguments" not in done.stderr


def test_shared_parser_refuses_a_bad_device_and_sets_the_threads(common, capsys):
    parser = common.benchmark_parser("benchmarks.x", "One line.\n\nMore.", quick="q", device="d")
    with pytest.raises(SystemExit) as exit_info:
        common.parse_benchmark_args(parser, ["--device", "gpu"])
    assert exit_info.value.code == 2
    assert "--device must match" in capsys.readouterr().err
    threads = torch.get_num_threads()
    try:
        args = common.parse_benchmark_args(parser, ["--threads", "1", "--device", "cpu"])
        assert (args.threads, args.device, args.quick, args.out) == (1, "cpu", False, "benchmarks/out")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert not hasattr(args, "profile")


def test_grid_table_and_command_line(common):
    table = common.grid_table(["device", "ms"], [["cpu", 1], ["cuda", "a|b"]])
    assert table == "| device | ms |\n|:---|---:|\n| cpu | 1 |\n| cuda | a\\|b |"
    assert common.command_line(["--quick"], "benchmarks.loss_speed") == (
        ".venv/bin/python -m benchmarks.loss_speed --quick")


def test_large_k_sweep_of_chosen_class_counts_with_its_profile(tmp_path):
    done = run_module("-m", "benchmarks.loss_speed", "--large-k", "--quick", "--classes", "1000", "--profile",
                      "--threads", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "loss_speed_large_k.json").read_text())
    (entry,) = payload["results"]
    assert entry["num_classes"] == 1000 and set(entry["timings"]) == {"ce", "dense", "sparse_32"}
    (profile,) = payload["profile"]
    assert profile["num_classes"] == 1000 and len(profile["timings"]) == 11
    assert all(ms > 0 for ms in profile["timings"].values())
    page = (tmp_path / "loss_speed_large_k.md").read_text()
    assert "Where the time goes at K = 1,000" in page
    ms = profile["timings"]  # the budget: the dense step less the top-k loss, and less the CE step
    budget = ms["dense OLS step"] - ms["top-k OLS loss alone (eval mode)"]
    loosest = ms["dense OLS step"] - ms["CE step (forward + backward)"]
    floor = sum(v for k, v in ms.items() if k.startswith("floor: "))
    assert (f"may cost at most {budget:.3g} ms a step" in page and f"and {loosest:.3g} ms even" in page
            and f"np.nonzero, {floor:.3g} ms." in page)
    refused = run_module("-m", "benchmarks.loss_speed", "--classes", "1000")
    assert refused.returncode == 2 and "--classes" in refused.stderr
