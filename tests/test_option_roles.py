"""Every option of `olsmooth train` has one role, and resume, the report and the study all treat an option as its
role says: each test changes one option at a time, for every option, and checks what each of them does with it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from olsmooth.analysis.report import grouping_keys
from olsmooth.cli import main
from olsmooth.engine.config import TrainConfig
from olsmooth.engine.resolve import resolve
from olsmooth.engine.trainer import load_resume
from olsmooth.errors import UserInputError
from olsmooth.option_roles import RESUME_MAY_CHANGE, ROLES, SET_BY_RESUME, Role, options_with
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.spec import parse_study

FIELD_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]

# The roles decided by hand: what may differ between two runs of one experiment. Every other option is part of it.
NOT_EXPERIMENT = {
    Role.LENGTH: {"epochs"},
    Role.REPLICATE: {"seed"},
    Role.EXECUTION: {"data_root", "download", "workers", "channels_last", "compile", "device", "threads",
                     "dist_timeout", "save_every"},
    Role.NOTE: {"expected_top1_error", "reference"},
    Role.PLACE: {"out", "force"},
}

# One other valid value for every option, set away from what the fixture run (digits, 1 epoch) stored.
OTHER_VALUE = {
    "dataset": "fashion-mnist", "data_root": "elsewhere", "split": "official", "image_size": 16, "download": True,
    "train_subset": 50, "train_subset_draw": "first", "workers": 1, "augment": "none", "input_norm": "imagenet",
    "val_fraction": 0.1, "noise": "symmetric:0.2", "noise_seed": 5, "noise_map": "map.json", "model": "mlp",
    "model_options": {"grid": 8}, "pretrained": "weights.pt", "channels_last": True, "compile": True,
    "sync_bn": True, "method": "ce", "loss_options": {"momentum": 0.5}, "epochs": 2, "batch_size": 7, "lr": 0.5,
    "optimizer": "adamw", "momentum": 0.5, "nesterov": True, "weight_decay": 0.1, "decay_all_params": True,
    "sched": "multistep", "milestones": [1], "gamma": 0.5, "warmup_epochs": 1.0, "clip_grad": 1.0, "mixup": 0.2,
    "cutmix": 0.2, "ema_decay": 0.9, "amp": "bf16", "seed": 7, "device": "cpu", "threads": 1, "dist_timeout": 30.0,
    "out": "elsewhere", "save_every": 1, "force": True, "expected_top1_error": 5.0, "reference": "a paper",
}
NEEDS = {"noise_map": {"noise": "asymmetric:0.2"}, "method": {"loss_options": {}}}
"""What a valid configuration needs beside the option's other value (a noise map goes with asymmetric noise; the
OLS run's loss options are not CE's)."""


def role_by_hand(name: str) -> Role:
    return next((role for role, names in NOT_EXPERIMENT.items() if name in names), Role.EXPERIMENT)


def test_every_option_has_exactly_one_role_in_the_configurations_order():
    assert list(ROLES) == FIELD_NAMES
    assert all(isinstance(role, Role) for role in ROLES.values())
    assert {name: role_by_hand(name) for name in FIELD_NAMES} == ROLES
    assert set(OTHER_VALUE) == set(FIELD_NAMES)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "100", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_resume_takes_a_new_value_of_exactly_the_options_outside_the_experiment(run, name):
    overrides = {**NEEDS.get(name, {}), name: OTHER_VALUE[name]}
    role = role_by_hand(name)
    if role in (Role.EXPERIMENT, Role.REPLICATE):
        with pytest.raises(UserInputError, match=rf"different experiment \((.*, )?{name} "):
            load_resume(run, overrides)
        return
    cfg, _ = load_resume(run, overrides)
    if role is Role.PLACE:  # the resume sets these itself
        assert (cfg.out, cfg.force) == (str(run), False)
    else:
        assert getattr(cfg, name) == OTHER_VALUE[name]


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_report_groups_by_exactly_the_options_of_the_experiment(name):
    config = TrainConfig().to_dict()
    other = {**config, name: OTHER_VALUE[name]}
    expected = [name] if role_by_hand(name) in (Role.EXPERIMENT, Role.LENGTH) else []
    assert grouping_keys([config, other]) == expected


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_a_study_takes_a_run_that_differs_only_outside_the_experiment_for_its_own(tmp_path, name):
    study = parse_study({"grid": {"train_subset": [100]}}, "roles", "roles.yaml")
    folder = tmp_path / study.cells[0].name / "seed-0"
    folder.mkdir(parents=True)
    found = {**resolve(study.config(study.cells[0], 0, folder)).to_dict(), name: OTHER_VALUE[name]}
    (folder / "config.yaml").write_text(yaml.safe_dump(found), encoding="utf-8")
    (folder / "summary.json").write_text("{}", encoding="utf-8")  # a finished run
    if role_by_hand(name) in (Role.EXPERIMENT, Role.LENGTH, Role.REPLICATE):
        with pytest.raises(UserInputError, match=f"holds a run with {name}="):
            plan_runs(study, tmp_path)
    else:
        assert [planned.status.state for planned in plan_runs(study, tmp_path)] == ["done"]


def test_a_study_sets_the_seed_and_the_folder_and_nothing_else(tmp_path):
    for name in FIELD_NAMES:
        content = {"base": {**NEEDS.get(name, {}), name: OTHER_VALUE[name]}, "grid": {"train_subset": [100]}}
        if role_by_hand(name) in (Role.REPLICATE, Role.PLACE):
            with pytest.raises(UserInputError, match=f"{name} is set by the study"):
                parse_study(content, "roles", "roles.yaml")
        else:
            parse_study(content, "roles", "roles.yaml")


def flags(names) -> list[str]:
    return ["--" + name.replace("_", "-") for name in names]


def test_the_cli_docs_state_the_roles_and_the_resume_list_as_the_code_does():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:3] for line in docs.splitlines()
            if re.match(rf"\| ({'|'.join(role.value for role in Role)}) \|", line)]
    roles = {role.strip(): re.findall(r"`(\w+)`", options) for role, options in rows}
    assert len(rows) == len(roles) == len(Role)
    for role in Role:  # the experiment's row says "every option not named below"
        assert roles[role.value] == ([] if role is Role.EXPERIMENT else list(options_with(role))), role
    resume = docs[docs.index("## Resume"):docs.index("## Progress")]
    table = [line.split("|")[1] for line in resume.splitlines() if line.startswith("| `--")]
    assert sorted(re.findall(r"`(--[\w-]+)`", "".join(table))) == sorted(flags(RESUME_MAY_CHANGE))
    place = " and ".join(f"`{flag}`" for flag in flags(SET_BY_RESUME))
    assert f"`-c`, {place} cannot be given with `--resume`" in resume
