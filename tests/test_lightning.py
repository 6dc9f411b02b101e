"""The Lightning integration: the method card's example runs, next_epoch at the right moment, the statistics in
Lightning checkpoints, resume from one, and two DDP processes on CPU (gloo) against one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the lightning extra is not installed: pip install 'olsmooth[lightning]'")

import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from olsmooth import OnlineLabelSmoothing  # noqa: E402
from olsmooth.integrations.lightning import EpochLossCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


def test_the_method_cards_lightning_example_runs(tmp_path, monkeypatch, capsys):
    card = (ROOT / "docs" / "methods" / "ols.md").read_text()
    section = card[card.index("### PyTorch Lightning"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "lightning_example"}
    exec(compile(code, "docs/methods/ols.md", "exec"), namespace)
    criterion = namespace["module"].criterion
    assert criterion.epoch == 3 and criterion.num_updates == 3
    torch.testing.assert_close(criterion.soft_labels.sum(dim=1), torch.ones(4))
    assert "tensor(" in capsys.readouterr().out


class Classifier(pl.LightningModule):
    """A linear model trained with OLS; the soft labels are recorded when each epoch is closed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(6, 3)
        self.criterion = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.criterion(self.model(x), y)  # in eval mode: counts nothing

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


def data() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=generator)
    y = (x[:, :3].argmax(dim=1) + (torch.rand(96, generator=generator) < 0.3).long()) % 3
    return DataLoader(TensorDataset(x, y), batch_size=16)


def reference_soft_labels(epochs: int) -> list[torch.Tensor]:
    """S after each epoch of the same training written as a plain loop: the oracle for the callback."""
    module = Classifier()
    optimizer = module.configure_optimizers()
    history = []
    for _ in range(epochs):
        for x, y in data():
            loss = module.criterion(module.model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        module.criterion.next_epoch()
        history.append(module.criterion.soft_labels.clone())
    return history


def test_next_epoch_comes_once_per_epoch_after_validation_and_equals_a_plain_loop(tmp_path):
    module = Classifier()
    trainer = pl.Trainer(max_epochs=3, callbacks=[EpochLossCallback()], default_root_dir=tmp_path,
                         enable_checkpointing=False, **QUIET)
    trainer.fit(module, data(), val_dataloaders=data())
    assert module.criterion.num_updates == 3
    torch.testing.assert_close(module.criterion.soft_labels, reference_soft_labels(3)[-1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("at_train_epoch_end", [True, False])
def test_a_run_resumed_from_a_lightning_checkpoint_reaches_the_same_soft_labels(tmp_path, at_train_epoch_end):
    """ModelCheckpoint saves after the epoch is closed (at the training epoch's end, its default) or before it (at
    the end of validation, which runs first): a run resumed from either reaches the uninterrupted run's S."""
    val = {"val_dataloaders": data()}

    def trainer(epochs: int, folder: str) -> pl.Trainer:
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / folder, save_last=True,
                                                  save_on_train_epoch_end=at_train_epoch_end)
        return pl.Trainer(max_epochs=epochs, callbacks=[EpochLossCallback(), checkpoint],
                          default_root_dir=tmp_path, **QUIET)

    whole = Classifier()
    trainer(3, "whole").fit(whole, data(), **val)
    trainer(1, "broken").fit(Classifier(), data(), **val)
    saved = torch.load(tmp_path / "broken" / "last.ckpt", weights_only=False)
    assert {"criterion.soft_labels", "criterion.accumulator", "criterion.counts"} <= set(saved["state_dict"])
    assert saved["state_dict"]["criterion.num_updates"] == (1 if at_train_epoch_end else 0)  # after / before closing
    resumed = Classifier()
    trainer(3, "resumed").fit(resumed, data(), ckpt_path=tmp_path / "broken" / "last.ckpt", **val)
    assert resumed.criterion.num_updates == whole.criterion.num_updates == 3
    assert torch.equal(resumed.criterion.soft_labels, whole.criterion.soft_labels)
    assert torch.equal(resumed.model.weight, whole.model.weight)


DDP_SCRIPT = """
import sys
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from olsmooth import OnlineLabelSmoothing
from olsmooth.integrations.lightning import EpochLossCallback

DEVICES, OUT = int(sys.argv[1]), sys.argv[2]


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(6, 3)
        self.criterion = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        # without shuffling, rank r takes the samples r, r + 2, ...: batch j of the two ranks together is batch j
        # of one process with twice the batch size, so both runs take the same optimisation steps
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(96, 6, generator=generator)
        y = (x[:, :3].argmax(dim=1) + (torch.rand(96, generator=generator) < 0.3).long()) % 3
        data = TensorDataset(x, y)
        sampler = DistributedSampler(data, self.trainer.world_size, self.global_rank, shuffle=False)
        return DataLoader(data, batch_size=32 // DEVICES, sampler=sampler)


module = Classifier()
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=DEVICES, strategy="ddp" if DEVICES > 1 else "auto",
                     use_distributed_sampler=False, callbacks=[EpochLossCallback()], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(module)
if trainer.global_rank == 0:
    torch.save({"S": module.criterion.soft_labels, "updates": module.criterion.num_updates}, OUT)
if torch.distributed.is_initialized():  # leave the group before exit, as a DDP script should
    torch.distributed.destroy_process_group()
"""


def test_two_ddp_processes_on_cpu_give_the_soft_labels_of_one(tmp_path):
    script = tmp_path / "ddp_ols.py"
    script.write_text(DDP_SCRIPT)
    path = [str(ROOT / "src"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))}
    results = []
    for devices in (1, 2):
        out = tmp_path / f"S-{devices}.pt"
        done = subprocess.run([sys.executable, str(script), str(devices), str(out)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(torch.load(out, weights_only=True))
    one, two = results
    assert one["updates"] == two["updates"] == 2
    assert one["S"].sum() > 0  # some classes were predicted correctly, so S is not all the fallback
    torch.testing.assert_close(two["S"], one["S"], rtol=1e-5, atol=1e-6)
