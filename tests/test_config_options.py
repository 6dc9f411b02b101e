"""Declared options: the config's fields and each loss's options, their aliases, warnings, --help and listings."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import pytest

from olsmooth.cli import build_parser, main
from olsmooth.engine.config import (
    TrainConfig,
    build_config,
    ineffective_options,
    list_recipes,
    read_yaml,
    validate_config,
)
from olsmooth.errors import UserInputError
from olsmooth.losses import build_loss, list_losses, loss_entry, loss_options, validate_loss_options

# Constructor arguments that are not user options: the class count comes from the data, the sample count from the
# run (bind), a process group, a generator and a prior tensor are Python objects, bootstrapping's mode is the method.
NOT_OPTIONS = {"self", "num_classes", "process_group", "num_samples", "generator", "prior", "mode"}


@pytest.mark.parametrize("method", sorted(list_losses()))
def test_declared_loss_options_match_the_constructor_defaults(method):
    """Every constructor argument that is a user option is declared, with the constructor's default."""
    signature = inspect.signature(loss_entry(method).cls.__init__).parameters
    expected = {name: p.default for name, p in signature.items() if name not in NOT_OPTIONS}
    declared = {option.name: option.default for option in loss_options(method)}
    if method == "ols":
        assert declared.pop("preset") is None  # from_preset's argument, off by default
    if method in ("bootsoft", "boothard"):  # beta's default depends on the mode the method fixes
        expected["beta"] = build_loss(method, 3).beta
    assert declared == expected


def test_every_method_has_a_card_that_names_each_of_its_options():
    """The method cards follow the registry: each method (but plain cross-entropy) has a card in docs/methods/ that
    shows `--method NAME` and names every declared option, so a new loss or option without its docs fails here."""
    cards = {path.name: path.read_text() for path in (Path(__file__).parents[1] / "docs" / "methods").glob("*.md")}
    for method in sorted(set(list_losses()) - {"ce"}):
        text = "".join(card for card in cards.values() if f"--method {method}" in card)
        assert text, f"no card in docs/methods/ shows --method {method}"
        missing = [o.name for o in loss_options(method) if f"`{o.name}`" not in text]
        assert not missing, f"the card of {method} does not name {missing}"


def test_method_help_points_at_the_registry_instead_of_listing_methods():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method = next(action for action in train._actions if "--method" in action.option_strings)
    assert "--list-methods" in method.help and "tfkd" not in method.help


def test_build_loss_passes_options_and_refuses_bad_ones_in_one_line():
    loss = build_loss("ols", 5, preset="paper-fine-grained", momentum=0.5)
    assert (loss.momentum, loss.freeze_threshold, loss.hard_weight) == (0.5, 0.88, 1.0)
    assert build_loss("tfkd", 5, temperature=40).temperature == 40.0
    with pytest.raises(UserInputError, match="did you mean 'momentum'"):
        build_loss("ols", 5, momentm=0.5)
    with pytest.raises(UserInputError, match=r"option eps of method ls must be in \[0, 1\], got 1.5"):
        build_loss("ls", 5, eps=1.5)
    with pytest.raises(UserInputError, match="did you mean 'tfkd'"):
        build_loss("tfdk", 5)
    # the constructor's own ValueError becomes a UserInputError at the registry
    with pytest.raises(UserInputError, match="method ce: num_classes must be at least 2, got 1"):
        build_loss("ce", 1)


def test_validate_loss_options_needs_no_class_count_and_returns_declared_types():
    assert validate_loss_options("ols", {"update_every": 3.0, "temperature": 2}) == {"update_every": 3,
                                                                                    "temperature": 2.0}
    assert validate_loss_options("ols", {"freeze_threshold": None}) == {"freeze_threshold": None}
    with pytest.raises(UserInputError, match="option update_every of method ols must be an integer, got 2.5"):
        validate_loss_options("ols", {"update_every": 2.5})


def test_aliases_set_the_loss_option_and_the_engine_passes_options_through():
    cfg = build_config({"method": "ols", "ols_preset": "paper-cifar"}, {})
    assert cfg.loss_options == cfg.loss_kwargs() == {"preset": "paper-cifar"}
    assert build_config({"method": "ls"}, {"ls_eps": 0.2}).loss_options == {"eps": 0.2}
    assert build_config({"method": "tfkd", "tfkd_temperature": 40}, {}).loss_options == {"temperature": 40.0}
    assert "ols_preset" not in TrainConfig().to_dict()


def test_shipped_recipes_keep_their_loss_options():
    recipes = list_recipes()
    assert build_config(recipes["cars-mobilenetv2-tfkd"], {}).loss_options == {"temperature": 40.0}
    assert build_config(recipes["cub200-resnet50-ols"], {}).loss_options == {"preset": "paper-fine-grained"}
    assert build_config(recipes["cub200-resnet50-ls"], {}).loss_options == {"eps": 0.1}
    assert build_config(recipes["cub200-resnet50-ce"], {}).loss_options == {}


def test_an_old_run_folder_config_still_loads():
    old = {**TrainConfig().to_dict(), "method": "ls", "ols_preset": None, "ls_eps": 0.2, "tfkd_temperature": None,
           "loss_options": {}}
    cfg = build_config(old, {})
    assert (cfg.method, cfg.loss_options) == ("ls", {"eps": 0.2})


def test_later_sources_win_key_by_key_between_aliases_and_loss_options():
    assert build_config({"method": "ls", "ls_eps": 0.1}, {"loss_options": {"eps": 0.3}}).loss_options == {"eps": 0.3}
    assert build_config({"method": "ls", "loss_options": {"eps": 0.3}}, {"ls_eps": 0.1}).loss_options == {"eps": 0.1}
    merged = build_config({"loss_options": {"momentum": 0.5}}, {"loss_options": {"temperature": 2}})
    assert merged.loss_options == {"momentum": 0.5, "temperature": 2.0}
    # the command line keeps the order of its flags: the later one wins
    args = build_parser().parse_args(["train", "--method", "ls", "--ls-eps", "0.3", "--loss-opt", "eps=0.2"])
    assert build_config(None, {"method": args.method, "loss_options": dict(args.loss_options)}).loss_options == {
        "eps": 0.2}


def test_loss_opt_values_read_as_yaml_and_exponent_numbers():
    args = build_parser().parse_args(["train", "--loss-opt", "temperature=1e-3", "--loss-opt", "init=zeros",
                                      "--loss-opt", "update_every=5", "--loss-opt", "freeze_threshold=null"])
    assert args.loss_options == [("temperature", 0.001), ("init", "zeros"), ("update_every", 5),
                                 ("freeze_threshold", None)]


def test_options_without_effect_warn_once_the_config_is_good(caplog):
    with caplog.at_level(logging.WARNING, logger="olsmooth"):
        cfg = build_config({"method": "ols", "ls_eps": 0.2, "milestones": [3], "data_root": "/data"}, {})
    assert cfg.loss_options == {}
    assert [r.getMessage() for r in caplog.records] == [
        "olsmooth: warning: ls_eps: no effect with method ols (it sets option eps of method ls)",
        "olsmooth: warning: milestones: no effect with sched cosine (only with multistep)",
        "olsmooth: warning: data_root: ignored, the digits dataset is embedded",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="olsmooth"), pytest.raises(UserInputError):
        build_config({"ls_eps": 0.2}, {"lr": -1})
    assert caplog.records == []  # an error comes alone


def test_ineffective_options_only_name_values_away_from_their_default():
    assert ineffective_options(TrainConfig(sched="cosine", gamma=0.1, optimizer="adamw", momentum=0.9)) == []
    assert ineffective_options(TrainConfig(optimizer="adamw", nesterov=True)) == [
        "nesterov: no effect with optimizer adamw (only with sgd)"]
    assert ineffective_options(TrainConfig(sched="multistep", milestones=[2], gamma=0.5)) == []
    assert ineffective_options(TrainConfig(dataset="cifar10", data_root="/data")) == []


def test_validate_config_checks_a_config_built_in_python():
    checked = validate_config(TrainConfig(lr=1, epochs=2.0, milestones=(3, 5)))
    assert (checked.lr, type(checked.lr), checked.epochs, checked.milestones) == (1.0, float, 2, [3, 5])
    with pytest.raises(UserInputError, match="option gamma must be in"):
        validate_config(TrainConfig(gamma=0.0))
    with pytest.raises(UserInputError, match="option momentum of method ols"):
        validate_config(TrainConfig(loss_options={"momentum": 1.0}))


def test_help_shows_every_flag_with_its_default():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    texts = {action.option_strings[-1]: action.help for action in train._actions if action.option_strings}
    config_flags = [flag for flag in texts if flag not in ("--help", "--config", "--resume")
                    and not flag.startswith("--list-")]
    missing = [flag for flag in config_flags if "(default: " not in texts[flag]]
    assert not missing
    assert "default: 0.9; [0, 1)" in texts["--momentum"]
    assert "default: cosine; one of cosine, multistep, constant" in texts["--sched"]
    assert "default: per dataset; > 0" in texts["--lr"]
    assert "default: 0.1; [0, 1]" in texts["--ls-eps"]
    assert "default: off" in texts["--no-nesterov"]


def test_list_methods_shows_each_option(capsys):
    assert main(["train", "--list-methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    momentum = next(line.split(None, 4) for line in lines if line.strip().startswith("momentum "))
    assert momentum[:4] == ["momentum", "float", "0", "[0,"] and "S <- m S" in momentum[4]
    assert any(line.split()[:3] == ["temperature", "float", "6"] for line in lines)
    assert any(line.split()[:2] == ["preset", "str"] and "paper-fine-grained" in line for line in lines)


def test_read_yaml_of_a_binary_config_names_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(UserInputError, match=f"cannot read config file {path}: not UTF-8 text"):
        read_yaml(path)
    path.write_text("")
    assert read_yaml(path) == {}
    with pytest.raises(UserInputError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_exponent_notation_without_a_dot_in_yaml_is_a_number(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("weight_decay: 5e-4\nloss_options: {momentum: 1e-1}\n")
    cfg = build_config(read_yaml(recipe), {})
    assert cfg.weight_decay == 0.0005 and cfg.loss_options == {"momentum": 0.1}
    with pytest.raises(UserInputError, match="must be a number"):
        build_config({"weight_decay": "5e-4x"}, {})


def test_data_choices_are_the_data_packages_own():
    """The config reads the data's own tuples (from a module that imports nothing, so it imports without
    torchvision), and every place that offers or describes a split says what olsmooth.data.spec.SPLITS holds."""
    from olsmooth.data import spec
    from olsmooth.engine.config import OPTIONS
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert fields["augment"].metadata["choices"] is spec.AUGMENT_LEVELS
    assert fields["input_norm"].metadata["choices"] is spec.INPUT_NORMS
    assert fields["split"].metadata["choices"] is spec.SPLITS
    assert OPTIONS["split"].shown_default() == f"the dataset's first ({spec.SPLITS[0]})"
    info = build_parser()._subparsers._group_actions[0].choices["dataset-info"]
    split = next(action for action in info._actions if "--split" in action.option_strings)
    assert tuple(split.choices) == spec.SPLITS and split.help.endswith(f"(default: {spec.SPLITS[0]})")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "[--split " + "|".join(spec.SPLITS) + "]" in docs
    assert "\\|".join(spec.SPLITS) + " for the fine-grained sets" in docs


def test_the_module_docstring_names_every_command():
    import olsmooth.cli as cli
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(cli.COMMANDS)
    named = set(cli.__doc__.replace(",", " ").replace("`", " ").split())
    assert set(commands) <= named, sorted(set(commands) - named)
