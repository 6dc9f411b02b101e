"""PyTorch Lightning: a callback that drives the toolkit's losses through their `EpochLoss` hooks.

`EpochLossCallback` binds every EpochLoss of the LightningModule to the run before the first step, calls
`next_epoch()` once per training epoch, logs `epoch_metrics()`, and saves how many epochs it closed in the
checkpoint. The losses' own state (OLS's S, A and n) is part of the LightningModule's state_dict, so every Lightning
checkpoint holds it. Needs the `lightning` extra: pip install 'olsmooth[lightning]'.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as err:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("olsmooth.integrations.lightning needs Lightning: pip install 'olsmooth[lightning]'",
                              name=err.name) from err

from ..losses import EpochLoss, TrainingRun

__all__ = ["EpochLossCallback"]


class EpochLossCallback(pl.Callback):
    """Call `next_epoch()` of the LightningModule's losses once per training epoch, at its end.

    The losses are those given, or every EpochLoss submodule of the LightningModule. At the start of training each
    is bound to the run (`bind`: training samples, max_epochs, batches per epoch). An epoch is closed in
    `on_train_epoch_end`, after the module's validation of that epoch and before ModelCheckpoint's default save at
    the end of the training epoch. Where ModelCheckpoint saves at the end of validation instead (before the epoch
    is closed), a run resumed from that checkpoint closes the epoch when the next one starts, so it reaches the same
    S as the uninterrupted run. Per-epoch figures of a loss (`epoch_metrics()`) are logged as
    `loss_NAME`. Under DDP the losses sum their statistics over processes in `next_epoch()` themselves.

    What a loss asks of the loop beyond this stays the LightningModule's job: the sample index (`needs_index`:
    pass `index=`), batches of class pairs (`needs_class_pairs`) and a transition matrix (`needs_transition`).
    """

    def __init__(self, *losses: EpochLoss) -> None:
        self._given = losses
        self.epochs_closed = 0

    def losses(self, pl_module: pl.LightningModule) -> list[EpochLoss]:
        """The losses this callback drives."""
        return list(self._given) or [m for m in pl_module.modules() if isinstance(m, EpochLoss)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = TrainingRun(num_samples=len(trainer.train_dataloader.dataset), epochs=int(trainer.max_epochs),
                          steps_per_epoch=int(trainer.num_training_batches))
        for loss in self.losses(pl_module):
            loss.bind(run)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        behind = trainer.current_epoch - self.epochs_closed
        if behind == 1:  # resumed from a checkpoint written after the epoch's last step, before its end
            self._close(pl_module, log=False)
        elif behind:  # a checkpoint without this callback's state: take the losses as they were saved
            self.epochs_closed = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs_closed == trainer.current_epoch:
            self._close(pl_module, log=True)

    def _close(self, pl_module: pl.LightningModule, log: bool) -> None:
        metrics: dict[str, float] = {}
        for loss in self.losses(pl_module):
            loss.next_epoch()
            metrics.update({f"loss_{k}": v for k, v in loss.epoch_metrics().items()})
        if log and metrics:
            pl_module.log_dict(metrics)
        self.epochs_closed += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_closed": self.epochs_closed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs_closed = int(state_dict["epochs_closed"])
