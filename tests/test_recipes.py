"""Shipped recipes: every one is a valid configuration for a known model, resolves as it did before the protocols
were written once (`base:`), and a recipe's figure is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sklearn.datasets import load_digits

from olsmooth.cli import main
from olsmooth.engine.config import build_config, list_recipes, load_recipe, read_yaml, resolve_recipe_path
from olsmooth.engine.resolve import resolve
from olsmooth.errors import UserInputError
from olsmooth.models import list_models
from olsmooth.studies.spec import load_study

# Every shipped recipe's resolved configuration, written from the recipes before they included protocols; `out` is
# left out (a time stamp) and `workers` is the recipe's own (resolve fills it from the machine's core count).
RESOLVED = json.loads((Path(__file__).parent / "data" / "recipes-resolved.json").read_text())

PAPER_TABLE_VI_OLS = {"cub200-resnet50-ols": 17.53, "aircraft-mobilenetv2-ols": 10.53,
                      "cifar100-resnet34-ols": 19.95, "cifar100-resnext29-ols": 18.55}


def test_every_recipe_is_a_valid_configuration_of_known_names():
    recipes = list_recipes()
    assert len(recipes) >= 40
    known = set(list_models("all"))
    for name, recipe in recipes.items():
        cfg = build_config(recipe, {})
        assert cfg.model in known, (name, cfg.model)
        assert cfg.method in ("ce", "ls", "ols", "tfkd")
    for name, error in PAPER_TABLE_VI_OLS.items():
        assert recipes[name]["expected_top1_error"] == error


def test_fine_grained_recipes_follow_the_paper_protocol():
    r = list_recipes()["cars-mobilenetv2-tfkd"]
    protocol = (r["epochs"], r["batch_size"], r["lr"], r["milestones"], r["weight_decay"])
    assert protocol == (100, 64, 0.01, [45, 80], 1e-4)
    assert r["tfkd_temperature"] == 40.0
    assert list_recipes()["cars-resnet50-tfkd"]["tfkd_temperature"] == 6.0
    assert list_recipes()["flowers102-resnet50-ols"]["ols_preset"] == "paper-fine-grained"


def test_list_recipes_shows_the_published_error(capsys):
    assert main(["train", "--list-recipes"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cub200-resnet50-ols "))
    assert "17.53%" in line


def test_a_recipe_run_reports_the_published_figure_next_to_the_measured_one(tmp_path, capsys):
    recipe = tmp_path / "digits-paper.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "digits", "method": "ols", "ols_preset": "paper-cifar",
                                      "epochs": 1, "expected_top1_error": 12.5, "reference": "made up"}))
    assert main(["train", "-c", str(recipe), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    measured = 100 - json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["top1"]
    assert f"{measured:.2f}% measured vs 12.50% published (made up)" in out


def test_dataset_info_counts_digits(capsys):
    assert main(["dataset-info", "--dataset", "digits", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] + info["test"] == len(load_digits().target) and info["classes"] == 10


# options added after the fixture was written, with the value every recipe must leave them at
ADDED_SINCE = {"noise": None, "noise_seed": None, "noise_map": None, "model_options": {}}


def _resolved(recipe: dict) -> dict:
    """A recipe's configuration as the fixture holds it (options added since then checked at their defaults)."""
    cfg = build_config(recipe, {})
    resolved = resolve(cfg).to_dict()
    del resolved["out"]
    assert {k: resolved.pop(k) for k in ADDED_SINCE} == ADDED_SINCE
    return {**resolved, "workers": cfg.workers}


def test_every_recipe_resolves_as_before_it_included_a_protocol():
    recipes = list_recipes()
    assert sorted(recipes) == sorted(RESOLVED) and len(recipes) == 44
    for name, recipe in recipes.items():
        assert read_yaml(resolve_recipe_path(name))["base"].startswith("protocols/"), name
        assert _resolved(recipe) == RESOLVED[name], name


def test_list_recipes_lists_the_recipes_not_the_protocols(capsys):
    assert main(["train", "--list-recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(RESOLVED)
    for line in lines:
        name, dataset, model, method = line.split()[:4]
        assert (dataset, model, method) == tuple(RESOLVED[name][k] for k in ("dataset", "model", "method"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bases_nest_by_relative_path_and_the_including_file_wins(tmp_path):
    _write(tmp_path / "common.yaml", "epochs: 5\nlr: 0.1\nsched: multistep\nmilestones: [2, 4]\n"
                                     "loss_options: {momentum: 0.5, init_eps: 0.2}\n")
    _write(tmp_path / "protocols" / "short.yaml", "base: ../common.yaml\nlr: 0.2\nmilestones: [3]\n")
    run = _write(tmp_path / "run.yaml", "base: protocols/short.yaml\nbatch-size: 8\nloss_options: {init_eps: 0.3}\n")
    cfg = build_config(load_recipe(run), {})
    assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.batch_size, cfg.sched) == (5, 0.2, [3], 8, "multistep")
    assert cfg.loss_options == {"momentum": 0.5, "init_eps": 0.3}


def test_an_alias_and_loss_options_keep_the_later_write_across_a_base(tmp_path):
    # as build_config reads the base, then the recipe: the recipe's alias comes after the base's loss option
    _write(tmp_path / "base.yaml", "method: ols\nloss_options: {preset: paper-cifar}\n")
    later_alias = _write(tmp_path / "a.yaml", "base: base.yaml\nols_preset: paper-fine-grained\n"
                                              "loss_options: {momentum: 0.5}\n")
    assert build_config(load_recipe(later_alias), {}).loss_options == {"preset": "paper-fine-grained", "momentum": 0.5}
    later_option = _write(tmp_path / "b.yaml", "base: base.yaml\nols_preset: paper-fine-grained\n"
                                               "loss_options: {preset: paper-cifar}\n")
    assert build_config(load_recipe(later_option), {}).loss_options == {"preset": "paper-cifar"}


def test_a_shipped_recipe_or_protocol_is_a_base_by_name(tmp_path):
    short = _write(tmp_path / "short.yaml", "base: cub200-resnet50-ols\nepochs: 3\n")
    assert _resolved(load_recipe(short)) == {**RESOLVED["cub200-resnet50-ols"], "epochs": 3}
    mine = _write(tmp_path / "mine.yaml", "base: protocols/fine-grained\ndataset: cars\nmodel: resnet50\nmethod: ce\n"
                                          "expected_top1_error: 9.58\n")
    assert _resolved(load_recipe(mine)) == RESOLVED["cars-resnet50-ce"]


def test_a_study_based_on_a_recipe_gets_its_protocol(tmp_path):
    study = _write(tmp_path / "study.yaml", "base: cub200-resnet50-ols\ngrid: {method: [ce, ols]}\nseeds: [0]\n")
    base = load_study(study).base
    assert (base["split"], base["epochs"], base["milestones"], base["dataset"]) == ("paper", 100, [45, 80], "cub200")


@pytest.mark.parametrize("files, message", [
    ({"r.yaml": "base: nowhere.yaml\n"}, "r.yaml: base 'nowhere.yaml' not found"),
    ({"r.yaml": "base: protocols/fine-graned\n"}, "r.yaml: base: no recipe or config file 'protocols/fine-graned'"),
    ({"r.yaml": "base: [a]\n"}, "r.yaml: base must be a recipe name or a YAML path"),
    ({"r.yaml": "base: r.yaml\n"}, "r.yaml: base 'r.yaml' includes itself"),
    ({"r.yaml": "base: s.yaml\n", "s.yaml": "base: r.yaml\n"}, "s.yaml: base 'r.yaml' includes itself"),
])
def test_a_missing_base_or_a_cycle_is_one_line_naming_the_file(tmp_path, capsys, files, message):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(UserInputError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_recipe(tmp_path / "r.yaml")
    out = tmp_path / "run"
    assert main(["train", "-c", str(tmp_path / "r.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("olsmooth: error: ") and message in err
    assert not out.exists()
