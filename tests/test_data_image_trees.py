"""Folder, list-file, CIFAR and fine-grained datasets on tiny fake trees built in tmp dirs."""

import pickle
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from olsmooth.data import build_datasets, dataset_info
from olsmooth.data.samples import SplitSamples
from olsmooth.errors import UserInputError

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def write_image(path: Path, color=(128, 128, 128), size=(20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- class folders ---------------------------------------------------------------------------------------

def _folder_tree(root: Path, test_dir: str = "val") -> Path:
    for split, counts in (("train", {"cat": 3, "dog": 2, "owl": 1}), (test_dir, {"cat": 1, "owl": 2})):
        for name, n in counts.items():
            for i in range(n):
                write_image(root / split / name / f"{i}.png", COLORS[i])
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("test_dir", ["val", "test"])
def test_imagefolder_counts_labels_and_shapes(tmp_path, test_dir):
    root = _folder_tree(tmp_path, test_dir)
    assert dataset_info("imagefolder", root) == {"train": 6, "test": 3, "classes": 3}
    bundle = build_datasets("imagefolder", root, image_size=32)
    assert bundle.class_names == ["cat", "dog", "owl"] and bundle.num_classes == 3
    assert sorted(bundle.train.targets) == [0, 0, 0, 1, 1, 2]
    assert sorted(bundle.test.targets) == [0, 2, 2]
    x, _ = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_imagenet_preset_and_test_transform(tmp_path):
    bundle = build_datasets("imagenet", _folder_tree(tmp_path), image_size=48)
    x, y = bundle.test[0]
    assert x.shape == (3, 48, 48) and y == 0
    # test images are solid red: after normalisation every pixel equals (1 - mean) / std, (0 - mean) / std ...
    mean, std = torch.tensor(bundle.mean).view(3, 1, 1), torch.tensor(bundle.std).view(3, 1, 1)
    assert torch.allclose(x, (torch.tensor([1.0, 0, 0]).view(3, 1, 1) - mean) / std * torch.ones(1, 48, 48))
    assert bundle.train[0][0].shape == (3, 48, 48)
    assert bundle.mean == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_test_class_and_missing_split(tmp_path):
    root = _folder_tree(tmp_path)
    write_image(root / "val" / "emu" / "0.png")
    msg = one_line_error(dataset_info, "imagefolder", root, match="no counterpart")
    assert str(root / "val" / "emu") in msg
    other = tmp_path / "other"
    write_image(other / "train" / "a" / "0.png")
    assert str(other / "test") in one_line_error(build_datasets, "imagefolder", other, match="missing folder")


def test_single_class_folder_is_a_user_error(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / split / "only" / "0.png")
    msg = one_line_error(build_datasets, "imagefolder", tmp_path, match="single class")
    assert "'only'" in msg and str(tmp_path) in msg


def test_rgb_data_cannot_become_one_channel(tmp_path):
    one_line_error(build_datasets, "imagefolder", _folder_tree(tmp_path), channels=1, match="channels=1")


@pytest.mark.parametrize("content", [b"\x00garbage, not an image\n\x01" * 10, b"\xff\xd8\xff\xe0" + b"junk\n" * 50])
def test_corrupt_image_error_names_the_file(tmp_path, content):
    root = _folder_tree(tmp_path)
    bad = root / "train" / "dog" / "1.jpg"
    bad.write_bytes(content)
    bundle = build_datasets("imagefolder", root, image_size=32)
    index = bundle.train.items.index(str(bad))
    msg = one_line_error(bundle.train.__getitem__, index, match="cannot read image")
    assert msg.startswith(f"cannot read image {bad}: ")


# --- list files --------------------------------------------------------------------------------------------

def _list_tree(root: Path, with_images_dir: bool) -> Path:
    base = root / "images" if with_images_dir else root
    for i, color in enumerate(COLORS[:4]):
        write_image(base / "a" / f"{i}.jpg", color)
    (root / "train.txt").write_text("a/0.jpg;1\n\na/1.jpg;0\r\na/2.jpg;2\n")
    (root / "test.txt").write_text("a/3.jpg;2\n")
    return root


@pytest.mark.parametrize("with_images_dir", [False, True])
def test_listfile_counts_labels_and_image_root(tmp_path, with_images_dir):
    root = _list_tree(tmp_path, with_images_dir)
    assert dataset_info("listfile", root) == {"train": 3, "test": 1, "classes": 3}
    bundle = build_datasets("listfile", root, image_size=32, augment="none")
    assert bundle.class_names == ["0", "1", "2"]
    assert [bundle.train[i][1] for i in range(3)] == [1, 0, 2]
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(bundle.mean)) / torch.tensor(bundle.std)
    assert torch.allclose(bundle.train[0][0][:, 5, 5], red, atol=0.05)  # JPEG: red is only nearly (255, 0, 0)
    assert bundle.train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("line, needle", [
    ("a/1.jpg", "expected 'relative/path;label' or 'relative/path label'"),
    ("a/1.jpg 0 x", "label 'x'"),
    ("a/1.jpg;x", "label 'x'"),
    ("a/1.jpg;-1", "label '-1'"),
    (";3", "expected"),
    ("/abs/1.jpg;0", "must be relative"),
])
def test_listfile_malformed_line_names_file_and_line(tmp_path, line, needle):
    root = _list_tree(tmp_path, False)
    (root / "train.txt").write_text(f"a/0.jpg;0\n\n{line}\na/2.jpg;1\n")
    msg = one_line_error(dataset_info, "listfile", root, match=needle)
    assert msg.startswith(f"{root / 'train.txt'}:3: ")


def test_listfile_accepts_whitespace_lines_like_caffe_and_mmpretrain(tmp_path):
    root = _list_tree(tmp_path, False)
    write_image(root / "my dir" / "4.jpg", COLORS[4])
    (root / "train.txt").write_text("a/0.jpg 1\n\na/1.jpg\t0\r\nmy dir/4.jpg   2\n")
    (root / "test.txt").write_text("a/3.jpg;2\n")  # the two formats may be mixed
    assert dataset_info("listfile", root) == {"train": 3, "test": 1, "classes": 3}
    bundle = build_datasets("listfile", root, image_size=32)
    assert bundle.train.targets == [1, 0, 2] and bundle.test.targets == [2]
    assert bundle.train.items == [str(root / "a" / "0.jpg"), str(root / "a" / "1.jpg"), str(root / "my dir" / "4.jpg")]


def test_listfile_missing_images_are_reported_when_built(tmp_path):
    root = _list_tree(tmp_path, True)
    (root / "train.txt").write_text("a/0.jpg;1\nb/gone.jpg;0\na/2.jpg;2\nc/also-gone.jpg;0\n")
    assert dataset_info("listfile", root)["train"] == 4  # the cheap query only reads the lists
    msg = one_line_error(build_datasets, "listfile", root, match="2 of 5 listed images are missing")
    assert msg.endswith(f"the first is {root / 'images' / 'b' / 'gone.jpg'}")


def test_listfile_labels_must_cover_range(tmp_path):
    root = _list_tree(tmp_path, False)
    (root / "test.txt").write_text("a/3.jpg;4\n")
    one_line_error(dataset_info, "listfile", root, match=r"cover 0\.\.4.*label 3")


def test_listfile_missing_list(tmp_path):
    assert str(tmp_path / "train.txt") in one_line_error(dataset_info, "listfile", tmp_path, match="missing file")
    one_line_error(dataset_info, "listfile", None, match="needs data_root")


def test_image_list_dataset_pickles(tmp_path):
    bundle = build_datasets("listfile", _list_tree(tmp_path, True), image_size=32)
    clone = pickle.loads(pickle.dumps(bundle.test))
    assert torch.equal(clone[0][0], bundle.test[0][0]) and clone[0][1] == 2


# --- CIFAR ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_root_says_what_layout(tmp_path, name, folder):
    msg = one_line_error(build_datasets, name, tmp_path, match="missing file")
    assert str(tmp_path / folder) in msg and "download=True" in msg
    one_line_error(dataset_info, name, None, match=f"{name} needs data_root.*{folder}")


def test_cifar_corrupt_files_are_user_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle")
    assert dataset_info("cifar10", folder) == {"train": 50000, "test": 10000, "classes": 10}
    one_line_error(build_datasets, "cifar10", folder, match="cannot load cifar10")


# --- fine-grained: paper splits (shipped lists) -------------------------------------------------------------

PAPER = {  # name: (image folder inside the unpack root, list files, train, test, classes) from the paper's README
    "cub200": ("CUB_200_2011/images", ("train.txt", "test.txt"), 5994, 5794, 200),
    "cars": ("car_ims", ("train.txt", "test.txt"), 8144, 8041, 196),
    "aircraft": ("fgvc-aircraft-2013b/data/images", ("trainval.txt", "test.txt"), 6667, 3333, 90),
    "flowers102": ("jpg", ("train.txt", "test.txt"), 1020, 6149, 102),
}


def _entries(name: str, list_file: str) -> list[tuple[str, int]]:
    lines = (files("olsmooth.data") / "splits" / name / list_file).read_text().splitlines()
    return [(path, int(label)) for path, label in (line.strip().split(";") for line in lines if line.strip())]


@pytest.fixture
def unchecked_images(monkeypatch) -> list[int]:
    """Skip the check that every listed image exists (creating thousands of files is slow on some disks);
    the list holds the number of images each skipped check would have looked at."""
    checked: list[int] = []
    monkeypatch.setattr(SplitSamples, "require_images", lambda self, *_: checked.append(len(self.train + self.test)))
    return checked


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_split_counts_without_images(tmp_path, name):
    subpath, _, n_train, n_test, classes = PAPER[name]
    (tmp_path / subpath).mkdir(parents=True)
    assert dataset_info(name, tmp_path) == {"train": n_train, "test": n_test, "classes": classes}
    # the image folder itself is accepted too
    assert dataset_info(name, tmp_path / subpath)["train"] == n_train


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_split_items_carry_the_list_labels(tmp_path, name, unchecked_images):
    subpath, lists, n_train, n_test, classes = PAPER[name]
    entries = [_entries(name, lists[0])[0], _entries(name, lists[1])[0]]
    for (path, _), color in zip(entries, COLORS):
        write_image(tmp_path / subpath / path, color)
    bundle = build_datasets(name, tmp_path, image_size=32)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (n_train, n_test, classes)
    x, y = bundle.train[0]
    assert y == entries[0][1] and x.shape == (3, 32, 32)
    assert bundle.test[0][1] == entries[1][1]
    assert bundle.train.items[0] == str(tmp_path / subpath / entries[0][0])
    assert unchecked_images == [n_train + n_test]


def test_cub_paper_class_names_come_from_folders(tmp_path, unchecked_images):
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    bundle = build_datasets("cub200", tmp_path)
    assert bundle.class_names[0] == "Black_footed_Albatross" and len(set(bundle.class_names)) == 200


def test_paper_split_missing_images_are_reported_when_built(tmp_path):
    image_dir = tmp_path / "jpg"
    first_train, _ = _entries("flowers102", "train.txt")[0]
    write_image(image_dir / _entries("flowers102", "test.txt")[0][0])
    msg = one_line_error(build_datasets, "flowers102", tmp_path, match="7168 of 7169 listed images are missing")
    assert msg.endswith(f"the first is {image_dir / first_train}")


@pytest.mark.parametrize("name", ["cub200", "cars", "aircraft", "flowers102", "dogs"])
def test_missing_image_folder_names_the_path(tmp_path, name):
    subpath = PAPER[name][0] if name in PAPER else "Images"
    msg = one_line_error(dataset_info, name, tmp_path, match="missing image folder")
    assert str(tmp_path / subpath) in msg and "unpack" in msg
    one_line_error(dataset_info, name, None, match="needs data_root")


# --- fine-grained: official splits (fake annotation files) --------------------------------------------------

def _cub_tree(root: Path) -> Path:
    base = root / "CUB_200_2011"
    rows = [(1, "001.Albatross/a1.jpg", 1, 1), (2, "001.Albatross/a2.jpg", 1, 0), (3, "002.Auklet/b1.jpg", 2, 1),
            (4, "003.Grebe/c1.jpg", 3, 0), (5, "003.Grebe/c2.jpg", 3, 1)]
    for i, path, _, _ in rows:
        write_image(base / "images" / path, COLORS[i])
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (base / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n3 003.Grebe\n")
    return root


def test_cub_official_split(tmp_path):
    root = _cub_tree(tmp_path)
    assert dataset_info("cub200", root, split="official") == {"train": 3, "test": 2, "classes": 3}
    bundle = build_datasets("cub200", root / "CUB_200_2011", split="official", image_size=32)
    assert bundle.class_names == ["Albatross", "Auklet", "Grebe"]
    assert bundle.train.targets == [0, 1, 2] and bundle.test.targets == [0, 2]
    assert bundle.train.items[1].endswith("002.Auklet/b1.jpg") and bundle.train[1][1] == 1


def test_cub_official_missing_image_is_reported_when_built(tmp_path):
    root = _cub_tree(tmp_path)
    (root / "CUB_200_2011" / "images" / "002.Auklet" / "b1.jpg").unlink()
    msg = one_line_error(build_datasets, "cub200", root, split="official", match="1 of 5 listed images are missing")
    assert msg.endswith(str(root / "CUB_200_2011" / "images" / "002.Auklet" / "b1.jpg"))


def test_cub_official_missing_annotation_names_it(tmp_path):
    root = _cub_tree(tmp_path)
    (root / "CUB_200_2011" / "classes.txt").unlink()
    msg = one_line_error(dataset_info, "cub200", root, split="official", match="missing file")
    assert str(root / "CUB_200_2011" / "classes.txt") in msg


def test_cub_official_malformed_line(tmp_path):
    root = _cub_tree(tmp_path)
    (root / "CUB_200_2011" / "train_test_split.txt").write_text("1 1\n2 yes\n3 1\n4 0\n5 1\n")
    msg = one_line_error(dataset_info, "cub200", root, split="official", match="expected an integer")
    assert f"{root / 'CUB_200_2011' / 'train_test_split.txt'}:2:" in msg


def test_cars_official_split(tmp_path):
    rows = [("car_ims/000001.jpg", 1, 0), ("car_ims/000002.jpg", 2, 1), ("car_ims/000003.jpg", 2, 0),
            ("car_ims/000004.jpg", 1, 1)]
    ann = np.zeros((1, len(rows)), dtype=[("relative_im_path", "O"), ("bbox_x1", "O"), ("class", "O"),
                                          ("test", "O")])
    for i, (path, cls, test) in enumerate(rows):
        ann[0, i] = (path, 5, cls, test)
        write_image(tmp_path / path, COLORS[i])
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object).reshape(1, -1)
    sio.savemat(tmp_path / "cars_annos.mat", {"annotations": ann, "class_names": names})
    assert dataset_info("cars", tmp_path, split="official") == {"train": 2, "test": 2, "classes": 2}
    bundle = build_datasets("cars", tmp_path / "car_ims", split="official", image_size=32)
    assert bundle.class_names == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert bundle.train.targets == [0, 1] and bundle.test.targets == [1, 0]
    assert bundle.train.items == [str(tmp_path / "car_ims" / "000001.jpg"), str(tmp_path / "car_ims" / "000003.jpg")]
    assert bundle.test[0][0].shape == (3, 32, 32)


def test_aircraft_official_split(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nCessna 172\nA380\n")
    (data / "images_variant_trainval.txt").write_text("0000001 707-320\n0000002 Cessna 172\n0000003 A380\n")
    (data / "images_variant_test.txt").write_text("0000004 A380\n")
    for i in range(1, 5):
        write_image(data / "images" / f"000000{i}.jpg", COLORS[i])
    assert dataset_info("aircraft", tmp_path, split="official") == {"train": 3, "test": 1, "classes": 3}
    bundle = build_datasets("aircraft", data / "images", split="official", image_size=32)
    assert bundle.class_names == ["707-320", "Cessna 172", "A380"]
    assert bundle.train.targets == [0, 1, 2] and bundle.test[0][1] == 2
    (data / "images_variant_test.txt").write_text("0000004 A390\n")
    msg = one_line_error(dataset_info, "aircraft", tmp_path, split="official", match="variant 'A390'")
    assert f"{data / 'images_variant_test.txt'}:1:" in msg


def test_flowers_official_split(tmp_path):
    labels = [1, 2, 1, 2, 3, 3]
    for i in range(1, 7):
        write_image(tmp_path / "jpg" / f"image_{i:05d}.jpg", COLORS[i - 1])
    sio.savemat(tmp_path / "imagelabels.mat", {"labels": np.array([labels])})
    sio.savemat(tmp_path / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[5]]),
                                         "tstid": np.array([[3, 4, 6]])})
    assert dataset_info("flowers102", tmp_path, split="official") == {"train": 3, "test": 3, "classes": 3}
    bundle = build_datasets("flowers102", tmp_path, split="official", image_size=32)
    assert bundle.train.targets == [0, 1, 2] and bundle.test.targets == [0, 1, 2]
    assert bundle.test.items[2] == str(tmp_path / "jpg" / "image_00006.jpg") and bundle.test[2][1] == 2


def _cells(strings):
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s], dtype=object)
    return out


@pytest.mark.parametrize("split", ["paper", "official"])
def test_dogs_official_split(tmp_path, split):
    train = ["n02085620-Chihuahua/n02085620_1.jpg", "n02085782-Japanese_spaniel/n02085782_1.jpg",
             "n02085620-Chihuahua/n02085620_2.jpg"]
    test = ["n02085782-Japanese_spaniel/n02085782_2.jpg"]
    for i, path in enumerate(train + test):
        write_image(tmp_path / "Images" / path, COLORS[i])
    sio.savemat(tmp_path / "train_list.mat", {"file_list": _cells(train), "labels": np.array([[1], [2], [1]])})
    sio.savemat(tmp_path / "test_list.mat", {"file_list": _cells(test), "labels": np.array([[2]])})
    assert dataset_info("dogs", tmp_path, split=split) == {"train": 3, "test": 1, "classes": 2}
    bundle = build_datasets("dogs", tmp_path / "Images", split=split, image_size=32)
    assert bundle.class_names == ["Chihuahua", "Japanese_spaniel"]
    assert bundle.train.targets == [0, 1, 0] and bundle.test[0][1] == 1
    assert bundle.train.items[1] == str(tmp_path / "Images" / train[1])


def test_dogs_missing_list_names_it(tmp_path):
    (tmp_path / "Images").mkdir()
    msg = one_line_error(dataset_info, "dogs", tmp_path, match="missing file")
    assert str(tmp_path / "train_list.mat") in msg


def test_fine_grained_bundle_pickles(tmp_path):
    bundle = build_datasets("cub200", _cub_tree(tmp_path), split="official", image_size=32, augment="none")
    clone = pickle.loads(pickle.dumps(bundle.train))
    assert torch.equal(clone[2][0], bundle.train[2][0]) and clone.targets == bundle.train.targets
