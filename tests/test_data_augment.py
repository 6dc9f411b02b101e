"""The augment levels: 'none' is the test transform, 'light' only translates, 'default' is the dataset's recipe."""

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from olsmooth.data import build_datasets
from olsmooth.data.transforms import array_preset, cifar_preset, fine_grained_preset

DRAWS = 40


def windows(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every H×W crop of the zero-padded C×H×W image: the outputs a random crop with this padding can give."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[-2:]
    return [padded[:, y:y + h, x:x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]


def which(output: torch.Tensor, candidates: list[torch.Tensor]) -> int:
    """Index of the candidate the output equals; -1 when none."""
    return next((i for i, c in enumerate(candidates) if torch.allclose(output, c, atol=1e-6)), -1)


def test_digits_levels():
    none, light, default = (build_datasets("digits", augment=level) for level in ("none", "light", "default"))
    raw = none.train.items[3]
    mean, std = none.mean[0], none.std[0]
    assert torch.equal(none.train[3][0], none.test.transform(raw))
    assert torch.equal(default.train[3][0], none.train[3][0])
    shifts = windows(raw, 1)
    seen = {which(light.train[3][0] * std + mean, shifts) for _ in range(DRAWS)}
    assert -1 not in seen and len(seen) > 1  # only 1-pixel shifts, never a flip


def test_small_array_light_translates_and_default_also_flips():
    torch.manual_seed(0)
    image = torch.rand(1, 28, 28)
    preset = array_preset(28, None, None, (0.0,), (1.0,), crop_and_flip=True)
    light = {which(preset.light(image), windows(image, 1)) for _ in range(DRAWS)}
    assert -1 not in light and len(light) > 1
    plain, flipped = windows(image, 2), windows(image.flip(-1), 2)
    default = [(which(out, plain), which(out, flipped)) for out in (preset.train(image) for _ in range(DRAWS))]
    assert all(p >= 0 or f >= 0 for p, f in default) and any(f >= 0 and p < 0 for p, f in default)
    assert torch.equal(preset.train_transform("none")(image), image)


def test_cifar_light_is_a_two_pixel_translation():
    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    preset = cifar_preset(None, None)
    mean, std = torch.tensor(preset.mean).view(3, 1, 1), torch.tensor(preset.std).view(3, 1, 1)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    shifts = windows(image.float() / 255, 2)
    seen = {which(preset.light(pil) * std + mean, shifts) for _ in range(DRAWS)}
    assert -1 not in seen and len(seen) > 1


def _left_dark(x: torch.Tensor) -> bool:
    half = x.shape[-1] // 2
    return bool(x[..., :half].mean() < x[..., half:].mean())


def _half_black_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (64, 48), (0, 0, 0))
    img.paste((255, 255, 255), (32, 0, 64, 48))
    img.save(path)
    return path


def test_image_folder_light_never_flips_and_default_does(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _half_black_image(tmp_path / split / cls / "0.png")
    light = build_datasets("imagefolder", tmp_path, image_size=32, augment="light").train
    default = build_datasets("imagefolder", tmp_path, image_size=32, augment="default").train
    none = build_datasets("imagefolder", tmp_path, image_size=32, augment="none")
    assert all(_left_dark(light[0][0]) for _ in range(DRAWS))
    assert not all(_left_dark(default[0][0]) for _ in range(DRAWS))
    assert torch.equal(none.train[0][0], none.test[0][0])


def test_fine_grained_light_is_the_paper_crop_without_the_flip(tmp_path):
    img = Image.open(_half_black_image(tmp_path / "x.png"))
    preset = fine_grained_preset(32, None)
    assert all(_left_dark(preset.light(img)) for _ in range(DRAWS))
    assert not all(_left_dark(preset.train(img)) for _ in range(DRAWS))
