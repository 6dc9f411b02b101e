"""The losses work with torch alone; the toolkit is the `olsmooth[toolkit]` extra and says so when it is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from olsmooth._extras import TOOLKIT_PACKAGES, ToolkitMissingError, toolkit_required

ROOT = Path(__file__).resolve().parents[1]

# Import names of the packages a torch-only install lacks.
BLOCKED = ("torchvision", "timm", "matplotlib", "sklearn", "scipy", "yaml", "tensorboard", "tqdm", "PIL", "safetensors",
           "fontTools")

BLOCKER = f"""
import sys

class _ToolkitBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {set(BLOCKED)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _ToolkitBlocker())
"""

LOSSES_SCRIPT = """
import importlib, math, pkgutil
import torch
import olsmooth
import olsmooth.losses as losses
from olsmooth import OnlineLabelSmoothing

for module in pkgutil.iter_modules(losses.__path__):
    importlib.import_module(f"olsmooth.losses.{module.name}")

# paper-cifar starts from an all-zero S: on zero logits the loss is 0.5 ln K, its gradient 0.5 (1/K - onehot) / B.
K, B = 4, 2
logits = torch.zeros(B, K, requires_grad=True)
target = torch.tensor([1, 3])
criterion = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K)
loss = criterion(logits, target)
loss.backward()
assert math.isclose(loss.item(), 0.5 * math.log(K), rel_tol=1e-6), loss.item()
expected = 0.5 * (torch.full((B, K), 1 / K) - torch.nn.functional.one_hot(target, K)) / B
assert torch.allclose(logits.grad, expected, atol=1e-7), logits.grad
criterion.next_epoch()

for name in losses.list_losses():
    criterion = losses.build_loss(name, num_classes=K)
    criterion.bind(losses.TrainingRun(num_samples=8, epochs=1, steps_per_epoch=1))  # what a training loop does
    if criterion.needs_transition:
        criterion.set_transition(torch.eye(K))
    logits = torch.randn(8, K, requires_grad=True)
    extra = {"index": torch.arange(8)} if criterion.needs_index else {}
    loss = criterion(logits, torch.arange(8) % K, **extra)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0, name
print("ok", sorted(losses.list_losses()))
"""


def run_blocked(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run python with the toolkit packages unimportable (a sitecustomize that installs the blocker)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    path = [str(tmp_path), str(ROOT / "src"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_blocker_covers_every_toolkit_package():
    assert set(BLOCKED) == set(TOOLKIT_PACKAGES)


def test_losses_import_and_train_without_the_toolkit(tmp_path):
    result = run_blocked(tmp_path, "-c", LOSSES_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok"), result.stdout


@pytest.mark.parametrize("command", [["train"], ["--help"]])
def test_command_without_the_toolkit_names_the_extra(tmp_path, command):
    result = run_blocked(tmp_path, "-m", "olsmooth.cli", *command)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("olsmooth: error: "), result.stderr
    assert "pip install 'olsmooth[toolkit]'" in lines[0]
    assert result.stdout == ""


def test_toolkit_required_names_the_distribution_of_a_missing_submodule():
    with pytest.raises(ToolkitMissingError, match=r"needs scikit-learn.*olsmooth\[toolkit\]"):
        with toolkit_required():
            raise ModuleNotFoundError("No module named 'sklearn.datasets'", name="sklearn.datasets")


@pytest.mark.parametrize("name", ["no_such_package", "olsmooth.no_such_module", None])
def test_toolkit_required_lets_other_missing_modules_through(name):
    with pytest.raises(ModuleNotFoundError) as caught:
        with toolkit_required():
            raise ModuleNotFoundError("missing", name=name)
    assert not isinstance(caught.value, ToolkitMissingError)


def test_core_dependencies_are_light_and_the_toolkit_extra_holds_the_rest():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == ["numpy>=1.23", "torch>=2.1,<3"]
    toolkit = project["optional-dependencies"]["toolkit"]
    assert sorted(toolkit) == sorted([
        "torchvision>=0.16", "timm>=0.9", "pyyaml>=6", "tqdm>=4.60", "matplotlib>=3.6", "scikit-learn>=1.2",
        "tensorboard>=2.12", "safetensors>=0.4", "pillow>=9", "scipy>=1.9", "fonttools>=4.22",
    ])
    assert {requirement.partition(">")[0] for requirement in toolkit} == set(TOOLKIT_PACKAGES.values())
