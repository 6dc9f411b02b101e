"""Plan and build a glyph dataset: the charset and its K classes, the faces that cover it, the split by design
group, then the rendering into an array folder with its manifest, written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import UserInputError
from ..formats.array_folder import KINDS, MANIFEST, SPLITS, array_path
from .charsets import charset_chars, charset_packages, choose_classes
from .fonts import FontFace, faces_covering, font_files
from .render import Augmentation, GlyphRenderer, RenderSettings

FORMAT = "olsmooth-glyphs"
VERSION = 1
_STREAM_SPLIT, _STREAM_AUGMENT = 1, 2  # the seed's streams; 0 is the class subset (charsets.choose_classes)


@dataclass(frozen=True)
class GlyphOptions:
    """What to build. `fonts` empty: every face fontconfig knows. `test_group_names` empty: `test_groups` design
    groups drawn by the seed."""

    out: Path
    charset: str = "gb2312-1"
    classes: int | None = None
    fonts: tuple[str, ...] = ()
    size: int = 32
    copies: int = 4
    test_groups: int = 2
    test_group_names: tuple[str, ...] = ()
    seed: int = 0
    force: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)


@dataclass(frozen=True)
class GlyphPlan:
    """The classes, the covering faces with their split, and the faces left out with their reasons."""

    charset: str
    chars: str
    faces: list[FontFace]
    skipped: list[tuple[FontFace, str]]
    test_groups: list[str]
    train_groups: list[str]

    def split_of(self, face: FontFace) -> str:
        """'test' for a face of a test group, else 'train'."""
        return "test" if face.group in self.test_groups else "train"

    def describe(self) -> list[str]:
        """Readable lines: the classes, each group with its split and faces, the faces left out."""
        lines = [f"charset {self.charset}: {len(self.chars)} classes"]
        for group in sorted(self.train_groups + self.test_groups):
            faces = [f for f in self.faces if f.group == group]
            split = "test " if group in self.test_groups else "train"
            lines.append(f"{split} {group}: {len(faces)} faces: " + ", ".join(f.name for f in faces))
        none = f"lacks {len(self.chars)} "
        partial = [(face, reason) for face, reason in self.skipped if not reason.startswith(none)]
        lines += [f"skipped {face.name} ({face.file}:{face.index}): {reason}" for face, reason in partial]
        if len(self.skipped) > len(partial):
            lines.append(f"skipped {len(self.skipped) - len(partial)} other faces that hold none of the characters")
        return lines


def _check_options(opts: GlyphOptions, writing: bool) -> None:
    """Ranges of the numbers, and (when `writing`) that `out` is new or a dataset folder that --force may replace."""
    if not 8 <= opts.size <= 256:
        raise UserInputError(f"--size must lie in 8..256 pixels, got {opts.size}")
    if opts.copies < 1:
        raise UserInputError(f"--copies must be at least 1, got {opts.copies}")
    if opts.test_groups < 1:
        raise UserInputError(f"--test-groups must be at least 1, got {opts.test_groups}")
    if not writing:
        return
    if opts.out.exists() and not opts.out.is_dir():
        raise UserInputError(f"--out {opts.out} is a file, not a folder")
    if opts.out.exists() and not opts.force:
        raise UserInputError(f"{opts.out} exists; pass --force to replace it, or choose another --out")
    if opts.out.exists() and not (opts.out / MANIFEST).is_file() and any(opts.out.iterdir()):
        raise UserInputError(f"{opts.out} is a non-empty folder that holds no glyph dataset; --force replaces only "
                             f"a dataset folder")


def plan_glyph_dataset(opts: GlyphOptions) -> GlyphPlan:
    """Find the faces that cover the chosen characters and split their design groups; renders nothing.

    Too few covering design groups is a user error naming the Debian packages to install.
    """
    _check_options(opts, writing=False)
    chars = choose_classes(charset_chars(opts.charset), opts.classes, opts.seed)
    coverage = faces_covering(font_files(opts.fonts), chars)
    groups = sorted({face.group for face in coverage.covering})
    wanted = len(opts.test_group_names) or opts.test_groups
    if len(groups) < wanted + 1:
        where = "the given --fonts" if opts.fonts else "fontconfig's fonts (fc-list)"
        found = f" ({', '.join(groups)})" if groups else ""
        raise UserInputError(
            f"only {len(groups)} design groups{found} among {where} cover {opts.charset} ({len(chars)} characters); "
            f"the split needs {wanted + 1} ({wanted} test + 1 train): install the Debian packages "
            f"{' '.join(charset_packages(opts.charset))}, or pass --fonts with more font files")
    if opts.test_group_names:
        unknown = [name for name in opts.test_group_names if name not in groups]
        if unknown:
            raise UserInputError(f"unknown design group {unknown[0]!r}; covering groups: {', '.join(groups)}")
        test = sorted(set(opts.test_group_names))
    else:
        rng = np.random.default_rng([opts.seed, _STREAM_SPLIT])
        test = sorted(groups[i] for i in rng.choice(len(groups), size=opts.test_groups, replace=False))
    train = [g for g in groups if g not in test]
    return GlyphPlan(opts.charset, chars, coverage.covering, coverage.skipped, test, train)


@dataclass
class _Part:
    """One face's rendered images, labels and its record, held until the arrays are assembled."""

    images: np.ndarray
    labels: np.ndarray
    record: dict[str, Any]


def _render_face(face_id: int, face: FontFace, split: str, plan: GlyphPlan, opts: GlyphOptions,
                 settings: RenderSettings, seen: set[tuple[int, bytes]]) -> _Part | str:
    """A face's images for its split, skipping renderings identical to one already in the split (`seen`, updated);
    training images are `copies` augmented copies each. A reason string when a glyph renders no ink."""
    renderer = GlyphRenderer(face, settings)
    images, labels, keys = [], [], []
    for label, char in enumerate(plan.chars):
        hires = renderer.hires(char)
        if hires is None:
            return f"renders no ink for {char!r}"
        clean = renderer.downsample(hires)
        key = (label, hashlib.blake2b(clean.tobytes(), digest_size=16).digest())
        if key in seen:
            continue
        keys.append(key)
        if split == "test":
            images.append(clean)
        else:
            images += [renderer.augment(hires, np.random.default_rng([opts.seed, _STREAM_AUGMENT, face_id, label, c]),
                                        opts.augmentation) for c in range(opts.copies)]
        labels += [label] * (1 if split == "test" else opts.copies)
    seen.update(keys)
    record = {"file": face.file, "index": face.index, "family": face.family, "style": face.style,
              "group": face.group, "split": split, "glyphs": len(keys), "duplicates": len(plan.chars) - len(keys),
              "images": len(labels)}
    shape = (0, settings.size, settings.size)
    return _Part(np.stack(images) if images else np.zeros(shape, np.uint8), np.asarray(labels, np.int32), record)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_split(folder: Path, split: str, parts: list[tuple[int, _Part]]) -> None:
    """The split's three arrays, each image tagged with the index of its font in the manifest's list."""
    arrays = {"images": np.concatenate([p.images for _, p in parts]),
              "labels": np.concatenate([p.labels for _, p in parts]),
              "fonts": np.concatenate([np.full(len(p.labels), i, KINDS["fonts"]) for i, p in parts])}
    for kind, array in arrays.items():
        np.save(array_path(folder, split, kind), array.astype(KINDS[kind], copy=False))


def _versions() -> dict[str, str]:
    """Versions of what the pixels depend on (FreeType's rasteriser above all)."""
    import fontTools
    import PIL
    from PIL import features

    from ... import __version__
    return {"olsmooth": __version__, "pillow": PIL.__version__, "freetype": features.version("freetype2") or "?",
            "fonttools": fontTools.version, "numpy": np.__version__}


def _manifest(plan: GlyphPlan, opts: GlyphOptions, settings: RenderSettings, records: list[dict[str, Any]],
              skipped: list[tuple[FontFace, str]], stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "seed": opts.seed,
        "charset": {"name": opts.charset, "size": len(charset_chars(opts.charset)), "classes": len(plan.chars),
                    "chars": plan.chars},
        "image": {"size": settings.size, "supersample": settings.supersample, "em_fraction": settings.em_fraction,
                  "ink": "white on black", "mean": stats["mean"], "std": stats["std"]},
        "train_copies": opts.copies, "augmentation": asdict(opts.augmentation),
        "split": {"test_groups": plan.test_groups, "train_groups": plan.train_groups},
        "fonts": records,
        "skipped_fonts": [{"file": f.file, "index": f.index, "family": f.family, "style": f.style, "reason": r}
                          for f, r in skipped],
        "counts": stats["counts"], "sha256": stats["sha256"], "versions": _versions(),
    }


def _replace_folder(partial: Path, out: Path) -> None:
    """Move the finished folder into place, replacing an older dataset folder only once the new one is whole."""
    old = out.with_name(f"{out.name}.replaced-{os.getpid()}")
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build_glyph_dataset(opts: GlyphOptions, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Plan, then render the faces into `opts.out` (arrays + manifest.json) and return the manifest; `log` gets the
    plan and a line per face.

    Faces are processed in plan order; the same fonts, options and seed give the same bytes. The folder is built
    beside `out` and renamed into place when complete.
    """
    _check_options(opts, writing=True)
    plan = plan_glyph_dataset(opts)
    for line in plan.describe():
        log(line)
    settings = RenderSettings(size=opts.size)
    parts: dict[str, list[tuple[int, _Part]]] = {split: [] for split in SPLITS}
    seen: dict[str, set[tuple[int, bytes]]] = {split: set() for split in SPLITS}
    records: list[dict[str, Any]] = []
    skipped = list(plan.skipped)
    for face_id, face in enumerate(plan.faces):
        start, split = time.perf_counter(), plan.split_of(face)
        part = _render_face(face_id, face, split, plan, opts, settings, seen[split])
        if isinstance(part, str):
            skipped.append((face, part))
            log(f"skipped {face.name}: {part}")
            continue
        parts[split].append((len(records), part))
        records.append(part.record)
        log(f"{split} {face.name}: {part.record['glyphs']} glyphs, {part.record['duplicates']} duplicates, "
            f"{part.record['images']} images ({time.perf_counter() - start:.1f} s)")
    for split in SPLITS:
        present = np.unique(np.concatenate([p.labels for _, p in parts[split]] or [np.zeros(0, np.int32)]))
        if len(present) < len(plan.chars):
            raise UserInputError(f"no {split} face renders every character of {plan.charset}; see the skipped faces")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    partial = opts.out.with_name(f"{opts.out.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        for split in SPLITS:
            _write_split(partial, split, parts[split])
        train = np.load(array_path(partial, "train", "images"), mmap_mode="r")
        mean = float(np.mean(train, dtype=np.float64) / 255)
        std = float(np.sqrt(np.mean(np.square(train / 255.0 - mean, dtype=np.float64))))
        counts = {split: {"images": sum(len(p.labels) for _, p in parts[split]), "faces": len(parts[split]),
                          "groups": len(plan.test_groups if split == "test" else plan.train_groups)}
                  for split in SPLITS}
        sha = {array_path(partial, s, k).name: _sha256(array_path(partial, s, k)) for s in SPLITS for k in KINDS}
        manifest = _manifest(plan, opts, settings, records, skipped,
                             {"mean": round(mean, 6), "std": round(std, 6), "counts": counts, "sha256": sha})
        (partial / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        _replace_folder(partial, opts.out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def glyph_options(out: str, **given: Any) -> GlyphOptions:
    """GlyphOptions from command-line values, leaving unset (None) ones at their defaults."""
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if v is not None}
    return GlyphOptions(out=Path(out).expanduser(), **values)

