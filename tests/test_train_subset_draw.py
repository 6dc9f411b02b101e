"""--train-subset-draw: `first` takes the training samples olsmooth took before the seeded draw (the first N, as
`Subset(train, range(min(N, len(train))))` at 0e1c6e2), `stratified` stays today's seeded draw; the option is
checked, recorded in config.yaml and last.pt, honoured on resume, and the accuracy study names the draw it sets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Subset

from olsmooth.cli import main
from olsmooth.data import build_datasets, dataset_labels, stratified_subset, training_subset
from olsmooth.data.sources.fashion_mnist import DEFAULT_ROOT as FASHION_ROOT
from olsmooth.engine.config import OPTIONS, build_config
from olsmooth.engine.trainer import Trainer, load_resume
from olsmooth.errors import UserInputError
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import load_study, resolve_study_path


def old_first_subset(train, n: int) -> Subset:
    """What the trainer did with --train-subset N at 0e1c6e2 (f5ca00f..c7d9464), where docs/results.md was measured."""
    return Subset(train, range(min(n, len(train))))


def trainer(tmp_path: Path, **options) -> Trainer:
    return Trainer(build_config(None, {"out": str(tmp_path / "r"), "method": "ce", "threads": 1, **options}),
                   log=lambda _line: None)


def test_the_option_defaults_to_stratified_and_offers_first():
    assert OPTIONS["train_subset_draw"].default == "stratified"
    assert tuple(OPTIONS["train_subset_draw"].choices) == ("stratified", "first")


@pytest.mark.parametrize("seed", [0, 3])
def test_first_takes_the_old_first_n_samples_whatever_the_seed(tmp_path, seed):
    run = trainer(tmp_path, train_subset=100, train_subset_draw="first", seed=seed)
    old = old_first_subset(build_datasets("digits").train, 100)
    assert list(run.train_loader.dataset.indices) == list(old.indices) == list(range(100))
    assert run.indices["train"].tolist() == list(range(100))
    full = build_datasets("digits", augment="none").train
    for position in (0, 57, 99):  # the same images and labels, not only the same numbers
        x, y = run._plain_training_samples(np.array([position]))[0]
        assert y == full[position][1] and torch.equal(x, full[position][0])


def test_first_with_a_subset_as_large_as_the_training_set_keeps_all(tmp_path):
    size = len(build_datasets("digits").train)
    assert training_subset(np.zeros(size, dtype=np.int64), size + 5, 0, "first").tolist() == list(range(size))
    assert "train" not in trainer(tmp_path, train_subset=size + 5, train_subset_draw="first").indices


def test_stratified_stays_todays_seeded_draw(tmp_path):
    labels = dataset_labels(build_datasets("digits").train)
    default = trainer(tmp_path / "a", train_subset=100)
    explicit = trainer(tmp_path / "b", train_subset=100, train_subset_draw="stratified")
    expected = stratified_subset(labels, 100, 0)
    assert default.cfg.train_subset_draw == "stratified"
    assert default.indices["train"].tolist() == explicit.indices["train"].tolist() == expected.tolist()
    assert expected.tolist() != list(range(100))
    assert training_subset(labels, 100, 0).tolist() == expected.tolist()


def test_first_after_a_validation_split_takes_the_first_of_the_rest(tmp_path):
    run = trainer(tmp_path, train_subset=50, train_subset_draw="first", val_fraction=0.2)
    rest = np.setdiff1d(np.arange(len(build_datasets("digits").train)), run.indices["val"])
    assert run.indices["train"].tolist() == rest[:50].tolist()
    assert not set(run.indices["train"].tolist()) & set(run.indices["val"].tolist())


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Fashion-MNIST's IDX files are not installed")
def test_the_accuracy_study_trains_on_the_first_12000_fashion_mnist_images(tmp_path):
    study = load_study(resolve_study_path("accuracy-fashion-mnist"))
    cfg = study.config(study.cells[0], study.seeds[-1], tmp_path / "r")
    run = Trainer(cfg, log=lambda _line: None)
    old = old_first_subset(build_datasets("fashion-mnist").train, 12000)
    assert run.indices["train"].tolist() == list(old.indices)
    assert np.bincount(dataset_labels(run.bundle.train), minlength=10).tolist() == \
        np.bincount(dataset_labels(old), minlength=10).tolist()


def test_a_bad_draw_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--train-subset", "100", "--train-subset-draw", "random", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "train_subset_draw" in lines[0] and "first" in lines[0], lines
    assert not out.exists()
    with pytest.raises(UserInputError, match="train_subset_draw"):
        build_config(None, {"train_subset_draw": 1})
    with pytest.raises(UserInputError, match="unknown subset draw"):
        training_subset([0, 1], 1, 0, "last")


def test_a_draw_without_a_subset_warns_that_it_has_no_effect(caplog):
    with caplog.at_level(logging.WARNING, logger="olsmooth"):
        build_config(None, {"train_subset_draw": "first"})
    assert "train_subset_draw: no effect without --train-subset" in caplog.text


def test_the_draw_is_recorded_and_honoured_on_resume(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--train-subset", "120", "--train-subset-draw", "first", "--method", "ce",
                 "--threads", "1", "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train_subset_draw"] == "first"
    assert np.load(out / "train_indices.npy").tolist() == list(range(120))
    cfg, ckpt = load_resume(out, {"epochs": 2})
    assert cfg.train_subset_draw == "first" and ckpt["config"]["train_subset_draw"] == "first"
    assert Trainer(cfg, ckpt, log=lambda _line: None).indices["train"].tolist() == list(range(120))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--train-subset-draw", "stratified"]) == 2
    assert "train_subset_draw 'first' -> 'stratified'" in capsys.readouterr().err


def _strip_draw(run: Path, drop_indices: bool) -> None:
    """Make `run` look like a run folder of an older version: no train_subset_draw (and, before the seeded
    draw, no indices in last.pt nor train_indices.npy)."""
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    del ckpt["config"]["train_subset_draw"]
    if drop_indices:
        del ckpt["data_indices"]
        (run / "train_indices.npy").unlink()
    torch.save(ckpt, run / "last.pt")
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["train_subset_draw"]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize("before_the_seeded_draw", [True, False])
def test_a_run_from_before_the_option_resumes_with_the_draw_it_trained_on(tmp_path, before_the_seeded_draw):
    out = tmp_path / "r"
    draw = "first" if before_the_seeded_draw else "stratified"
    assert main(["train", "--epochs", "1", "--train-subset", "120", "--train-subset-draw", draw, "--method", "ce",
                 "--threads", "1", "--out", str(out)]) == 0
    trained = Trainer(*load_resume(out, {}), log=lambda _line: None).indices["train"].tolist()
    _strip_draw(out, drop_indices=before_the_seeded_draw)
    cfg, ckpt = load_resume(out, {"epochs": 2})
    assert cfg.train_subset_draw == draw
    assert Trainer(cfg, ckpt, log=lambda _line: None).indices["train"].tolist() == trained


def test_a_study_refuses_a_folder_trained_on_the_other_draw(tmp_path):
    study_file = tmp_path / "s.yaml"
    base = {"dataset": "digits", "train_subset": 100, "epochs": 1, "threads": 1}
    study_file.write_text(yaml.safe_dump({"base": base, "grid": {"method": ["ce"]}, "seeds": [0]}))
    run_study(load_study(study_file), tmp_path / "out", log=lambda _line: None)
    _strip_draw(tmp_path / "out" / "method=ce" / "seed-0", drop_indices=False)  # a stratified run from before
    plan_runs(load_study(study_file), tmp_path / "out")
    study_file.write_text(yaml.safe_dump({"base": {**base, "train_subset_draw": "first"}, "grid": {"method": ["ce"]},
                                          "seeds": [0]}))
    with pytest.raises(UserInputError, match="train_subset_draw='stratified', the study asks for 'first'"):
        plan_runs(load_study(study_file), tmp_path / "out")



@pytest.mark.parametrize("name", ["accuracy-fashion-mnist", "accuracy-quick"])
def test_the_accuracy_studies_take_the_first_images_and_say_so(name):
    study = load_study(resolve_study_path(name))
    assert study.base["train_subset_draw"] == "first"
    assert f"first {study.base['train_subset']:,} training images" in " ".join(study.description.split())
    assert {cell.config.train_subset_draw for cell in study.cells} == {"first"}


def test_every_shipped_study_describes_the_draw_it_sets():
    """A study whose description says "first N" takes the first N; one drawing stratified does not say "first"."""
    from olsmooth.studies.spec import studies_dir
    for path in sorted(studies_dir().glob("*.yaml")):
        study = load_study(path)
        if study.base.get("train_subset") is None:
            continue
        text = " ".join(study.description.split())
        says_first = f"first {study.base['train_subset']:,}" in text
        assert says_first == (study.base.get("train_subset_draw") == "first"), path.name
