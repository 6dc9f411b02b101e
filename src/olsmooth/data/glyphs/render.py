"""Rendering one face's glyphs: centred in a fixed canvas, drawn supersampled and box-filtered down; training
copies augmented (stroke thickness, affine jitter, blur, noise) from a generator the caller seeds per image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .fonts import FontFace


@dataclass(frozen=True)
class RenderSettings:
    """Canvas side `size` (px), drawing at `supersample` times that side, the em at `em_fraction` of the canvas."""

    size: int = 32
    supersample: int = 4
    em_fraction: float = 0.8

    @property
    def hires(self) -> int:
        """Side of the supersampled canvas."""
        return self.size * self.supersample


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the training copies' random changes, drawn uniformly per image.

    thickness: strokes grown (positive) or thinned (negative) by this many supersampled pixels per side;
    rotate (degrees), shear (x shear factor), scale and aspect (relative), shift (output pixels) make the affine
    jitter about the canvas centre; blur: Gaussian radius up to this (output pixels); noise: Gaussian noise with a
    standard deviation up to this (grey levels of 255).
    """

    thickness: tuple[int, int] = (-1, 2)
    rotate: float = 4.0
    shear: float = 0.08
    scale: tuple[float, float] = (0.9, 1.05)
    aspect: float = 0.05
    shift: float = 1.5
    blur: float = 0.7
    noise: float = 8.0


def change_thickness(image: np.ndarray, pixels: int) -> np.ndarray:
    """Grey dilation (pixels > 0) or erosion (pixels < 0) by a (2|pixels|+1)-square, the border counted as ink-free."""
    if pixels == 0:
        return image
    k = abs(pixels)
    reduce = np.max if pixels > 0 else np.min
    out = image
    for axis in (0, 1):
        pad = [(k, k) if a == axis else (0, 0) for a in (0, 1)]
        out = reduce(sliding_window_view(np.pad(out, pad), 2 * k + 1, axis=axis), axis=-1)
    return out


class GlyphRenderer:
    """Draws characters of one face: white ink on black, the ink's bounding box centred on the canvas."""

    def __init__(self, face: FontFace, settings: RenderSettings) -> None:
        self.settings = settings
        em = round(settings.hires * settings.em_fraction)
        self.font = ImageFont.truetype(face.file, size=em, index=face.index)

    def hires(self, char: str) -> np.ndarray | None:
        """The supersampled canvas (uint8) with the glyph's ink centred, shrunk to fit when it overflows (keeping
        a one-output-pixel margin); None when the glyph has no ink."""
        side, margin = self.settings.hires, self.settings.supersample
        scratch = Image.new("L", (2 * side, 2 * side))
        ImageDraw.Draw(scratch).text((side, side), char, font=self.font, fill=255, anchor="mm")
        box = scratch.getbbox()
        if box is None:
            return None
        ink = scratch.crop(box)
        room = side - 2 * margin
        if max(ink.size) > room:
            factor = room / max(ink.size)
            ink = ink.resize((max(1, round(ink.width * factor)), max(1, round(ink.height * factor))), Image.BOX)
        canvas = Image.new("L", (side, side))
        canvas.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
        return np.asarray(canvas)

    def downsample(self, hires: np.ndarray) -> np.ndarray:
        """The output image: the supersampled canvas box-filtered to size x size."""
        size = self.settings.size
        return np.asarray(Image.fromarray(hires).resize((size, size), Image.BOX))

    def augment(self, hires: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
        """One training copy; every random number is drawn, in a fixed order, whatever the ranges, so a copy depends
        only on the image, `aug` and the generator's seed."""
        ss, side = self.settings.supersample, self.settings.hires
        thickness = int(rng.integers(aug.thickness[0], aug.thickness[1] + 1))
        angle = math.radians(rng.uniform(-aug.rotate, aug.rotate))
        shear = rng.uniform(-aug.shear, aug.shear)
        scale = rng.uniform(*aug.scale)
        aspect = 1 + rng.uniform(-aug.aspect, aug.aspect)
        shift = rng.uniform(-aug.shift, aug.shift, size=2) * ss
        blur = rng.uniform(0, aug.blur)
        noise_sd = rng.uniform(0, aug.noise)
        noise = rng.standard_normal((self.settings.size, self.settings.size))
        # forward map about the centre: rotation @ shear @ scale; PIL wants the inverse (output -> input)
        cos, sin = math.cos(angle), math.sin(angle)
        forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) @ np.diag(
            [scale * aspect, scale / aspect])
        inverse = np.linalg.inv(forward)
        centre = np.array([side / 2, side / 2])
        offset = centre - inverse @ (centre + shift)
        coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
        image = Image.fromarray(change_thickness(hires, thickness))
        image = image.transform((side, side), Image.AFFINE, coeffs, resample=Image.BILINEAR)
        image = image.resize((self.settings.size, self.settings.size), Image.BOX)
        if blur > 0.05:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        noisy = np.asarray(image, dtype=np.float32) + noise_sd * noise
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
