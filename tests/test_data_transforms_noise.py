"""PCA lighting noise, channel repeat, the preset sizes, and label-noise injection."""

import numpy as np
import pytest
import torch
from PIL import Image

from olsmooth.data import inject_label_noise
from olsmooth.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    Lighting,
    RepeatChannels,
    fine_grained_preset,
    imagenet_preset,
)
from olsmooth.errors import UserInputError


def test_lighting_adds_one_colour_shift_per_image_with_the_pca_statistics():
    torch.manual_seed(0)
    lighting = Lighting(0.1)
    eigvec = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float64)
    eigval = torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64)
    img = torch.rand(3, 4, 5)
    alphas = []
    for _ in range(3000):
        delta = (lighting(img) - img).double()
        assert torch.allclose(delta, delta[:, :1, :1].expand_as(delta), atol=1e-6)  # constant per channel
        # shift = sum_j alpha_j * eigval_j * (column j of eigvec): recover alpha by solving the linear system
        alphas.append(torch.linalg.solve(eigvec, delta[:, 0, 0]) / eigval)
    alpha = torch.stack(alphas)
    assert alpha.mean(0).abs().max() < 0.01
    assert torch.allclose(alpha.std(0), torch.full((3,), 0.1, dtype=torch.float64), rtol=0.08)
    assert torch.equal(Lighting(0.0)(img), img)


def test_repeat_channels():
    x = torch.arange(6.0).view(1, 2, 3)
    y = RepeatChannels(3)(x)
    assert y.shape == (3, 2, 3) and all(torch.equal(y[c], x[0]) for c in range(3))


@pytest.mark.parametrize("preset", [lambda: fine_grained_preset(None, None),
                                    lambda: imagenet_preset(None, None, color_augment=True)])
def test_default_presets_give_224(preset):
    p = preset()
    img = Image.new("RGB", (300, 200), (10, 200, 30))
    assert p.image_size == 224 and p.train(img).shape == (3, 224, 224) and p.test(img).shape == (3, 224, 224)


def test_fine_grained_test_transform_is_a_square_resize_then_centre_crop():
    # a 512x256 image, left half black and right half white: Resize((256, 256)) squashes it, so the
    # 224 centre crop keeps 112 black and 112 white columns (an aspect-keeping resize would not).
    img = Image.new("RGB", (512, 256), (0, 0, 0))
    img.paste((255, 255, 255), (256, 0, 512, 256))
    x = fine_grained_preset(None, None).test(img)
    white = (x[0] > 0).float().mean(0)
    assert white[:110].sum() == 0 and white[114:].min() == 1


def test_symmetric_noise_flips_exactly_the_rate_to_other_classes():
    labels = np.arange(1000) % 10
    noisy = inject_label_noise(labels, 10, 0.3, "symmetric", seed=3)
    changed = noisy != labels
    assert changed.sum() == 300
    assert noisy.min() >= 0 and noisy.max() < 10
    assert len(np.unique(noisy[changed])) == 10  # every other class is reachable
    assert np.array_equal(noisy, inject_label_noise(labels, 10, 0.3, "symmetric", seed=3))
    assert not np.array_equal(noisy, inject_label_noise(labels, 10, 0.3, "symmetric", seed=4))


def test_pair_noise_moves_to_the_next_class():
    labels = np.arange(200) % 5
    noisy = inject_label_noise(labels.tolist(), 5, 0.25, "pair", seed=0)
    changed = noisy != labels
    assert changed.sum() == 50
    assert np.array_equal(noisy[changed], (labels[changed] + 1) % 5)


def test_noise_ignores_and_keeps_the_global_rng():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    a = inject_label_noise([0, 1, 2, 3] * 5, 4, 0.5, seed=1)
    np.random.seed(7)
    assert np.array_equal(a, inject_label_noise([0, 1, 2, 3] * 5, 4, 0.5, seed=1))
    np.random.seed(0)
    inject_label_noise([0, 1, 2, 3] * 5, 4, 0.5, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("kwargs, needle", [
    ({"rate": 1.5}, "rate"), ({"kind": "uniform"}, "kind"), ({"num_classes": 1}, "2 classes"),
    ({"labels": [0, 7]}, "labels must lie"),
])
def test_noise_bad_input(kwargs, needle):
    args = {"labels": [0, 1, 2], "num_classes": 3, "rate": 0.2, **kwargs}
    with pytest.raises(UserInputError, match=needle):
        inject_label_noise(**args)
