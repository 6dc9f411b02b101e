"""Shipped recipes: every one is a valid configuration for a known model, and a recipe's figure is reported."""

from __future__ import annotations

import json

import yaml
from sklearn.datasets import load_digits

from olsmooth.cli import main
from olsmooth.engine.config import build_config, list_recipes
from olsmooth.models import list_models

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
