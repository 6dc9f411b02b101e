"""Rebuild models and data from checkpoints; evaluate one checkpoint or a softmax-averaged ensemble of several,
plainly or with temperature scaling, every calibration metric and shift consistency (`evaluate_calibrated`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ..analysis.calibration import CalibrationAccumulator, MetricAccumulator, RowBuffer
from ..analysis.metrics import SCALED_KEYS
from ..analysis.shift import default_max_shift, draw_offsets, shift_agreement
from ..analysis.temperature import TemperatureFit, fit_temperature_streamed, scaled_log_probs
from ..data import DatasetBundle, build_datasets, stratified_subset
from ..errors import UserInputError
from ..fileio import read_array
from ..models import create_model
from ..runs.checkpoints import checkpoint_path, load_checkpoint
from ..runs.layout import eval_result_name, indices_name
from ..runs.reader import snapshot_files
from ..runs.results import write_result
from .distributed import DistInfo, all_reduce_sum, setup
from .evaluate import Evaluation, check_loader_options, eval_loader, evaluate, gather_by_position
from .progress import Progress
from .resolve import upgrade_stored_config
from .row_store import RowStore


def build_model(name: str, options: dict[str, Any], num_classes: int, channels: int,
                pretrained: str | None = None) -> nn.Module:
    """A registered network with its options (`--model-opt`); an option it does not take is a one-line error."""
    try:
        return create_model(name, num_classes=num_classes, in_chans=channels, pretrained=pretrained, **options)
    except TypeError as err:
        raise UserInputError(f"model {name!r} does not take the options {options}: {err}") from None


def model_from_checkpoint(ckpt: dict[str, Any], ema: bool = False) -> nn.Module:
    """The checkpoint's network with its (or its EMA's) weights."""
    cfg = ckpt["config"]
    model = build_model(cfg["model"], cfg.get("model_options") or {}, ckpt["num_classes"], ckpt["channels"])
    weights = ckpt.get("ema") if ema else ckpt["model"]
    if weights is None:
        raise UserInputError("this checkpoint holds no EMA weights (train with --ema-decay)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        lines = str(err).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()[:200]
        raise UserInputError(f"checkpoint weights do not fit model {cfg['model']!r}: {detail}") from None
    return model


def data_for_checkpoint(ckpt: dict[str, Any], data_root: str | None = None, augment: str = "default"
                        ) -> DatasetBundle:
    """The evaluation data of the checkpoint's run, optionally read from another data root; augment='none' gives
    the training split the evaluation transforms (as the run's validation split has them)."""
    cfg = upgrade_stored_config(ckpt["config"])
    return build_datasets(cfg["dataset"], data_root=data_root or cfg.get("data_root"), split=cfg.get("split"),
                          image_size=cfg.get("image_size"), channels=ckpt["channels"], augment=augment,
                          input_norm=cfg.get("input_norm", "dataset"))


def same_data(first: dict[str, Any], ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`ckpt`, after checking that it was trained on the dataset and classes of `first`."""
    a, b = first["config"], ckpt["config"]
    if (b["dataset"], ckpt["num_classes"]) != (a["dataset"], first["num_classes"]):
        raise UserInputError(f"{path} was trained on {b['dataset']} ({ckpt['num_classes']} classes), "
                             f"not {a['dataset']} ({first['num_classes']} classes)")
    return ckpt


def evaluate_checkpoints(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                         workers: int = 0, device: str | None = None, ema: bool = False,
                         collect: bool = False) -> Evaluation:
    """Evaluate one checkpoint, or the average of the softmax outputs of several trained on the same data."""
    check_loader_options(batch_size, workers)
    first = load_checkpoint(paths[0])
    ckpts = [first] + [same_data(first, load_checkpoint(p), p) for p in paths[1:]]
    dist = setup(device)
    models = [model_from_checkpoint(c, ema).to(dist.device) for c in ckpts]
    loader = eval_loader(data_for_checkpoint(first, data_root).test, batch_size, workers, dist)
    what = "evaluating" if len(models) == 1 else f"evaluating an ensemble of {len(models)}"
    return evaluate(models, loader, dist, collect=collect, progress=what)


def evaluate_each(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                  workers: int = 0, device: str | None = None, ema: bool = False) -> list[Evaluation]:
    """Evaluate several checkpoints one at a time on one test loader, keeping each one's probabilities.

    Averaging any subset of the returned `probs` gives that subset's ensemble without evaluating it again;
    only one model is in memory at a time."""
    check_loader_options(batch_size, workers)
    first = load_checkpoint(paths[0])
    dist = setup(device)
    loader = eval_loader(data_for_checkpoint(first, data_root).test, batch_size, workers, dist)
    ckpts = chain([first], (same_data(first, load_checkpoint(p), p) for p in paths[1:]))  # loaded one by one
    return [evaluate([model_from_checkpoint(c, ema).to(dist.device)], loader, dist, collect=True,
                     progress=f"evaluating checkpoint {i + 1} of {len(paths)}") for i, c in enumerate(ckpts)]


SLICE_ELEMENTS = 1 << 20
"""`evaluate_calibrated` computes its metrics and stores its rows in row slices of about this many scores."""
DEFAULT_TEST_FRACTION = 0.5
"""Without a validation split, the share of the test set the temperature is fitted on (the rest is reported)."""
CALIBRATION_CHOICES = "auto, validation, test-fraction[:F] or none"


@dataclass(frozen=True)
class CalibrationData:
    """Where the temperature is fitted. 'auto': the run's validation split when it has one, else a test
    fraction of DEFAULT_TEST_FRACTION; 'validation'; 'test-fraction' of `fraction`; 'none': no scaling."""

    kind: str
    fraction: float = DEFAULT_TEST_FRACTION


def parse_calibration_data(text: str) -> CalibrationData:
    """CalibrationData from 'auto', 'validation', 'none' or 'test-fraction[:F]' with 0 < F < 1."""
    kind, sep, value = text.strip().partition(":")
    if kind in ("auto", "validation", "none") and not sep:
        return CalibrationData(kind)
    if kind == "test-fraction":
        try:
            fraction = float(value) if sep else DEFAULT_TEST_FRACTION
        except ValueError:
            fraction = math.nan
        if not 0 < fraction < 1:
            raise UserInputError(f"--calibration-data {text}: the test fraction must be a number in (0, 1)")
        return CalibrationData(kind, fraction)
    raise UserInputError(f"--calibration-data {text!r}: use {CALIBRATION_CHOICES}")


@dataclass
class CalibratedEvaluation:
    """What `olsmooth eval` reports. `metrics` (JSON-ready): those of `calibration_metrics` before scaling on the
    whole evaluation split (`samples` of them), and with a fit `temperature` and the scaled ones (KEY_ts) on the
    samples T was not fitted on (`samples_ts` of them); `calibration_data` (where T was fitted), and
    `shift_consistency` (%) with `max_shift` when asked. `labels`: every sample of the split, in order;
    `indices_ts`: the positions of the samples the scaled figures are on (None without a fit); `probs` (every
    sample, N x K) and `probs_ts` (the scaled samples): only when asked for with keep_probs, else None;
    `reliability` and `reliability_ts`: the summed statistics (confidence bins) before and after scaling, what
    `plot_reliability_of` draws; `fit`; `is_main`: whether this process should write."""

    metrics: dict[str, Any]
    probs: Tensor | None
    labels: Tensor
    indices_ts: Tensor | None
    probs_ts: Tensor | None
    fit: TemperatureFit | None
    is_main: bool
    reliability: MetricAccumulator | None = None
    reliability_ts: MetricAccumulator | None = None


def validation_indices(ckpt: dict[str, Any], path: str | Path) -> np.ndarray | None:
    """The run's validation split (indices into the dataset's training split), None when it was trained without
    one: from the checkpoint (last.pt holds them), else from val_indices.npy in its run folder."""
    if not ckpt["config"].get("val_fraction"):
        return None
    saved = (ckpt.get("data_indices") or {}).get("val")
    if saved is not None:
        return saved.numpy()
    stored = Path(path).parent / indices_name("val")
    if not stored.is_file():
        raise UserInputError(f"{path} was trained with a validation split but {stored} is missing; "
                             f"pass --calibration-data test-fraction:F")
    return read_array(stored)


def _shared_validation_split(ckpts: Sequence[dict[str, Any]], paths: Sequence[str | Path]) -> np.ndarray | None:
    """The validation split of every checkpoint, which must be one (else some would be fitted on training data)."""
    splits = [validation_indices(c, p) for c, p in zip(ckpts, paths)]
    if all(split is None for split in splits):
        return None
    if any(split is None or not np.array_equal(split, splits[0]) for split in splits):
        raise UserInputError("the checkpoints were not all validated on one split; "
                             "pass --calibration-data test-fraction:F")
    return splits[0]


def ensemble_log_probs(models: Sequence[nn.Module], images: Tensor) -> Tensor:
    """log of the models' mean float32 softmax (for one model its log-softmax, the logits less a constant per row):
    what temperature scaling divides by T, for an ensemble as for one model."""
    stacked = torch.stack([torch.log_softmax(model(images).float(), dim=1) for model in models])
    return torch.logsumexp(stacked, dim=0) - math.log(len(models))


@torch.no_grad()
def _stream(models: Sequence[nn.Module], dataset: Dataset, batch_size: int, workers: int, dist: DistInfo,
            what: str) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(`ensemble_log_probs` (n, K) float32, labels (n,), dataset positions (n,)) of this process's share of
    `dataset`, each batch in slices of about SLICE_ELEMENTS scores (the metrics' float64 copies of a slice stay
    small at any K): nothing of N x K is kept."""
    loader = eval_loader(dataset, batch_size, workers, dist)
    seen = 0
    bar = Progress(len(loader), what, enabled=dist.is_main)
    for images, labels in loader:
        scores = ensemble_log_probs(models, images.to(dist.device, non_blocking=True))
        labels = labels.long().to(dist.device)
        positions = dist.rank + dist.world_size * torch.arange(seen, seen + len(labels))
        seen += len(labels)
        step = max(1, SLICE_ELEMENTS // scores.size(1))
        for start in range(0, len(labels), step):
            yield scores[start:start + step], labels[start:start + step], positions[start:start + step]
        if bar.due():
            bar.show({})
        bar.update()
    bar.close()


def _reduced(acc: CalibrationAccumulator, dist: DistInfo) -> tuple[dict[str, float], MetricAccumulator]:
    """The metrics of an accumulator over every process (one all_reduce, one gather of 3 numbers a sample) and
    its reduced sums (for the reliability diagram)."""
    sums = all_reduce_sum(acc.sums.sum_tensor().to(dist.device)).cpu()
    rows = acc.per_sample()
    rows, _ = gather_by_position(rows, rows[:, 0].long(), dist)
    merged = CalibrationAccumulator.from_parts(sums, rows, acc.sums.num_classes, acc.sums.n_bins)
    return merged.compute(), merged.sums


def _fit_on(store: RowStore, select: Tensor | None, dist: DistInfo) -> TemperatureFit:
    """The temperature fitted on the selected rows of a store (every process's share), re-reading them from it."""
    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        for scores, labels, _ in store.batches(select):
            yield scores.to(dist.device), labels.to(dist.device)

    return fit_temperature_streamed(batches, reduce=lambda total: all_reduce_sum(total.to(dist.device)))


@torch.no_grad()
def _shift_consistency(models: Sequence[nn.Module], dataset: Dataset, batch_size: int, workers: int,
                       dist: DistInfo, max_shift: int, seed: int) -> float:
    """Shift consistency (%) of the ensemble over `dataset`, each sample with its own seeded pair of shifts."""
    loader = eval_loader(dataset, batch_size, workers, dist)
    offsets = draw_offsets(len(dataset), max_shift, seed)[dist.rank::dist.world_size]
    agreed = torch.zeros((), dtype=torch.float64, device=dist.device)
    seen = 0
    bar = Progress(len(loader), f"shift consistency (max shift {max_shift} px)", enabled=dist.is_main)
    for images, _ in loader:
        batch = images.to(dist.device, non_blocking=True)
        agree = shift_agreement(lambda x: ensemble_log_probs(models, x), batch, offsets[seen: seen + len(batch)])
        agreed += agree.sum(dtype=torch.float64)
        seen += len(batch)
        if bar.due():
            bar.show({})
        bar.update()
    bar.close()
    return 100.0 * float(all_reduce_sum(agreed)) / len(dataset)


def save_evaluation(results: Path, checkpoint: str | Path, evaluation: CalibratedEvaluation, ema: bool = False
                    ) -> dict[str, Any]:
    """Write a checkpoint's evaluation into its run folder's results/ (`olsmooth eval --save-to-run`): the metrics
    with the command, the checkpoint and whether its EMA weights were evaluated; returns that object."""
    record = {"command": "eval", "checkpoint": str(Path(checkpoint).resolve()), "ema": ema, **evaluation.metrics}
    write_result(results, eval_result_name(Path(checkpoint).stem), record)
    return record


def evaluate_calibrated(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                        workers: int = 0, device: str | None = None, ema: bool = False,
                        calibration_data: str = "auto", shift_consistency: bool = False,
                        max_shift: int | None = None, seed: int = 0, keep_probs: bool = False
                        ) -> CalibratedEvaluation:
    """Evaluate one checkpoint, or the ensemble of several from the log of their averaged probabilities, with every
    metric of `calibration_report` before and after temperature scaling.

    The unscaled figures are on the whole test set (those training logged); the scaled ones are never on the
    samples T was fitted on: T is fitted on the run's validation split (the held-out training samples, with
    evaluation transforms) and the scaled figures are on the whole test set too, or on a seeded (`seed`),
    stratified fraction of the test set and they are on the rest (`calibration_data`, see CalibrationData).
    With `shift_consistency`, also Zhang's shift consistency over the whole test set (max shift P: `max_shift`,
    default `default_max_shift` of the image size; the shifts drawn from `seed`).

    Memory does not grow with N x K: the metrics are streamed (`CalibrationAccumulator`: O(K x bins + N)), and
    the rows T is fitted on (the validation split, or with a test fraction the whole test set) are kept in a
    `RowStore`, in memory up to its budget and beyond it in a temporary file, and re-read for each NLL the
    search evaluates. `keep_probs` also returns the N x K probabilities (for --save-predictions)."""
    source = parse_calibration_data(calibration_data)
    check_loader_options(batch_size, workers)
    if max_shift is not None and max_shift < 0:
        raise UserInputError(f"--max-shift must be at least 0 pixels, got {max_shift}")
    if seed < 0:
        raise UserInputError(f"--seed must be non-negative, got {seed}")
    paths = [checkpoint_path(p) for p in paths]  # a run folder's validation indices lie beside its checkpoint
    first = load_checkpoint(paths[0])
    ckpts = [first] + [same_data(first, load_checkpoint(p), p) for p in paths[1:]]
    val_indices = _shared_validation_split(ckpts, paths) if source.kind in ("auto", "validation") else None
    if source.kind == "validation" and val_indices is None:
        raise UserInputError(f"{paths[0]} was trained without a validation split (--val-fraction); "
                             f"pass --calibration-data test-fraction:F")
    dist = setup(device)
    models = [model_from_checkpoint(c, ema).to(dist.device).eval() for c in ckpts]
    num_classes = first["num_classes"]
    test = data_for_checkpoint(first, data_root).test
    what = "evaluating" if len(models) == 1 else f"evaluating an ensemble of {len(models)}"
    fit, described = None, "none"
    if val_indices is not None:  # fit first, so the test pass can report the scaled figures as it goes
        train = data_for_checkpoint(first, data_root, augment="none").train
        if len(val_indices) == 0 or val_indices.min() < 0 or val_indices.max() >= len(train):
            raise UserInputError(f"the run's validation indices do not fit the {len(train)} training samples here")
        val = Subset(train, val_indices.tolist())
        with RowStore(num_classes) as store:
            for scores, labels, positions in _stream(models, val, batch_size, workers, dist, "validation split"):
                store.append(scores, labels, positions)
            fit = _fit_on(store, None, dist)
        described = f"validation split ({len(val)} samples)"
    # the test pass: unscaled figures on every sample; with a fit already, the scaled ones too; for a test
    # fraction, the rows are stored to fit T on some and report the others at T afterwards
    plain = CalibrationAccumulator(num_classes)
    scaled = CalibrationAccumulator(num_classes) if fit is not None else None
    store = RowStore(num_classes) if fit is None and source.kind != "none" else None
    kept: dict[str, list[Tensor]] = {"probs": [], "positions": [], "probs_ts": [], "positions_ts": []}
    seen = RowBuffer(2, torch.long)  # label, position of this process's test samples

    def add_scaled(scores: Tensor, labels: Tensor, positions: Tensor) -> None:
        log_probs = scaled_log_probs(scores.double(), fit.temperature)
        scaled.update(log_probs, labels, positions)
        if keep_probs:
            kept["probs_ts"].append(log_probs.exp().float().cpu())
            kept["positions_ts"].append(positions)

    try:
        for scores, labels, positions in _stream(models, test, batch_size, workers, dist, what):
            plain.update(scores, labels, positions)
            seen.append(torch.stack([labels.cpu(), positions], 1))
            if keep_probs:
                kept["probs"].append(scores.exp().cpu())
                kept["positions"].append(positions)
            if scaled is not None:
                add_scaled(scores, labels, positions)
            if store is not None:
                store.append(scores, labels, positions)
        labels, _ = gather_by_position(seen.tensor()[:, 0], seen.tensor()[:, 1], dist)
        reported = torch.arange(len(labels))  # the samples the scaled figures are on: those T was not fitted on
        if store is not None:
            size = round(source.fraction * len(labels))
            if not 1 <= size < len(labels):
                raise UserInputError(f"a test fraction of {source.fraction:g} leaves no calibration or no reported "
                                     f"samples of {len(labels)}")
            held = torch.from_numpy(stratified_subset(labels.numpy(), size, seed))
            keep = torch.ones(len(labels), dtype=torch.bool)
            keep[held] = False
            reported = reported[keep]
            local_keep = keep[store.positions()]
            with store.subset(~local_keep) as held_rows:  # read ~40 times: only the rows T is fitted on
                fit = _fit_on(held_rows, None, dist)
            scaled = CalibrationAccumulator(num_classes)
            for scores, batch_labels, positions in store.batches(local_keep):
                add_scaled(scores.to(dist.device), batch_labels.to(dist.device), positions)
            described = (f"test fraction {source.fraction:g} ({size} samples, seed {seed}); "
                         f"scaled figures on the other {len(reported)}")
    finally:
        if store is not None:
            store.close()
    plain_metrics, reliability = _reduced(plain, dist)
    metrics: dict[str, Any] = {**plain_metrics, "samples": len(labels)}
    reliability_ts = None
    if fit is not None:
        scaled_metrics, reliability_ts = _reduced(scaled, dist)
        metrics["temperature"] = fit.temperature
        metrics.update({f"{key}_ts": scaled_metrics[key] for key in SCALED_KEYS}, samples_ts=len(reported))
    metrics["calibration_data"] = described
    if shift_consistency:
        shift = default_max_shift(*test[0][0].shape[-2:]) if max_shift is None else max_shift
        metrics["shift_consistency"] = _shift_consistency(models, test, batch_size, workers, dist, shift, seed)
        metrics["max_shift"] = shift
    probs = probs_ts = None
    if keep_probs:
        probs = gather_by_position(torch.cat(kept["probs"]) if kept["probs"] else torch.zeros(0, num_classes),
                                   torch.cat(kept["positions"]) if kept["positions"] else torch.zeros(0), dist)[0]
        if fit is not None:
            probs_ts = gather_by_position(
                torch.cat(kept["probs_ts"]) if kept["probs_ts"] else torch.zeros(0, num_classes),
                torch.cat(kept["positions_ts"]) if kept["positions_ts"] else torch.zeros(0), dist)[0]
    return CalibratedEvaluation(metrics, probs, labels, None if fit is None else reported, probs_ts, fit,
                                dist.is_main, reliability, reliability_ts)


def pick_snapshots(run_dir: str | Path, count: int, after: int = 0) -> list[Path]:
    """`count` snapshots spread uniformly over the epochs after `after`: those nearest to epochs
    A + (E - A) i / count for i = 1..count (A = after, E the last snapshot's epoch), so the last is always one;
    `after` 0 spreads them over all of training, a later epoch keeps early, unconverged snapshots out."""
    run_dir = Path(run_dir)
    if count < 1:
        raise UserInputError("--count must be at least 1")
    if after < 0:
        raise UserInputError(f"--after must be an epoch (0 or more), got {after}")
    snaps = {epoch: path for epoch, path in snapshot_files(run_dir).items() if epoch > after}
    if len(snaps) < count:
        where = f" after epoch {after}" if after else ""
        raise UserInputError(f"{run_dir} has {len(snaps)} epoch snapshots{where}, fewer than --count {count} "
                             f"(train with --save-every)")
    epochs = list(snaps)
    last = epochs[-1]
    chosen: list[int] = []
    for i in range(1, count + 1):
        goal = after + (last - after) * i / count
        free = [e for e in epochs if e not in chosen]
        chosen.append(min(free, key=lambda e: (abs(e - goal), -e)))
    return [snaps[e] for e in sorted(chosen)]
