"""PCA lighting noise, channel repeat and the preset sizes (label noise: test_data_noise.py)."""

import pytest
import torch
from PIL import Image

from olsmooth.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    Lighting,
    RepeatChannels,
    fine_grained_preset,
    imagenet_preset,
)


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
