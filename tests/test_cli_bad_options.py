"""Every bad option value stops `olsmooth train` with one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from olsmooth.cli import main
from olsmooth.engine.config import TrainConfig

# Fields whose values are names or paths checked elsewhere (or free text): they only get the wrong-type check.
FREE_FORM = {
    "dataset": "checked by the dataset registry",
    "model": "checked by the model registry",
    "method": "checked by the loss registry",
    "loss_options": "checked against the method's declared options (cases below)",
    "data_root": "a path",
    "pretrained": "a path",
    "out": "a path",
    "reference": "free text",
    "noise": "checked by the label-noise parser (tests/test_cli_noise.py)",
    "noise_map": "a path, checked by the label-noise map reader",
    "model_options": "checked by the network's constructor (tests/test_cli_train.py)",
}
HINTS = typing.get_type_hints(TrainConfig)


def _kind(name: str) -> type:
    args = [a for a in typing.get_args(HINTS[name]) if a is not type(None)]
    return args[0] if args else HINTS[name]


def _out_of_range(spec: dataclasses.Field) -> list[str]:
    """Values just outside what the field declares, as command-line text."""
    meta, values = spec.metadata, []
    if "choices" in meta or "pattern" in meta:
        values.append("bogus")
    if "min" in meta:
        values.append(str(meta["min"] if meta.get("min_exclusive") else meta["min"] - 1))
    if "max" in meta:
        values.append(str(meta["max"] if meta.get("max_exclusive") else meta["max"] + 1))
    if _kind(spec.name) is float:
        values += ["nan", "inf"]
    return values


# A value of the wrong YAML type for each kind of field, given in a recipe.
WRONG_TYPE_IN_YAML = {int: "three", float: "a lot", bool: "maybe", str: 5, list: "1, 2", dict: [1, 2]}
# ... and on the command line, where only numbers can be mistyped.
WRONG_TYPE_ON_COMMAND_LINE = {int: ["three", "1.5"], float: ["a-lot"], list: ["x"]}


def _cases() -> list[tuple[str, list[str]]]:
    cases = []
    for spec in dataclasses.fields(TrainConfig):
        flag, kind = "--" + spec.name.replace("_", "-"), _kind(spec.name)
        bad = _out_of_range(spec)
        if not bad and kind is not bool and spec.name not in FREE_FORM:
            cases.append((spec.name, ["UNDECLARED"]))
        cases += [(spec.name, [flag, value]) for value in bad]
        cases += [(spec.name, [flag, value]) for value in WRONG_TYPE_ON_COMMAND_LINE.get(kind, [])]
    return cases


def fails_cleanly(capsys: pytest.CaptureFixture[str], out: Path, argv: list[str]) -> str:
    """Run `olsmooth train --out OUT ARGV` in-process; assert exit 2, one error line, no traceback, OUT not created."""
    code = main(["train", "--out", str(out), *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("olsmooth: error: "), (argv, err)
    assert "Traceback" not in err
    assert not out.exists(), f"{argv} wrote {out}"
    return lines[0]


@pytest.mark.parametrize("name, argv", _cases(), ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_every_field_refuses_a_value_out_of_range_or_of_the_wrong_type(tmp_path, capsys, name, argv):
    assert argv != ["UNDECLARED"], f"field {name} declares no range or choices: declare them, or list it as FREE_FORM"
    line = fails_cleanly(capsys, tmp_path / "run", argv)
    assert name in line and argv[1] in line


@pytest.mark.parametrize("spec", dataclasses.fields(TrainConfig), ids=lambda spec: spec.name)
def test_every_field_refuses_a_wrong_yaml_type_in_a_recipe(tmp_path, capsys, monkeypatch, spec):
    value = WRONG_TYPE_IN_YAML[_kind(spec.name)]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({spec.name: value}))
    if spec.name == "out":  # the recipe's out is the one under test, so give no --out; nothing may appear here
        monkeypatch.chdir(tmp_path)
        assert main(["train", "-c", str(recipe)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("olsmooth: error: option out must be a string") and err.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
        return
    line = fails_cleanly(capsys, tmp_path / "run", ["-c", str(recipe)])
    assert spec.name in line and repr(value) in line


# The inputs that ended in a traceback or were accepted before, each with what the message must name.
@pytest.mark.parametrize("argv, named", [
    (["--lr", "-0.1"], "option lr must be > 0, got -0.1"),
    (["--workers", "-1"], "option workers must be >= 0, got -1"),
    (["--mixup", "-1"], "option mixup must be >= 0, got -1.0"),
    (["--ema-decay", "2"], "option ema_decay must be in (0, 1), got 2.0"),
    (["--clip-grad", "-1"], "option clip_grad must be > 0, got -1.0"),
    (["--epochs", "0"], "option epochs must be >= 1, got 0"),
    (["--amp", "bogus"], "option amp must be one of none, bf16, fp16, got 'bogus'"),
    (["--sched", "cosin"], "did you mean 'cosine'?"),
    (["--optimizer", "bogus"], "option optimizer must be one of sgd, adamw, got 'bogus'"),
    (["--milestones", "0"], "option milestones must be >= 1, got 0"),
    (["--device", "gpu"], "option device must match"),
    (["--method", "lss"], "unknown method 'lss'"),
    (["--loss-opt", "momentum=2"], "option momentum of method ols must be in [0, 1), got 2"),
    (["--loss-opt", "momentm=0.5"], "unknown option 'momentm' for method 'ols'; did you mean 'momentum'?"),
    (["--loss-opt", "update_every=0"], "option update_every of method ols must be >= 1, got 0"),
    (["--loss-opt", "init=bogus"], "option init of method ols must be one of zeros, uniform, ls, got 'bogus'"),
    (["--loss-opt", "eps=0.2"], "unknown option 'eps' for method 'ols'"),
    (["--ols-preset", "bogus"], "option preset of method ols must be one of paper-cifar, paper-fine-grained"),
    (["--method", "ls", "--ls-eps", "5"], "option eps of method ls must be in [0, 1], got 5.0"),
    (["--ls-eps", "5"], "option eps of method ls must be in [0, 1], got 5.0"),  # checked even where it has no effect
    (["--method", "tfkd", "--tfkd-temperature", "0"], "option temperature of method tfkd must be > 0, got 0.0"),
    (["--method", "tfkd", "--loss-opt", "kl_reduction=sum"], "one of mean, batchmean, got 'sum'"),
    (["--method", "ce", "--loss-opt", "check_inputs=3"], "option check_inputs of method ce must be true or false"),
])
def test_named_bad_inputs_give_one_line(tmp_path, capsys, argv, named):
    assert named in fails_cleanly(capsys, tmp_path / "run", argv)


def _write(path: Path, content: str | bytes) -> Path:
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"


@pytest.mark.parametrize("name, content, named", [
    ("binary.yaml", bytes(range(256)), "not UTF-8 text"),
    ("image.png", PNG_HEAD, "not UTF-8 text"),
    ("nul.yaml", "epochs: 1\x00\n", "malformed YAML"),
    ("broken.yaml", "epochs: [1\n", "malformed YAML"),
    ("list.yaml", "- epochs\n", "must hold a mapping"),
    ("init.yaml", "loss_options: {init: bogus}\n", "option init of method ols must be one of zeros, uniform, ls"),
    ("ls.yaml", "method: ls\nloss_options: {eps: -0.5}\n", "option eps of method ls must be in [0, 1], got -0.5"),
    ("preset.yaml", "ols_preset: bogus\n", "option preset of method ols must be one of"),
    ("intkey.yaml", "1: 2\n", "option names must be strings, got 1"),
    ("optkey.yaml", "loss_options: {1: 2}\n", "option loss_options must map names to values, got the key 1"),
    ("typo.yaml", "lrr: 0.1\n", "unknown option 'lrr'; did you mean 'lr'?"),
])
def test_bad_recipe_files_give_one_line_naming_the_problem(tmp_path, capsys, name, content, named):
    recipe = _write(tmp_path / name, content)
    line = fails_cleanly(capsys, tmp_path / "run", ["-c", str(recipe)])
    assert named in line
    if "UTF-8" in named or "YAML" in named or "mapping" in named:
        assert str(recipe) in line


def test_a_folder_given_as_recipe_is_one_line(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    assert str(tmp_path / "adir") in fails_cleanly(capsys, tmp_path / "run", ["-c", str(tmp_path / "adir")])
