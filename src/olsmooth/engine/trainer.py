"""The training loop: data, model, loss, optimiser, AMP, EMA, DDP, the run folder and exact resume."""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from ..data import DatasetBundle, build_datasets
from ..errors import UserInputError
from ..losses import EpochLoss, build_loss
from ..models import accepts_in_chans, create_model
from .checkpoint import atomic_write, atomic_write_file, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import IDENTITY_KEYS, TrainConfig, build_config, read_yaml
from .defaults import IN_MEMORY, dataset_defaults
from .distributed import DistInfo, all_reduce_sum, barrier, setup
from .ema import ModelEma, unwrap
from .evaluate import autocast_context, eval_loader, evaluate
from .optim import build_optimizer, build_scheduler

Log = Callable[[str], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Seed of one epoch on one process: a resumed run replays the same shuffles and augmentations."""
    return (cfg.seed * 1_000_003 + epoch * 7919 + rank) % 2**63


def fill_defaults(cfg: TrainConfig) -> TrainConfig:
    """Fill the per-dataset defaults (model, epochs, batch size, lr, weight decay) the user left unset."""
    for key, value in dataset_defaults(cfg.dataset).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.workers is None:
        cfg.workers = 0 if cfg.dataset in IN_MEMORY else min(8, torch.multiprocessing.cpu_count())
    if cfg.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.out = str(Path("runs") / f"{stamp}-{cfg.dataset}-{cfg.method}")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise UserInputError(f"--amp must be none, bf16 or fp16, got {cfg.amp!r}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserInputError("epochs and batch size must be positive")
    return cfg


@dataclass
class RunState:
    """What changes from epoch to epoch and is saved for resuming."""

    epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def prepare_run_folder(out: Path, force: bool) -> None:
    """Create the run folder; an existing non-empty one is kept unless --force says to replace it."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserInputError(f"run folder {out} already exists; use --force to replace it or --resume to continue")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def load_resume(run_dir: Path, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The saved configuration (with harmless overrides such as --epochs) and the last checkpoint of a run."""
    if not (run_dir / "config.yaml").is_file():
        raise UserInputError(f"cannot resume: {run_dir / 'config.yaml'} not found")
    saved = read_yaml(run_dir / "config.yaml")
    changed = [k for k in IDENTITY_KEYS if k in overrides and overrides[k] != saved.get(k)]
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {overrides[k]!r}" for k in changed)
        raise UserInputError(f"cannot resume {run_dir} with a different experiment ({what})")
    cfg = build_config(saved, {k: v for k, v in overrides.items() if k not in ("out", "force")})
    cfg.out = str(run_dir)
    return cfg, load_checkpoint(run_dir / "last.pt")


class Trainer:
    """Trains one configuration into one run folder; `fit()` returns the summary of the run.

    Every epoch reseeds all generators from (seed, epoch, rank), so a run resumed from `last.pt` replays the
    same shuffles, augmentations and dropout masks as the uninterrupted run.
    """

    def __init__(self, cfg: TrainConfig, checkpoint: dict[str, Any] | None = None, log: Log = print) -> None:
        """`checkpoint` (from `load_resume`) continues a run in cfg.out instead of starting a new one."""
        self.dist: DistInfo = setup(cfg.device)
        self.log = log if self.dist.is_main else (lambda _msg: None)
        self.cfg = fill_defaults(cfg)
        self.out = Path(self.cfg.out)
        seed_everything(self.cfg.seed)
        self.bundle = self._build_data()
        self.model = self._build_model()
        self.criterion: EpochLoss = build_loss(self.cfg.method, self.bundle.num_classes, **self.cfg.loss_kwargs())
        self.criterion.to(self.dist.device)
        self.train_loader = self._train_loader()
        self.test_loader = eval_loader(self.bundle.test, self.cfg.batch_size * 2, self.cfg.workers, self.dist)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.cfg.amp == "fp16")
        self.ema = ModelEma(self.model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        self.state = RunState()
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.dist.is_main:
            prepare_run_folder(self.out, self.cfg.force)
        barrier()
        self.train_model = self._wrap(self.model)
        self.writer = self._tensorboard()
        if self.dist.is_main:
            atomic_write(self.out / "config.yaml",
                         lambda tmp: Path(tmp).write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)))

    # -- construction ----------------------------------------------------------------------------------------
    def _build_data(self) -> DatasetBundle:
        channels = None if accepts_in_chans(self.cfg.model) else 3
        bundle = build_datasets(self.cfg.dataset, data_root=self.cfg.data_root, split=self.cfg.split,
                                image_size=self.cfg.image_size, channels=channels, download=self.cfg.download)
        if self.cfg.train_subset is not None:
            if self.cfg.train_subset < 1:
                raise UserInputError(f"--train-subset must be positive, got {self.cfg.train_subset}")
            bundle.train = Subset(bundle.train, range(min(self.cfg.train_subset, len(bundle.train))))
        return bundle

    def _build_model(self) -> nn.Module:
        model = create_model(self.cfg.model, num_classes=self.bundle.num_classes, in_chans=self.bundle.channels,
                             pretrained=self.cfg.pretrained)
        report = getattr(model, "pretrained_report", None)
        if report is not None:
            self.log(f"pretrained weights {self.cfg.pretrained}: {report.summary()}")
        if self.cfg.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.dist.device)
        if self.cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.dist.enabled:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return torch.compile(model) if self.cfg.compile else model

    def _train_loader(self) -> DataLoader:
        data = self.bundle.train
        if self.dist.enabled:
            self.sampler = DistributedSampler(data, self.dist.world_size, self.dist.rank, shuffle=True,
                                              seed=self.cfg.seed)
            per_rank = len(self.sampler)
        else:
            self.generator = torch.Generator()
            self.sampler = RandomSampler(data, generator=self.generator)
            per_rank = len(data)
        # a last batch of one sample would break batch norm in training mode
        drop_last = per_rank % self.cfg.batch_size == 1 and per_rank > 1
        return DataLoader(data, batch_size=self.cfg.batch_size, sampler=self.sampler, num_workers=self.cfg.workers,
                          pin_memory=self.dist.device.type == "cuda", drop_last=drop_last)

    def _tensorboard(self) -> Any:
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.state.epoch + 1)

    def _mixer(self) -> Callable | None:
        if not (self.cfg.mixup or self.cfg.cutmix):
            return None
        from torchvision.transforms import v2
        K = self.bundle.num_classes
        choices = ([v2.MixUp(alpha=self.cfg.mixup, num_classes=K)] if self.cfg.mixup else []) + \
                  ([v2.CutMix(alpha=self.cfg.cutmix, num_classes=K)] if self.cfg.cutmix else [])
        return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _payload(self, full: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "epoch": self.state.epoch,
            "config": self.cfg.to_dict(),
            "num_classes": self.bundle.num_classes,
            "channels": self.bundle.channels,
            "class_names": list(self.bundle.class_names),
            "metrics": self.state.history[-1] if self.state.history else {},
        }
        if full:
            payload.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                           scaler=self.scaler.state_dict(), loss=self.criterion.state_dict(), rng=rng_state(),
                           best_top1=self.state.best_top1, best_epoch=self.state.best_epoch,
                           history=self.state.history)
        return payload

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            unwrap(self.model).load_state_dict(ckpt["model"])
            if self.ema and ckpt.get("ema") is not None:
                self.ema.module.load_state_dict(ckpt["ema"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.criterion.load_state_dict(ckpt["loss"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UserInputError(f"checkpoint does not match this run: {str(err).splitlines()[0][:200]}") from None
        set_rng_state(ckpt["rng"])
        self.state = RunState(ckpt["epoch"], ckpt["best_top1"], ckpt["best_epoch"], list(ckpt["history"]))
        self.log(f"resuming {self.out} after epoch {self.state.epoch}")

    def _save(self, metrics: dict[str, Any]) -> None:
        """last.pt, then best.pt / snapshots, then metrics.jsonl: the log never runs ahead of last.pt."""
        epoch = self.state.epoch
        save_checkpoint(self.out / "last.pt", self._payload(full=True))
        if self.state.best_epoch == epoch:
            save_checkpoint(self.out / "best.pt", self._payload(full=False))
        if self.cfg.save_every and epoch % self.cfg.save_every == 0:
            save_checkpoint(self.out / f"epoch-{epoch:03d}.pt", self._payload(full=False))
        lines = "".join(json.dumps(row) + "\n" for row in self.state.history)
        atomic_write(self.out / "metrics.jsonl", lambda tmp: Path(tmp).write_text(lines))
        self._log_tensorboard(metrics)
        self._save_soft_labels()

    def _log_tensorboard(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, self.state.epoch)
        self.writer.flush()

    def _save_soft_labels(self) -> None:
        """Save the OLS matrix (.npy and heatmap) every epoch for K <= 200, else at snapshots and at the end."""
        matrix = getattr(self.criterion, "soft_labels", None)
        if matrix is None:
            return
        epoch, K = self.state.epoch, self.bundle.num_classes
        snapshot = self.cfg.save_every and epoch % self.cfg.save_every == 0
        if not (K <= 200 or snapshot or epoch == self.cfg.epochs):
            return
        from ..analysis import plot_soft_labels
        folder = self.out / "soft_labels"
        folder.mkdir(exist_ok=True)
        array = matrix.detach().cpu().numpy()
        atomic_write_file(folder / f"epoch-{epoch:03d}.npy", lambda handle: np.save(handle, array))
        names = self.bundle.class_names if K <= 30 else None
        plot_soft_labels(array, class_names=names, path=folder / f"epoch-{epoch:03d}.png",
                         title=f"OLS soft labels after epoch {epoch}")
        if K <= 200:
            image = torch.from_numpy(array / max(float(array.max()), 1e-12)).unsqueeze(0)
            self.writer.add_image("soft_labels", image, epoch)

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, evaluating and checkpointing after each; return the summary."""
        try:
            for epoch in range(self.state.epoch, self.cfg.epochs):
                self._run_epoch(epoch)
        finally:
            if self.writer is not None:
                self.writer.close()
        summary = self.summary()
        self.log(self.format_summary(summary))
        return summary

    def _run_epoch(self, epoch: int) -> None:
        seed_everything(epoch_seed(self.cfg, epoch, self.dist.rank))
        if self.dist.enabled:
            self.sampler.set_epoch(epoch)
        else:
            self.generator.manual_seed(epoch_seed(self.cfg, epoch, 0))
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        train = self._train_epoch(epoch)
        self.criterion.next_epoch()
        seconds = time.perf_counter() - start
        result = evaluate([self.model], self.test_loader, self.dist, self.cfg.amp, self.cfg.channels_last)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train["loss"], "train_top1": train["top1"],
                                   **result.metrics, "lr": lr, "images_per_s": train["images"] / seconds,
                                   "epoch_time_s": seconds}
        if self.ema is not None:
            ema = evaluate([self.ema.module], self.test_loader, self.dist, self.cfg.amp, self.cfg.channels_last)
            metrics.update({f"ema_{k}": v for k, v in ema.metrics.items()})
        self.state.epoch = epoch + 1
        self.state.history.append(metrics)
        if metrics["top1"] > self.state.best_top1:
            self.state.best_top1, self.state.best_epoch = metrics["top1"], epoch + 1
        if self.dist.is_main:
            self._save(metrics)
        barrier()
        self.log(self.format_epoch(metrics))

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.train_model.train()
        self.criterion.train()
        mixer = self._mixer()
        dev = self.dist.device
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss * n, correct: summed on the device
        count = 0
        bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not (self.dist.is_main and sys.stderr.isatty()), unit="batch")
        tick, seen_since = time.perf_counter(), 0
        for step, (images, labels) in enumerate(self.train_loader):
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            target = labels
            if mixer is not None:
                images, target = mixer(images, labels)
            if self.cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(dev, self.cfg.amp):
                logits = self.train_model(images)
            loss = self.criterion(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            with torch.no_grad():
                hard = target.argmax(dim=1) if target.dim() == 2 else target
                n = labels.size(0)
                sums[0] += loss.detach() * n
                sums[1] += (logits.argmax(1) == hard).sum()
            count += n
            seen_since += n
            if not bar.disable and (step % 10 == 0 or step + 1 == len(self.train_loader)):
                now = time.perf_counter()
                bar.set_postfix(loss=f"{sums[0].item() / count:.4f}", acc=f"{100 * sums[1].item() / count:.1f}%",
                                img_s=f"{seen_since / max(now - tick, 1e-9):.0f}")
                tick, seen_since = now, 0
            bar.update(1)
        bar.close()
        totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=dev)])
        loss_sum, correct, count = all_reduce_sum(totals).tolist()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss became non-finite in epoch {epoch + 1}")
        return {"loss": loss_sum / count, "top1": 100.0 * correct / count, "images": count / self.dist.world_size}

    # -- reporting -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Final and best figures of the run, with the recipe's published figure when it has one."""
        last = self.state.history[-1] if self.state.history else {}
        summary = {"run": str(self.out), "epochs": self.state.epoch, "best_top1": self.state.best_top1,
                   "best_epoch": self.state.best_epoch,
                   **{f"final_{k}": last.get(k) for k in ("top1", "top5", "nll", "ece")}}
        if self.cfg.expected_top1_error is not None:
            summary["expected_top1_error"] = self.cfg.expected_top1_error
            summary["measured_top1_error"] = 100.0 - self.state.best_top1
        return summary

    @staticmethod
    def format_epoch(m: dict[str, Any]) -> str:
        text = (f"epoch {m['epoch']:>3}  loss {m['train_loss']:.4f}  train {m['train_top1']:5.1f}%  "
                f"top1 {m['top1']:5.2f}%  top5 {m['top5']:5.2f}%  nll {m['nll']:.4f}  ece {m['ece']:5.2f}%  "
                f"lr {m['lr']:.4g}  {m['images_per_s']:.0f} img/s  {m['epoch_time_s']:.1f}s")
        if "ema_top1" in m:
            text += f"  ema top1 {m['ema_top1']:5.2f}%"
        return text

    def format_summary(self, s: dict[str, Any]) -> str:
        rows = [("run folder", s["run"]), ("epochs", str(s["epochs"])),
                ("best top-1", f"{s['best_top1']:.2f}% (epoch {s['best_epoch']})")]
        if s["final_top1"] is not None:
            rows += [("final top-1 / top-5", f"{s['final_top1']:.2f}% / {s['final_top5']:.2f}%"),
                     ("final NLL / ECE", f"{s['final_nll']:.4f} / {s['final_ece']:.2f}%")]
        if "expected_top1_error" in s:
            ref = f" ({self.cfg.reference})" if self.cfg.reference else ""
            rows.append(("top-1 error", f"{s['measured_top1_error']:.2f}% measured vs "
                                        f"{s['expected_top1_error']:.2f}% published{ref}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(["summary"] + [f"  {k.ljust(width)}  {v}" for k, v in rows])
