"""Loading local weight files: torchvision/timm formats, containers, safetensors, channel conversion, refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from olsmooth.cli import main as cli
from olsmooth.engine.resolve import FINETUNE_MIN_SIDE, small_input_note
from olsmooth.errors import UserInputError
from olsmooth.models import LoadReport, create_model, load_pretrained


@pytest.fixture(scope="module")
def tv_resnet18() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision resnet18 state dict, as torchvision ships its files (1000 classes)."""
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def assert_loaded_equal(model: torch.nn.Module, source: dict[str, torch.Tensor], keys: list[str]) -> None:
    state = model.state_dict()
    for key in keys:
        assert torch.equal(state[key], source[key]), key


@pytest.mark.parametrize("target", ["tv/resnet18", "timm/resnet18"])
def test_torchvision_file_into_torchvision_and_timm_resnet(tmp_path: Path, tv_resnet18: dict, target: str) -> None:
    path = save(tv_resnet18, tmp_path / "resnet18.pth")
    torch.manual_seed(2)
    model = create_model(target, num_classes=200, pretrained=str(path))
    report = model.pretrained_report
    classifier = {"fc.weight", "fc.bias"}
    assert set(report.shape_mismatch) == classifier
    assert set(report.loaded) == set(tv_resnet18) - classifier     # every non-classifier key
    assert report.missing == [] and report.unexpected == [] and report.adapted == []
    assert_loaded_equal(model, tv_resnet18, report.loaded)
    assert model.fc.weight.shape == (200, 512)                      # freshly initialised, not the file's
    assert "loaded 120 tensors" in report.summary() and "\n" not in report.summary()


def test_mobilenet_v2_file_with_a_new_classifier(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = torchvision.models.mobilenet_v2(weights=None).state_dict()
    model = create_model("mobilenet_v2", num_classes=37, pretrained=save(source, tmp_path / "mnv2.pth"))
    report = model.pretrained_report
    assert set(report.shape_mismatch) == {"classifier.1.weight", "classifier.1.bias"}
    assert len(report.loaded) == len(source) - 2 and not report.missing and not report.unexpected
    assert_loaded_equal(model, source, report.loaded)


def test_rgb_stem_summed_for_a_single_channel_model(tmp_path: Path, tv_resnet18: dict) -> None:
    model = create_model("tv/resnet18", num_classes=10, in_chans=1)
    report = load_pretrained(model, save(tv_resnet18, tmp_path / "r18.pt"))
    assert report.adapted == ["conv1.weight"] and "conv1.weight" in report.loaded
    assert torch.allclose(model.conv1.weight, tv_resnet18["conv1.weight"].sum(dim=1, keepdim=True))


def test_rgb_stem_tiled_for_more_channels(tmp_path: Path, tv_resnet18: dict) -> None:
    model = create_model("tv/resnet18", num_classes=10, in_chans=4)
    load_pretrained(model, save(tv_resnet18, tmp_path / "r18.pt"))
    w = tv_resnet18["conv1.weight"]
    expected = torch.cat([w, w[:, :1]], dim=1) * 3 / 4    # channels R, G, B, R; response scale kept
    assert torch.allclose(model.conv1.weight, expected)


def test_cifar_stem_resnet_skips_the_7x7_stem(tmp_path: Path, tv_resnet18: dict) -> None:
    model = create_model("resnet18_cifarstem", num_classes=10, pretrained=save(tv_resnet18, tmp_path / "r.pth"))
    assert set(model.pretrained_report.shape_mismatch) == {"conv1.weight", "fc.weight", "fc.bias"}
    assert len(model.pretrained_report.loaded) == len(tv_resnet18) - 3


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model_ema", "state_dict_ema", "ema"])
def test_checkpoint_containers_and_module_prefix(tmp_path: Path, wrap: str) -> None:
    torch.manual_seed(4)
    source = create_model("small_cnn", num_classes=10).state_dict()
    wrapped = {wrap: {f"module.{k}": v for k, v in source.items()}, "epoch": 7, "arch": "small_cnn"}
    model = create_model("small_cnn", num_classes=10)
    report = load_pretrained(model, save(wrapped, tmp_path / "ckpt.pth"))
    assert set(report.loaded) == set(source) and not report.missing and not report.unexpected
    assert_loaded_equal(model, source, report.loaded)


@pytest.mark.parametrize("plain_key,ema_key", [("state_dict", "state_dict_ema"), ("model", "ema")])
def test_prefer_ema(tmp_path: Path, plain_key: str, ema_key: str) -> None:
    torch.manual_seed(5)
    plain = create_model("mlp", num_classes=3).state_dict()
    ema = {k: v + 1 for k, v in plain.items()}
    path = save({plain_key: plain, ema_key: ema, "epoch": 3}, tmp_path / "both.pth")
    model = create_model("mlp", num_classes=3)
    load_pretrained(model, path)
    assert_loaded_equal(model, plain, list(plain))
    load_pretrained(model, path, prefer_ema=True)
    assert_loaded_equal(model, ema, list(ema))
    no_ema = save({plain_key: plain, ema_key: None}, tmp_path / "no_ema.pth")   # a run without EMA
    load_pretrained(model, no_ema, prefer_ema=True)
    assert_loaded_equal(model, plain, list(plain))


def test_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(6)
    source = create_model("small_resnet", num_classes=10).state_dict()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    model = create_model("small_resnet", num_classes=10)
    report = load_pretrained(model, path)
    assert set(report.loaded) == set(source)
    assert_loaded_equal(model, source, report.loaded)


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path) -> None:
    source = create_model("small_cnn", num_classes=10).state_dict()
    source.pop("fc.bias")
    source["extra.weight"] = torch.ones(3)
    # an old file without BatchNorm's step counters: they are not weights, so not reported missing
    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    report = load_pretrained(create_model("small_cnn", num_classes=10), save(source, tmp_path / "w.pth"))
    assert report.missing == ["fc.bias"] and report.unexpected == ["extra.weight"]
    assert isinstance(report, LoadReport) and "1 missing (fc.bias)" in report.summary()


def test_legacy_torchvision_densenet_keys(tmp_path: Path) -> None:
    torch.manual_seed(7)
    source = torchvision.models.densenet121(weights=None).state_dict()
    old_style = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in source.items()}
    assert old_style.keys() != source.keys()
    model = create_model("densenet121", num_classes=1000)
    report = load_pretrained(model, save(old_style, tmp_path / "densenet121.pth"))
    assert set(report.loaded) == set(source) and not report.unexpected
    assert_loaded_equal(model, source, report.loaded)


class Payload:
    """Any non-tensor Python object: a weights-only loader must not rebuild it."""


def test_refuses_to_unpickle_objects(tmp_path: Path) -> None:
    path = save({"state_dict": {"fc.weight": torch.ones(2, 2)}, "payload": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserInputError, match="refuses to unpickle"):
        load_pretrained(create_model("mlp", num_classes=2), path)


def test_unreadable_inputs_are_user_errors(tmp_path: Path, tv_resnet18: dict) -> None:
    model = create_model("small_cnn", num_classes=10)
    with pytest.raises(UserInputError, match="not found"):
        load_pretrained(model, tmp_path / "absent.pth")
    with pytest.raises(UserInputError, match="matches none of the model's parameters"):
        load_pretrained(model, save(tv_resnet18, tmp_path / "resnet18.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError, match="cannot read"):
        load_pretrained(model, tmp_path / "junk.pth")
    with pytest.raises(UserInputError, match="state dict"):
        load_pretrained(model, save(torch.ones(3), tmp_path / "tensor.pth"))
    with pytest.raises(UserInputError, match="not found"):
        create_model("small_cnn", num_classes=10, pretrained=str(tmp_path / "absent.pth"))


def test_small_input_note_by_hand() -> None:
    assert "on 28 x 28 inputs" in small_input_note(28) and "last feature map is 1 x 1" in small_input_note(28)
    assert "last feature map is 1 x 1" in small_input_note(63)
    assert small_input_note(FINETUNE_MIN_SIDE) is None and small_input_note(224) is None


@pytest.mark.parametrize("model", ["resnet18", "small_cnn"])
def test_fine_tuning_an_imagenet_network_on_small_inputs_warns(tmp_path: Path, caplog, tv_resnet18: dict,
                                                               model: str) -> None:
    """A torchvision network on 8 x 8 digits gets the warning; our own small network (made for such inputs) not."""
    weights = tmp_path / "w.pth"
    torch.save(tv_resnet18 if model == "resnet18" else create_model("small_cnn", 10, 1).state_dict(), weights)
    with caplog.at_level(logging.WARNING, logger="olsmooth"):
        assert cli(["train", "--model", model, "--pretrained", str(weights), "--epochs", "1", "--train-subset", "64",
                    "--out", str(tmp_path / "run")]) == 0
    notes = [r.getMessage() for r in caplog.records if "fine-tuning pretrained weights" in r.getMessage()]
    assert notes == ([f"olsmooth: warning: {small_input_note(8)}"] if model == "resnet18" else [])
