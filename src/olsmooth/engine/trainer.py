"""The training loop: `fit()` trains a resolved configuration into its run folder, epoch by epoch.

Public seams for benchmarks, tests and the study runner: `Trainer(cfg)` builds everything (and fails before any
file is touched when the input is bad), `train_one_epoch()` and `evaluate()` run one pass, `fit()` runs the whole
schedule with checkpoints; `load_resume()` continues a run from its last.pt. Files are the run folder's business
(`olsmooth.runs`).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from ..analysis.metrics import EVALUATION_KEYS
from ..analysis.plots import plot_memorisation
from ..analysis.soft_labels import epoch_soft_labels
from ..data import (
    DatasetBundle,
    Relabelled,
    WithIndex,
    build_datasets,
    dataset_labels,
    stratified_subset,
    training_subset,
)
from ..data.samplers import ClassPairBatchSampler
from ..errors import UserInputError
from ..losses import EpochLoss, LossInputError, TrainingRun, build_loss
from ..losses.correction import estimate_transition, read_transition
from ..models import accepts_in_chans, model_source
from ..noise_transition import DENSE_MAX_CLASSES, dense_from_record
from ..option_roles import RESUME_MAY_CHANGE, SET_BY_RESUME
from ..runs.checkpoints import EVAL_KEYS, load_checkpoint
from ..runs.layout import BEST, CONFIG, ESTIMATE, LAST, NOISE, SUMMARY
from ..runs.writer import RunFolder
from .checkpoint import RESUME_KEYS, rng_state, set_rng_state
from .config import TrainConfig, build_config, read_yaml
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_state, broadcast_tensor, setup
from .ema import ModelEma, unwrap
from .evaluate import autocast_context, eval_loader, evaluate, predict_probs
from .inference import build_model, model_from_checkpoint
from .label_noise import TrainingNoise, fit_on_corrupted
from .optim import build_optimizer, build_scheduler
from .progress import Progress
from .resolve import resolve, small_input_note, upgrade_stored_config, upgrade_subset_draw

Log = Callable[[str], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Seed of one epoch on one process: a resumed run replays the same shuffles and augmentations."""
    return (cfg.seed * 1_000_003 + epoch * 7919 + rank) % 2**63


def load_resume(run_dir: str | Path, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration stored in a run's last.pt (the truth), with the few allowed overrides, and last.pt.

    config.yaml must agree with last.pt; options outside `option_roles.RESUME_MAY_CHANGE` must not differ from the
    stored ones; epochs may only grow. Every refusal names the differing values.
    """
    run_dir = Path(run_dir)
    path = RunFolder(run_dir).check_resumable()
    ckpt = load_checkpoint(path, EVAL_KEYS + RESUME_KEYS)
    indices_saved = "data_indices" in ckpt  # absent from the last.pt of versions before the seeded draw
    stored = upgrade_subset_draw(upgrade_stored_config(ckpt["config"]), indices_saved)
    if (run_dir / CONFIG).exists():
        on_disk = upgrade_subset_draw(read_yaml(run_dir / CONFIG), indices_saved)
        free = (*RESUME_MAY_CHANGE, *SET_BY_RESUME)  # rewritten with the resumed run's values at its start
        differ = sorted(k for k in (set(stored) | set(on_disk)) - set(free) if on_disk.get(k) != stored.get(k))
        if differ:
            what = ", ".join(f"{k}: {on_disk.get(k)!r} in {CONFIG}, {stored.get(k)!r} in {LAST}" for k in differ)
            raise UserInputError(f"cannot resume {run_dir}: {CONFIG} disagrees with {LAST} ({what}); "
                                 f"restore {CONFIG} or delete it to use {LAST}'s")
    place = {"out": str(run_dir), "force": False}
    saved = build_config(stored, place)
    cfg = build_config(stored, {**overrides, **place})  # checked like any configuration; aliases resolved
    before, after = saved.to_dict(), cfg.to_dict()
    changed = [k for k in after if after[k] != before[k]]
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if refused:
        what = ", ".join(f"{k} {before[k]!r} -> {after[k]!r}" for k in refused)
        raise UserInputError(f"cannot resume {run_dir} with a different experiment ({what}); only "
                             f"{', '.join(RESUME_MAY_CHANGE)} may change")
    if "epochs" in changed and cfg.epochs < max(saved.epochs, ckpt["epoch"]):
        raise UserInputError(f"cannot resume {run_dir} with --epochs {cfg.epochs}: the run has {saved.epochs} "
                             f"epochs (they may only grow)")
    return cfg, ckpt


@dataclass
class RunState:
    """What changes from epoch to epoch and is saved for resuming."""

    epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains one configuration into one run folder; `fit()` returns the summary of the run.

    Everything is built (and all input checked) in the constructor, before the run folder is touched. Every
    epoch reseeds all generators from (seed, epoch, rank), so a run resumed from `last.pt` replays the same
    shuffles, augmentations and dropout masks as the uninterrupted run.
    """

    def __init__(self, cfg: TrainConfig, checkpoint: dict[str, Any] | None = None, log: Log = print) -> None:
        """`checkpoint` (from `load_resume`) continues the run in cfg.out instead of starting a new one."""
        self.cfg = resolve(cfg)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.dist: DistInfo = setup(self.cfg.device, self.cfg.dist_timeout)
        self.log = log if self.dist.is_main else (lambda _msg: None)
        self.out = Path(self.cfg.out)
        self.run = RunFolder(self.out, active=self.dist.is_main)
        self.resuming = checkpoint is not None
        if not self.resuming:
            self.run.check_new(self.cfg.force)
        seed_everything(self.cfg.seed)
        self.bundle, self.val_set, self.indices = self._build_data(checkpoint)
        self.noise = self._corrupt_labels(checkpoint)
        self.corrupted_loader = self._corrupted_loader() if self.noise is not None else None
        self.model = self._build_model(pretrained=None if self.resuming else self.cfg.pretrained)
        self.criterion: EpochLoss = build_loss(self.cfg.method, self.bundle.num_classes, **self.cfg.loss_kwargs())
        self.criterion.to(self.dist.device)
        if self.criterion.needs_transition and not self.resuming:
            self._set_given_transition()
        self.sampler, self.train_loader = self._train_loader()
        self.test_loader = eval_loader(self.bundle.test, self.cfg.batch_size * 2, self.cfg.workers, self.dist)
        self.val_loader = (eval_loader(self.val_set, self.cfg.batch_size * 2, self.cfg.workers, self.dist)
                           if self.val_set is not None else None)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, len(self.train_loader))
        self.criterion.bind(TrainingRun(num_samples=len(self.bundle.train), epochs=self.cfg.epochs,
                                        steps_per_epoch=len(self.train_loader)))
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.cfg.amp == "fp16")
        self.ema = ModelEma(self.model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        self.state = RunState()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.train_model = self._wrap(self.model)

    # -- the run ---------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, evaluating and checkpointing after each; write and return the summary."""
        self.run.open(resume=self.resuming, force=self.cfg.force, saved=self.state.epoch)
        failed = True
        try:
            self.run.write_config(self.cfg.to_dict(), resumed=self.resuming)
            if self.resuming:
                self.log(f"resuming {self.out} after epoch {self.state.epoch}")
                self.run.write_metrics(self.state.history)  # a kill may have come between last.pt and this file
            else:
                for name, indices in self.indices.items():
                    self.run.write_indices(name, indices)
                if self.noise is not None:
                    self.run.write_noise(self.noise.clean, self.noise.noisy, self.noise.description)
            if self.criterion.needs_transition and self.criterion.transition_matrix is None:
                self._set_estimated_transition()
            if self.criterion.needs_transition and not self.resuming:
                self.run.write_transition(self.criterion.transition_matrix.cpu().numpy(),
                                          self.criterion.transition_source)
            for epoch in range(self.state.epoch, self.cfg.epochs):
                self.run_epoch(epoch)
            if self.corrupted_loader is not None:
                self.run.write_memorisation(functools.partial(plot_memorisation, self.state.history))
            summary = self.summary()
            self.run.write_summary(summary)
            failed = False
        finally:
            self.run.close(failed=failed)
        self.log(self.format_summary(summary))
        return summary

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch `epoch` (0-based), evaluate, update the best epoch and save; return its metrics row."""
        self.start_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        train = self.train_one_epoch()
        self.criterion.next_epoch()
        trained = time.perf_counter()
        prefix = "val_" if self.val_loader is not None else ""
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train["loss"], "train_top1": train["top1"],
                                   **{f"loss_{k}": v for k, v in self.criterion.epoch_metrics().items()},
                                   **{prefix + k: v for k, v in self.evaluate().items()}}
        if self.ema is not None:
            metrics.update({f"ema_{prefix}{k}": v for k, v in self.evaluate(ema=True).items()})
        if self.corrupted_loader is not None:
            metrics.update(self.memorisation())
        evaluated = time.perf_counter()
        metrics.update(lr=lr, images_per_s=train["images"] / (trained - start), epoch_time_s=trained - start,
                       eval_time_s=evaluated - trained)
        self.state.epoch = epoch + 1
        self.state.history.append(metrics)
        is_best = metrics[prefix + "top1"] > self.state.best_top1
        if is_best:
            self.state.best_top1, self.state.best_epoch = metrics[prefix + "top1"], epoch + 1
        self._save(is_best)
        barrier()
        self.log(self.format_epoch(metrics, saved_s=time.perf_counter() - evaluated))
        return metrics

    def start_epoch(self, epoch: int) -> None:
        """Reseed every generator for `epoch`, so the epoch is the same whether or not the run was resumed."""
        seed_everything(epoch_seed(self.cfg, epoch, self.dist.rank))
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        else:
            self.sampler.generator.manual_seed(epoch_seed(self.cfg, epoch, 0))

    def train_one_epoch(self, loader: Iterable | None = None) -> dict[str, float]:
        """One pass over `loader` (the training loader by default): returns mean loss, top-1 (%) and images.

        A non-finite loss or logits (a diverging run) is a one-line error naming the epoch.
        """
        loader = self.train_loader if loader is None else loader
        epoch, total = self.state.epoch + 1, len(loader)
        self.train_model.train()
        self.criterion.train()
        mixer = self._mixer()
        dev = self.dist.device
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss * n, correct: summed on the device
        count = 0
        progress = Progress(total, f"epoch {epoch}/{self.cfg.epochs}", enabled=self.dist.is_main, log=self.log)
        tick, seen_since = time.perf_counter(), 0
        for step, (images, labels, *index) in enumerate(loader):
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            extra = {"index": index[0].to(dev, non_blocking=True)} if self.needs_index else {}
            target = labels
            if mixer is not None:
                images, target = mixer(images, labels)
            if self.cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(dev, self.cfg.amp):
                logits = self.train_model(images)
            try:
                loss = self.criterion(logits, target, **extra)
            except LossInputError as err:  # the data or the settings, not a bug: other errors keep their traceback
                raise UserInputError(f"epoch {epoch}, step {step + 1}: {err}") from None
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
            if progress.due():
                now = time.perf_counter()
                progress.show({"loss": f"{sums[0].item() / count:.4f}", "acc": f"{100 * sums[1].item() / count:.1f}%",
                               "img/s": f"{seen_since / max(now - tick, 1e-9):.0f}"})
                tick, seen_since = now, 0
            progress.update()
        progress.close()
        totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=dev)])
        loss_sum, correct, count = all_reduce_sum(totals).tolist()
        if not math.isfinite(loss_sum):
            raise UserInputError(f"the training loss became non-finite in epoch {epoch} "
                                 f"(lower --lr, or set --clip-grad)")
        return {"loss": loss_sum / count, "top1": 100.0 * correct / count, "images": count / self.dist.world_size}

    def evaluate(self, loader: DataLoader | None = None, ema: bool = False) -> dict[str, float]:
        """top1, top5, nll, ece of the model (or its EMA) on `loader`: the validation split when the run has one,
        else the test split. Under torchrun every rank first takes rank 0's buffers (batch-norm statistics), so
        the evaluated model is the one saved."""
        model = self.ema.module if ema else self.model
        broadcast_state(model, buffers_only=True)
        if loader is None:
            loader = self.val_loader if self.val_loader is not None else self.test_loader
        return evaluate([model], loader, self.dist, self.cfg.amp, self.cfg.channels_last).metrics

    # -- construction ----------------------------------------------------------------------------------------
    def _build_data(self, checkpoint: dict[str, Any] | None
                    ) -> tuple[DatasetBundle, Dataset | None, dict[str, np.ndarray]]:
        """The datasets, the training split cut down to --train-subset and less the --val-fraction hold-out
        (returned second, with evaluation transforms), and the indices that define both.

        The hold-out is seeded and stratified; the subset is drawn from the rest as --train-subset-draw says
        (seeded and stratified, or the first N in the dataset's order). A resumed run reuses the indices saved in
        its checkpoint.
        """
        bundle = self._datasets(self.cfg.augment)
        saved = (checkpoint or {}).get("data_indices")
        indices = ({k: v.numpy() for k, v in saved.items()} if saved is not None
                   else self._draw_indices(bundle.train))
        val = Subset(self._plain_train, indices["val"].tolist()) if "val" in indices else None
        if "train" in indices:
            bundle.train = Subset(bundle.train, indices["train"].tolist())
        return bundle, val, indices

    def _datasets(self, augment: str) -> DatasetBundle:
        """The run's datasets with training augmentation `augment` ("none": evaluation transforms throughout)."""
        cfg = self.cfg
        return build_datasets(cfg.dataset, data_root=cfg.data_root, split=cfg.split, image_size=cfg.image_size,
                              channels=None if accepts_in_chans(cfg.model) else 3, download=cfg.download,
                              augment=augment, input_norm=cfg.input_norm)

    @functools.cached_property
    def _plain_train(self) -> Dataset:
        """The dataset's whole training split with evaluation transforms, built once for the validation split,
        the memorisation view and the transition estimate."""
        return self._datasets("none").train

    def plain_training_set(self) -> Dataset:
        """The training set (after --train-subset and the validation split) with evaluation transforms, for a pass
        that must see the training images unaugmented (the transition estimate, recomputing batch-norm statistics)."""
        return self._plain_training_samples(np.arange(len(self.bundle.train)))

    def _plain_training_samples(self, positions: np.ndarray) -> Dataset:
        """Samples of the training set (after --train-subset), given by position, with evaluation transforms."""
        indices = self.indices["train"][positions] if "train" in self.indices else positions
        return Subset(self._plain_train, indices.tolist())

    def _corrupt_labels(self, checkpoint: dict[str, Any] | None) -> TrainingNoise | None:
        """With --noise, replace the training labels (after the subset and validation split; evaluation labels
        stay clean) by noisy ones drawn from --noise-seed; a resumed run reads the labels saved in last.pt."""
        if not self.cfg.noise:
            return None
        saved = (checkpoint or {}).get("noise")
        if saved is not None:
            noise = TrainingNoise.from_payload(saved)
        else:
            noise = TrainingNoise.draw(self.cfg, self.bundle.train, self.bundle.num_classes)
            self.log(f"label noise {self.cfg.noise}: {100 * noise.description['rate_realised']:.2f}% of "
                     f"{len(noise.clean)} training labels changed")
        self.bundle.train = Relabelled(self.bundle.train, noise.noisy)
        return noise

    def _set_given_transition(self) -> None:
        """The transition matrix of a loss-corrected loss from "known" (the realised matrix of --noise) or a file;
        "estimate" is left to `fit()`, which trains the cross-entropy model it needs. Every source gives a dense K x K
        matrix, so K above DENSE_MAX_CLASSES is refused here, before anything of K x K is built."""
        source = self.criterion.transition_source
        K = self.bundle.num_classes
        if K > DENSE_MAX_CLASSES:
            raise UserInputError(f"method {self.cfg.method} multiplies by a dense K x K transition matrix: "
                                 f"{K:,} classes is over its limit of {DENSE_MAX_CLASSES:,}")
        if source == "estimate":
            return
        if source == "known":
            if self.noise is None:
                raise UserInputError(f"method {self.cfg.method} with transition=known needs --noise (the matrix is "
                                     f"the realised one of the run's label noise); give a file or transition=estimate")
            matrix = torch.tensor(dense_from_record(self.noise.description, NOISE), dtype=torch.float32)
        else:
            matrix = read_transition(source, K)
        try:
            self.criterion.set_transition(matrix)
        except ValueError as err:
            raise UserInputError(f"transition matrix {source}: {err}") from None

    def _set_estimated_transition(self) -> None:
        """Patrini et al.'s two-stage estimate: train this configuration with cross-entropy into the run folder's
        `transition-estimate/` (resumed or reused when it is there), then the anchor-point estimator on that
        model's softmax over the training samples gives the matrix (computed by rank 0, shared with all ranks)."""
        folder = self.run.work / ESTIMATE
        if not (folder / SUMMARY).exists():
            if (folder / LAST).exists():
                stage, checkpoint = load_resume(folder, {})
            else:
                same = {k: v for k, v in self.cfg.to_dict().items() if k != "loss_options"}
                stage = build_config(same, {"method": "ce", "out": str(folder), "force": True, "save_every": 0})
                checkpoint = None
            self.log(f"estimating the transition matrix: training {stage.model} with cross-entropy in {folder}")
            Trainer(stage, checkpoint, log=lambda line: self.log(f"  [estimate] {line}")).fit()
        matrix = torch.zeros(self.bundle.num_classes, self.bundle.num_classes, device=self.dist.device)
        if self.dist.is_main:
            model = model_from_checkpoint(load_checkpoint(folder / LAST)).to(self.dist.device)
            plain = DataLoader(self.plain_training_set(), batch_size=self.cfg.batch_size * 2)
            probs = predict_probs(model, plain, self.dist.device, self.cfg.amp)
            matrix = estimate_transition(probs, self.criterion.estimate_percentile).to(self.dist.device)
        broadcast_tensor(matrix)
        self.criterion.set_transition(matrix.cpu())

    def _corrupted_loader(self) -> DataLoader:
        """The training samples whose label the noise changed, with evaluation transforms; each batch's labels
        encode clean * K + noisy (both are needed per sample, and the loader yields one label)."""
        data = Relabelled(self._plain_training_samples(self.noise.changed), self.noise.codes(self.bundle.num_classes))
        return eval_loader(data, self.cfg.batch_size * 2, self.cfg.workers, self.dist)

    def memorisation(self) -> dict[str, float]:
        """How the model predicts the training samples with a corrupted label (`fit_on_corrupted`), and for OLS
        the soft labels' mass on the noise's source classes (`TrainingNoise.soft_label_mass`)."""
        broadcast_state(self.model, buffers_only=True)
        result = fit_on_corrupted(self.model, self.corrupted_loader, self.bundle.num_classes, self.dist,
                                  self.cfg.amp, self.cfg.channels_last)
        soft = self.criterion.epoch_matrices().get("soft_labels")
        return result if soft is None else {**result, **self.noise.soft_label_mass(soft)}

    def _draw_indices(self, train: Dataset) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if not cfg.val_fraction and cfg.train_subset is None:
            return {}
        labels = dataset_labels(train)
        indices: dict[str, np.ndarray] = {}
        pool = np.arange(len(labels))
        if cfg.val_fraction:
            size = round(cfg.val_fraction * len(pool))
            if not 1 <= size < len(pool):
                raise UserInputError(f"--val-fraction {cfg.val_fraction} leaves no validation or no training "
                                     f"samples of {len(pool)}")
            indices["val"] = stratified_subset(labels, size, cfg.seed)
            pool = np.setdiff1d(pool, indices["val"])
        if cfg.train_subset is not None and cfg.train_subset < len(pool):
            indices["train"] = pool[training_subset(labels[pool], cfg.train_subset, cfg.seed, cfg.train_subset_draw)]
        elif cfg.val_fraction:
            indices["train"] = pool
        return indices

    def _build_model(self, pretrained: str | None) -> nn.Module:
        model = build_model(self.cfg.model, self.cfg.model_options, self.bundle.num_classes, self.bundle.channels,
                            pretrained=pretrained)
        report = getattr(model, "pretrained_report", None)
        if report is not None:
            self.log(f"pretrained weights {pretrained}: {report.summary()}")
            small = model_source(self.cfg.model) != "olsmooth" and small_input_note(self.bundle.image_size)
            if small and self.dist.is_main:  # torchvision and timm networks are ImageNet architectures
                logging.getLogger("olsmooth").warning("olsmooth: warning: %s", small)
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

    @property
    def needs_index(self) -> bool:
        """Whether the loss keeps per-sample state: then batches carry each sample's index in the training set."""
        return self.criterion.needs_index

    def _train_loader(self) -> tuple[DistributedSampler | RandomSampler | ClassPairBatchSampler, DataLoader]:
        data = WithIndex(self.bundle.train) if self.needs_index else self.bundle.train
        workers, pin = self.cfg.workers, self.dist.device.type == "cuda"
        if self.criterion.needs_class_pairs:  # batches of same-class pairs; batch_size counts the first halves
            pairs = ClassPairBatchSampler(dataset_labels(self.bundle.train), self.cfg.batch_size,
                                          num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          generator=torch.Generator())
            return pairs, DataLoader(data, batch_sampler=pairs, num_workers=workers, pin_memory=pin)
        sampler: DistributedSampler | RandomSampler
        if self.dist.enabled:
            sampler = DistributedSampler(data, self.dist.world_size, self.dist.rank, shuffle=True, seed=self.cfg.seed)
        else:
            sampler = RandomSampler(data, generator=torch.Generator())
        per_rank = len(sampler)
        # a last batch of one sample would break batch norm in training mode
        drop_last = per_rank % self.cfg.batch_size == 1 and per_rank > 1
        return sampler, DataLoader(data, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
                                   pin_memory=pin, drop_last=drop_last)

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
                           history=self.state.history,
                           data_indices={k: torch.from_numpy(v) for k, v in self.indices.items()})
            if self.noise is not None:
                payload["noise"] = self.noise.payload()
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
            set_rng_state(ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            lines = str(err).strip().splitlines() or [type(err).__name__]
            raise UserInputError(f"checkpoint does not match this run: {lines[0][:200]}") from None
        # the lr of the step reached, on this run's schedule: the saved one, or a longer one when --epochs grew
        step = self.scheduler.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)
        self.state = RunState(ckpt["epoch"], ckpt["best_top1"], ckpt["best_epoch"], list(ckpt["history"]))

    def _save(self, is_best: bool) -> None:
        epoch = self.state.epoch
        snapshot = bool(self.cfg.save_every) and epoch % self.cfg.save_every == 0
        soft = self.criterion.epoch_matrices().get("soft_labels")  # a matrix, or top-k OLS's sparse rows
        files = None
        if soft is not None and self.run.active:
            matrix = tuple(t.cpu().numpy() for t in soft) if isinstance(soft, tuple) else soft.detach().cpu().numpy()
            files = epoch_soft_labels(matrix, self.bundle.class_names, epoch, keep=snapshot or epoch == self.cfg.epochs)
        self.run.save_epoch(epoch, last=self._payload(full=True), light=self._payload(full=False),
                            history=self.state.history, is_best=is_best, snapshot=snapshot, soft_labels=files)

    # -- reporting -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Final and best figures; with a validation split, the test split evaluated at the best and last epoch."""
        history = self.state.history
        last = history[-1] if history else {}
        summary: dict[str, Any] = {"run": str(self.out), "epochs": self.state.epoch,
                                   "best_top1": self.state.best_top1, "best_epoch": self.state.best_epoch,
                                   **{f"final_{k}": last.get(k) for k in EVALUATION_KEYS}}
        if self.val_loader is None:
            best = history[self.state.best_epoch - 1] if self.state.best_epoch else {}
            tests = {"last": last, "best": best}
        else:
            tests = {"last": self.evaluate(self.test_loader), "best": self._evaluate_best_on_test()}
            summary.update({f"final_{k}": tests["last"][k] for k in EVALUATION_KEYS},
                           best_val_top1=self.state.best_top1)
        for which, row in tests.items():
            summary.update({f"test_{k}_{which}": row.get(k) for k in EVALUATION_KEYS})
        if self.cfg.expected_top1_error is not None:
            summary["expected_top1_error"] = self.cfg.expected_top1_error
            summary["measured_top1_error"] = 100.0 - summary["test_top1_best"]
        return summary

    def _evaluate_best_on_test(self) -> dict[str, float]:
        """Test metrics of the best (validation) epoch's weights, from best.pt, without disturbing the model."""
        if self.state.best_epoch == self.state.epoch:
            return self.evaluate(self.test_loader)
        model = build_model(self.cfg.model, self.cfg.model_options, self.bundle.num_classes, self.bundle.channels)
        if self.dist.is_main:
            model.load_state_dict(load_checkpoint(self.out / BEST)["model"])
        model.to(self.dist.device)
        broadcast_state(model)  # best.pt is on rank 0's disk
        return evaluate([model], self.test_loader, self.dist, self.cfg.amp, self.cfg.channels_last).metrics

    def format_epoch(self, m: dict[str, Any], saved_s: float = 0.0) -> str:
        """The epoch's log line: training figures, evaluation figures, lr, speed, and where the time went."""
        p = "val_" if self.val_loader is not None else ""
        text = (f"epoch {m['epoch']:>3}  loss {m['train_loss']:.4f}  train {m['train_top1']:5.1f}%  "
                f"{p}top1 {m[p + 'top1']:5.2f}%  {p}top5 {m[p + 'top5']:5.2f}%  {p}nll {m[p + 'nll']:.4f}  "
                f"{p}ece {m[p + 'ece']:5.2f}%  lr {m['lr']:.4g}  {m['images_per_s']:.0f} img/s  "
                f"train {m['epoch_time_s']:.1f}s + eval {m['eval_time_s']:.1f}s + save {saved_s:.1f}s")
        if f"ema_{p}top1" in m:
            text += f"  ema {p}top1 {m[f'ema_{p}top1']:5.2f}%"
        return text

    def format_summary(self, s: dict[str, Any]) -> str:
        best = "best val top-1" if self.val_loader is not None else "best top-1"
        rows = [("run folder", s["run"]), ("epochs", str(s["epochs"])),
                (best, f"{s['best_top1']:.2f}% (epoch {s['best_epoch']})")]
        if self.val_loader is not None:
            rows.append(("test top-1 best / last", f"{s['test_top1_best']:.2f}% / {s['test_top1_last']:.2f}%"))
        if s["final_top1"] is not None:
            rows += [("final top-1 / top-5", f"{s['final_top1']:.2f}% / {s['final_top5']:.2f}%"),
                     ("final NLL / ECE", f"{s['final_nll']:.4f} / {s['final_ece']:.2f}%")]
        if "expected_top1_error" in s:
            ref = f" ({self.cfg.reference})" if self.cfg.reference else ""
            rows.append(("top-1 error", f"{s['measured_top1_error']:.2f}% measured vs "
                                        f"{s['expected_top1_error']:.2f}% published{ref}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(["summary"] + [f"  {k.ljust(width)}  {v}" for k, v in rows])
