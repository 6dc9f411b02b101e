"""resolve(): defaults filled from the dataset's spec, fine-tuning's own lr, and the input left untouched."""

from __future__ import annotations

import copy

import pytest

from olsmooth.engine.config import build_config
from olsmooth.engine.resolve import FINETUNE_LR, resolve
from olsmooth.errors import UserInputError


def test_resolve_fills_defaults_without_changing_its_input():
    cfg = build_config(None, {"dataset": "fashion_mnist"})
    before = copy.deepcopy(cfg)
    resolved = resolve(cfg)
    assert cfg == before
    # the defaults of Fashion-MNIST, whatever the spelling (not those of image folders: resnet18, 30 epochs)
    assert (resolved.dataset, resolved.model, resolved.epochs, resolved.batch_size) == \
        ("fashion-mnist", "small_cnn", 10, 128)
    assert resolved.workers == 0 and resolved.out.endswith("-fashion-mnist-ols")


def test_fine_tuning_gets_its_own_lr_unless_one_is_given():
    assert resolve(build_config(None, {"pretrained": "w.pt"})).lr == FINETUNE_LR == 0.01
    assert resolve(build_config(None, {"pretrained": "w.pt", "lr": 0.2})).lr == 0.2
    assert resolve(build_config(None, {})).lr == 0.05


def test_an_unknown_dataset_is_an_error():
    with pytest.raises(UserInputError, match="unknown dataset"):
        resolve(build_config(None, {"dataset": "no-such-set"}))
