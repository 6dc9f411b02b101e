"""`olsmooth report --html`: one self-contained page with the runs' figures, tables and saved results, and how it
looks in a real browser (headless Chromium, skipped where it is not installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from olsmooth.cli import main

TOP1 = {("ce", 0): 91.25, ("ce", 1): 90.50, ("ols", 0): 92.75, ("ols", 1): 93.00}
"""The last-epoch top-1 of each (method, seed) run of the fixture."""
EPOCHS = 3


def write_run(folder, method: str, seed: int, soft_labels: bool = False):
    """A finished run folder as training leaves it: config.yaml, metrics.jsonl, summary.json, OLS soft labels."""
    folder.mkdir(parents=True)
    config = {"method": method, "dataset": "digits", "model": "small_cnn", "seed": seed, "epochs": EPOCHS}
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    rows = [{"epoch": e, "train_loss": 2.0 / e, "top1": TOP1[method, seed] - 3 * (EPOCHS - e), "top5": 99.0,
             "nll": 0.3 + 0.1 * seed + 0.01 * (EPOCHS - e), "ece": 4.0 + seed, "lr": 0.1} for e in range(1, EPOCHS + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps({"top1_last": rows[-1]["top1"]}), encoding="utf-8")
    if soft_labels:
        (folder / "soft_labels").mkdir()
        for epoch in range(1, EPOCHS + 1):
            matrix = np.full((10, 10), (1 - 0.3 * epoch) / 9)
            np.fill_diagonal(matrix, 0.3 * epoch)
            np.save(folder / "soft_labels" / f"epoch-{epoch:03d}.npy", matrix.astype(np.float32))
    return folder


def save_result(folder, name: str, record: dict) -> None:
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / name).write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture
def runs(tmp_path):
    """Two CE and two OLS seeds; the OLS runs have soft labels, every run an eval and an attack result, CE seed 0
    saved predictions."""
    folders = [write_run(tmp_path / "study" / f"{m}-seed{s}", m, s, soft_labels=m == "ols") for m, s in TOP1]
    for folder, (method, seed) in zip(folders, TOP1):
        save_result(folder, "eval-best.json", {"command": "eval", "top1": TOP1[method, seed], "ece": 3.5 + seed,
                                               "temperature": 1.25 + 0.5 * seed, "ece_ts": 1.5, "nll_ts": 0.25,
                                               "shift_consistency": 88.0 + seed})
        save_result(folder, "attack-pgd-linf-8_255.json", {
            "command": "attack", "checkpoint": str(folder / "best.pt"), "clean_top1": TOP1[method, seed],
            "robust_top1": 10.0 + 20 * (method == "ols") + seed, "attack": "pgd", "eps": 8 / 255, "eps_text": "8/255",
            "norm": "linf", "steps": 20, "n": 500, "surrogate": None, "warnings": ["likely gradient masking"]})
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=200).astype(np.float32)
    np.savez(folders[0] / "results" / "predictions.npz", probs=probs, labels=rng.integers(0, 10, 200))
    return folders


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def build(runs, out, capsys) -> str:
    assert main(["report", *map(str, runs), "--html", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    return out.read_text(encoding="utf-8")


def test_the_page_references_nothing_outside_itself(runs, tmp_path, capsys):
    page = build(runs, tmp_path / "report.html", capsys)
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "study"]  # no temporary file left


def test_the_page_holds_runs_metrics_and_results(runs, tmp_path, capsys):
    page = build(runs, tmp_path / "report.html", capsys)
    for name in ("ce-seed0", "ce-seed1", "ols-seed0", "ols-seed1"):
        assert f"<td>{name}</td>" in page
    for method in ("ce", "ols"):
        assert mean_std([TOP1[method, 0], TOP1[method, 1]]) in page  # final top-1 and the eval top-1
        robust = [10.0 + 20 * (method == "ols") + s for s in (0, 1)]
        assert mean_std(robust) in page
    assert "0.3500 ± 0.0707" in page  # NLL of the last epoch: 0.3 and 0.4
    assert "1.500 ± 0.354" in page  # temperature 1.25 and 1.75, three decimals
    assert "88.50 ± 0.71" in page  # shift consistency
    assert "method=ce − method=ols" in page  # the paired tests
    for heading in ("Final metrics", "Training curves", "Reliability", "Soft labels (OLS)",
                    "Evaluation and robustness results", "Adversarial robustness", "Runs"):
        assert f">{heading}</h" in page
    assert "likely gradient masking" in page
    assert "pgd: projected gradient ascent" in page and "(white-box)" in page  # the attack registry's help
    assert page.count("<img") == 4 + 1 + 2  # four curves, one reliability diagram, heatmaps and soft-label curves


def test_without_saved_results_the_sections_are_left_out(tmp_path, capsys):
    folders = [write_run(tmp_path / f"ce-seed{s}", "ce", s) for s in (0, 1)]
    page = build(folders, tmp_path / "report.html", capsys)
    assert "Training curves" in page and "91.25" in page
    for absent in ("Reliability", "Soft labels", "Evaluation and robustness", "Paired tests"):
        assert absent not in page


def write_broken_json(run) -> None:
    (run / "results" / "eval-best.json").write_text("{not json", encoding="utf-8")


def write_flat_predictions(run) -> None:
    np.savez(run / "results" / "predictions.npz", probs=np.ones(3), labels=np.zeros(3))


@pytest.mark.parametrize("damage, message", [(write_broken_json, "malformed JSON"),
                                             (write_flat_predictions, "expected probs (N, K)")])
def test_a_broken_file_in_a_run_is_one_line_and_nothing_is_written(runs, tmp_path, capsys, damage, message):
    damage(runs[1])
    out = tmp_path / "report.html"
    assert main(["report", *map(str, runs), "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("olsmooth: error") == 1
    assert not out.exists()


def test_html_to_a_folder_is_refused(runs, tmp_path, capsys):
    assert main(["report", *map(str, runs), "--html", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package chromium)")
def test_chromium_renders_the_page(runs, tmp_path, capsys):
    from PIL import Image

    page = tmp_path / "report.html"
    build(runs, page, capsys)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    page.as_uri()], check=True, capture_output=True, timeout=180)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (2000, 1280, 3)
    dark = (image.sum(axis=2) < 200).mean()  # text
    colour = (image.max(axis=2) - image.min(axis=2) > 80).mean()  # figures: matplotlib's coloured lines and maps
    assert dark > 0.002 and colour > 0.002
    # the page is 1,200 pixels wide at most, centred: the margin left of the scroll bar stays blank (no overflow)
    assert (image[:, 1236:1260].min(axis=2) > 245).all()


def test_soft_label_names_without_a_checkpoint_come_from_the_runs_dataset(runs, tmp_path, capsys):
    """Run folders whose checkpoints were deleted: the table of similar classes names them as the dataset does."""
    from PIL import Image
    names = [f"kind{c}" for c in range(10)]
    for split in ("train", "test"):
        for name in names:
            (tmp_path / "tree" / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / "tree" / split / name / "a.png")
    for folder in runs:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        config.update(dataset="imagefolder", data_root=str(tmp_path / "tree"))
        (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    page = build(runs, tmp_path / "report.html", capsys)
    table = page[page.index("Most similar classes after epoch"):]
    assert all(f"<td>{name}</td>" in table for name in names)
