"""Glyph datasets rendered from matplotlib's DejaVu fonts (latin62): the split by design, determinism, labels checked
against an independent rendering, the manifest, the errors, dataset-info and a short training run."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from olsmooth.cli import main
from olsmooth.data import build_datasets, dataset_info
from olsmooth.data.glyphs import build_glyph_dataset, charset_chars, choose_classes, design_group, glyph_options
from olsmooth.data.glyphs.charsets import LATIN62
from olsmooth.data.glyphs.fonts import FontFace
from olsmooth.data.glyphs.render import GlyphRenderer, RenderSettings, change_thickness
from olsmooth.errors import UserInputError

matplotlib = pytest.importorskip("matplotlib")
MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# Three designs, two weights each; plus a font that covers nothing and a fallback font of placeholder boxes.
DESIGNS = {"DejaVuSans": "sans", "DejaVuSans-Bold": "sans", "DejaVuSansMono": "mono", "DejaVuSansMono-Bold": "mono",
           "DejaVuSerif": "serif", "DejaVuSerif-Bold": "serif"}
DECOYS = ("DejaVuSansDisplay", "LastResortHE-Regular")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command in this process (importing torch once per test run): exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def font_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fonts")
    for stem in (*DESIGNS, *DECOYS):
        if not (MPL_FONTS / f"{stem}.ttf").is_file():
            pytest.skip(f"matplotlib does not ship {stem}.ttf")
        (folder / f"{stem}.ttf").symlink_to(MPL_FONTS / f"{stem}.ttf")
    return folder


def build(font_dir: Path, out: Path, **options) -> dict:
    settings = dict(charset="latin62", fonts=[str(font_dir)], copies=2, test_groups=1, seed=0) | options
    return build_glyph_dataset(glyph_options(str(out), **settings))


@pytest.fixture(scope="module")
def dataset(font_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("glyphs") / "latin"
    build(font_dir, out)
    return out


def arrays(root: Path, split: str) -> dict[str, np.ndarray]:
    return {kind: np.load(root / f"{split}-{kind}.npy") for kind in ("images", "labels", "fonts")}


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def test_gb2312_level1_is_the_3755_hanzi_of_rows_16_to_55():
    chars = charset_chars("gb2312-1")
    assert len(chars) == len(set(chars)) == 3755
    assert chars[0] == "啊" and chars[-1] == "座"  # 0xB0A1 and 0xD7F9, the first and last cells of level 1
    assert all("CJK UNIFIED IDEOGRAPH" in unicodedata.name(c) for c in chars)
    assert all(0xB0 <= c.encode("gb2312")[0] <= 0xD7 for c in chars)
    assert sorted(chars, key=lambda c: c.encode("gb2312")) == list(chars)


def test_class_subset_is_seeded_and_keeps_charset_order():
    chars = charset_chars("gb2312-1")
    picked = choose_classes(chars, 500, seed=3)
    assert len(set(picked)) == 500 and set(picked) <= set(chars)
    assert [chars.index(c) for c in picked] == sorted(chars.index(c) for c in picked)
    assert picked == choose_classes(chars, 500, seed=3) != choose_classes(chars, 500, seed=4)
    assert choose_classes(chars, None, seed=3) == chars
    with pytest.raises(UserInputError, match="--classes"):
        choose_classes(LATIN62, 63, seed=0)


@pytest.mark.parametrize("a, b", [
    ("Noto Sans CJK SC", "Noto Sans Mono CJK JP"), ("AR PL UKai TW MBE", "AR PL KaitiM GB"),
    ("AR PL UMing CN", "AR PL SungtiL GB"), ("WenQuanYi Micro Hei Mono", "Droid Sans Fallback"),
    ("WenQuanYi Zen Hei Sharp", "WenQuanYi Zen Hei"), ("DejaVu Sans Condensed", "DejaVu Sans"),
])
def test_near_copies_share_a_design_group(a, b):
    assert design_group(a) == design_group(b)


@pytest.mark.parametrize("a, b", [("DejaVu Sans Mono", "DejaVu Sans"), ("Noto Serif CJK SC", "Noto Sans CJK SC"),
                                  ("AR PL UKai CN", "AR PL UMing CN"), ("WenQuanYi Zen Hei", "WenQuanYi Micro Hei")])
def test_distinct_designs_get_distinct_groups(a, b):
    assert design_group(a) != design_group(b)


def test_stroke_thickness_matches_a_slow_neighbourhood_max_and_min():
    image = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    for pixels in (-2, -1, 1, 2):
        padded = np.pad(image, abs(pixels))
        reduce = max if pixels > 0 else min
        slow = np.array([[reduce(padded[i:i + 2 * abs(pixels) + 1, j:j + 2 * abs(pixels) + 1].ravel())
                          for j in range(image.shape[1])] for i in range(image.shape[0])])
        assert np.array_equal(change_thickness(image, pixels), slow)
    assert change_thickness(image, 0) is image


def test_split_is_by_design_never_by_image(dataset):
    files = [Path(f["file"]).stem for f in manifest(dataset)["fonts"]]
    designs = {split: {DESIGNS[files[i]] for i in np.unique(arrays(dataset, split)["fonts"])}
               for split in ("train", "test")}
    assert len(designs["test"]) == 1 and len(designs["train"]) == 2
    assert not designs["train"] & designs["test"]


def test_every_class_is_in_both_splits_and_training_copies_are_augmented(dataset):
    train, test = arrays(dataset, "train"), arrays(dataset, "test")
    # 2 test faces x 62 clean glyphs; 4 training faces x 62 glyphs x 2 copies, none equal to another
    assert np.bincount(test["labels"]).tolist() == [2] * 62
    assert np.bincount(train["labels"]).tolist() == [8] * 62
    assert len({image.tobytes() for image in train["images"]}) == len(train["images"])
    assert train["images"].shape[1:] == test["images"].shape[1:] == (32, 32)


def _simple_render(font_file: str, char: str, size: int = 32) -> np.ndarray:
    """A rendering written independently of the builder: draw at 26 px, crop the ink, paste it centred."""
    font = ImageFont.truetype(font_file, 26)
    scratch = Image.new("L", (96, 96))
    ImageDraw.Draw(scratch).text((20, 20), char, font=font, fill=255)
    ink = scratch.crop(scratch.getbbox())
    canvas = Image.new("L", (size, size))
    canvas.paste(ink, ((size - ink.width) // 2, (size - ink.height) // 2))
    return np.asarray(canvas, dtype=np.float64)


def _nearest_char(image: np.ndarray, references: np.ndarray) -> int:
    x = (image - image.mean()) / (image.std() + 1e-9)
    refs = (references - references.mean(axis=(1, 2), keepdims=True)) / references.std(axis=(1, 2), keepdims=True)
    return int(np.argmax((refs * x).mean(axis=(1, 2))))


@pytest.mark.parametrize("split, least", [("test", 0.95), ("train", 0.5)])
def test_labels_name_the_character_drawn(dataset, split, least):
    """Each image's nearest independent rendering (by correlation, in its own font) is mostly its label's character;
    wrong or shifted labels would score near 1/62. Augmented copies are shifted and rotated, hence the lower bar."""
    data, fonts = arrays(dataset, split), manifest(dataset)["fonts"]
    assert manifest(dataset)["charset"]["chars"] == LATIN62
    refs = {i: np.stack([_simple_render(f["file"], c) for c in LATIN62]) for i, f in enumerate(fonts)}
    guessed = np.array([_nearest_char(img.astype(np.float64), refs[int(f)])
                        for img, f in zip(data["images"], data["fonts"])])
    assert (guessed == data["labels"]).mean() >= least


def test_same_seed_gives_the_same_bytes_and_another_seed_other_copies(font_dir, dataset, tmp_path):
    build(font_dir, tmp_path / "again")
    for path in sorted(dataset.glob("*.npy")):
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name
    test_group = manifest(dataset)["split"]["test_groups"]
    build(font_dir, tmp_path / "other", seed=1, test_group_names=test_group)
    assert np.array_equal(arrays(dataset, "test")["images"], arrays(tmp_path / "other", "test")["images"])
    assert not np.array_equal(arrays(dataset, "train")["images"], arrays(tmp_path / "other", "train")["images"])


def test_manifest_records_fonts_split_seed_and_checksums(dataset):
    m = manifest(dataset)
    assert (m["format"], m["seed"], m["image"]["size"], m["train_copies"]) == ("olsmooth-glyphs", 0, 32, 2)
    assert m["charset"] == {"name": "latin62", "size": 62, "classes": 62, "chars": LATIN62}
    assert sorted(Path(f["file"]).stem for f in m["fonts"]) == sorted(DESIGNS)
    assert all(f["split"] == ("test" if f["group"] in m["split"]["test_groups"] else "train") for f in m["fonts"])
    assert not set(m["split"]["test_groups"]) & set(m["split"]["train_groups"])
    skipped = {Path(f["file"]).stem: f["reason"] for f in m["skipped_fonts"]}
    assert "lacks 62 of 62" in skipped["DejaVuSansDisplay"] and "glyph" in skipped["LastResortHE-Regular"]
    for split in ("train", "test"):
        data = arrays(dataset, split)
        assert m["counts"][split]["images"] == len(data["labels"]) == len(data["images"])
        assert m["counts"][split]["faces"] == sum(f["split"] == split for f in m["fonts"])
        assert all(m["fonts"][i]["split"] == split for i in np.unique(data["fonts"]))
    for name, digest in m["sha256"].items():
        assert hashlib.sha256((dataset / name).read_bytes()).hexdigest() == digest
    train = arrays(dataset, "train")["images"] / 255.0
    assert m["image"]["mean"] == pytest.approx(train.mean(), abs=1e-6)
    assert m["image"]["std"] == pytest.approx(train.std(), abs=1e-6)


def test_the_toolkit_reads_it(dataset):
    bundle = build_datasets("glyphs", data_root=dataset)
    assert bundle.num_classes == 62 and bundle.class_names == list(LATIN62) and bundle.channels == 1
    image, label = bundle.test[5]
    assert image.shape == (1, 32, 32) and label == int(arrays(dataset, "test")["labels"][5])
    assert dataset_info("glyphs", dataset) == {"train": 496, "test": 124, "classes": 62, "train_faces": 4,
                                               "test_faces": 2, "train_groups": 2, "test_groups": 1}


def test_dataset_info_and_a_short_training_run(dataset, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "dataset-info", "--dataset", "glyphs", "--data-root", str(dataset))
    assert code == 0 and "496 train, 124 test, 62 classes, 4 train faces, 2 test faces" in out
    run = tmp_path / "run"
    code, _, _ = run_cli(capsys, "train", "--dataset", "glyphs", "--data-root", str(dataset), "--epochs", "4",
                         "--batch-size", "32", "--threads", "1", "--out", str(run))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert code == 0 and len(rows) == 4
    assert rows[-1]["top1"] > 3 * 100 / 62  # well above chance on a design it never saw


def test_cli_builds_and_dry_run_writes_nothing(font_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    common = ("build-dataset", "glyphs", "--charset", "latin62", "--fonts", str(font_dir), "--out", str(out))
    code, stdout, _ = run_cli(capsys, *common, "--dry-run", "--test-group", "DejaVu Serif")
    assert code == 0 and "test  DejaVu Serif: 2 faces" in stdout and not out.exists()
    code, _, err = run_cli(capsys, *common, "--classes", "10", "--copies", "1", "--size", "24", "--test-group",
                           "DejaVu Serif")
    assert code == 0, err
    m = manifest(out)
    assert m["charset"]["classes"] == 10 and m["image"]["size"] == 24 and m["split"]["test_groups"] == ["DejaVu Serif"]
    assert np.bincount(arrays(out, "train")["labels"]).tolist() == [4] * 10  # Sans and Mono, two weights, one copy
    code, _, err = run_cli(capsys, *common)
    assert code == 2 and "--force" in err and manifest(out) == m


@pytest.mark.parametrize("charset, package", [("latin62", "fonts-dejavu-core"), ("gb2312-1", "fonts-noto-cjk")])
def test_too_few_fonts_is_one_line_naming_the_packages(font_dir, tmp_path, capsys, charset, package):
    only_sans = tmp_path / "sans"
    only_sans.mkdir()
    (only_sans / "DejaVuSans.ttf").symlink_to(font_dir / "DejaVuSans.ttf")
    code, _, err = run_cli(capsys, "build-dataset", "glyphs", "--charset", charset, "--fonts", str(only_sans),
                           "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and package in lines[0] and "design groups" in lines[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.*"))


def test_force_refuses_to_replace_a_folder_that_is_no_dataset(font_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="holds no glyph dataset"):
        build(font_dir, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_missing_dataset_folder_says_how_to_build_it(tmp_path):
    with pytest.raises(UserInputError, match="build-dataset glyphs"):
        build_datasets("glyphs", data_root=tmp_path)


CJK_DIRS = [Path("/usr/share/fonts/opentype/noto"), Path("/usr/share/fonts/truetype/wqy")]


@pytest.mark.skipif(not all(d.is_dir() for d in CJK_DIRS), reason="needs fonts-noto-cjk and fonts-wqy-zenhei")
def test_cjk_build_groups_near_copies_and_keeps_similar_characters_apart(tmp_path):
    chars = charset_chars("gb2312-1")
    out = tmp_path / "cjk"
    build_glyph_dataset(glyph_options(str(out), charset="gb2312-1", classes=30, fonts=[str(d) for d in CJK_DIRS],
                                      copies=1, test_group_names=["WenQuanYi Zen Hei"]))
    m = manifest(out)
    assert set(m["charset"]["chars"]) <= set(chars) and len(m["charset"]["chars"]) == 30
    groups = {f["group"] for f in m["fonts"]}
    assert "Noto Sans CJK" in groups and {f["split"] for f in m["fonts"] if f["group"] != "WenQuanYi Zen Hei"} == {
        "train"}
    # Mono and regional copies of a glyph are stored once per split
    assert any(f["duplicates"] > 0 for f in m["fonts"])
    noto = next(FontFace(f["file"], f["index"], f["family"], f["style"]) for f in m["fonts"]
                if f["family"] == "Noto Sans CJK SC")
    renderer = GlyphRenderer(noto, RenderSettings(size=32))
    images = [renderer.downsample(renderer.hires(c)).astype(int) for c in "己已巳"]
    assert min(np.abs(a - b).sum() for i, a in enumerate(images) for b in images[i + 1:]) > 255
