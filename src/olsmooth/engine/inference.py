"""Rebuild models and data from checkpoints; evaluate one checkpoint or a softmax-averaged ensemble of several,
plainly or with temperature scaling, every calibration metric and shift consistency (`evaluate_calibrated`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
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
from .evaluate import (
    Evaluation,
    check_loader_options,
    eval_loader,
    evaluate,
    gather_by_position,
    share_positions,
)
from .predictions import PredictionsFile
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
                         predictions: str | Path | None = None) -> Evaluation:
    """Evaluate one checkpoint, or the average of the softmax outputs of several trained on the same data.

    With `predictions`, also write that .npz (`probs` (N, K) float32, `labels` (N,)) batch by batch as the test
    set streams (`PredictionsFile`): nothing of N x K is held."""
    check_loader_options(batch_size, workers)
    first = load_checkpoint(paths[0])
    ckpts = [first] + [same_data(first, load_checkpoint(p), p) for p in paths[1:]]
    dist = setup(device)
    models = [model_from_checkpoint(c, ema).to(dist.device) for c in ckpts]
    test = data_for_checkpoint(first, data_root).test
    loader = eval_loader(test, batch_size, workers, dist)
    what = "evaluating" if len(models) == 1 else f"evaluating an ensemble of {len(models)}"
    if predictions is None:
        return evaluate(models, loader, dist, progress=what)
    with PredictionsFile(predictions, dist) as out:
        with out.rows("probs", len(test), first["num_classes"], len(test)) as probs:
            evaluation = evaluate(models, loader, dist, sink=probs.append, progress=what)
        out.write_array("labels", probs.labels.numpy())
    return evaluation


class EnsembleMembers:
    """Several checkpoints' test probabilities, each evaluated once, so that the ensemble of any subset is an
    average of outputs already computed (`ensemble`). Each member's float32 probabilities (this process's share)
    are kept in a RowStore: in memory up to its budget, beyond it in a temporary file; close the object (or end
    its `with` block) to drop them."""

    def __init__(self, stores: dict[Path, RowStore], num_classes: int, dist: DistInfo) -> None:
        self.stores, self.num_classes, self.dist = stores, num_classes, dist

    def __enter__(self) -> EnsembleMembers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop every member's stored probabilities."""
        for store in self.stores.values():
            store.close()

    def ensemble(self, paths: Sequence[str | Path]) -> CalibrationAccumulator:
        """The softmax average of these members (one or more), streamed batch by batch into a
        `CalibrationAccumulator` reduced over every process: `.compute()` gives every metric of `calibration_metrics`,
        `.sums` the reliability diagram's bins."""
        acc = CalibrationAccumulator(self.num_classes, from_logits=False)
        for parts in zip(*(self.stores[Path(path)].batches() for path in paths)):
            probs = torch.stack([rows for rows, _, _ in parts]).mean(dim=0)
            acc.update(probs, parts[0][1], parts[0][2])
        return _reduced(acc, self.dist)


def evaluate_each(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                  workers: int = 0, device: str | None = None, ema: bool = False) -> EnsembleMembers:
    """Evaluate several checkpoints one at a time on one test loader (only one model in memory at a time; a path
    given twice, once), keeping each one's probabilities for the ensembles of any subset of them
    (`EnsembleMembers.ensemble`)."""
    check_loader_options(batch_size, workers)
    paths = list(dict.fromkeys(Path(path) for path in paths))
    first = load_checkpoint(paths[0])
    dist = setup(device)
    loader = eval_loader(data_for_checkpoint(first, data_root).test, batch_size, workers, dist)
    ckpts = chain([first], (same_data(first, load_checkpoint(p), p) for p in paths[1:]))  # loaded one by one
    members = EnsembleMembers({}, first["num_classes"], dist)
    try:
        for i, (path, ckpt) in enumerate(zip(paths, ckpts)):
            store = members.stores[path] = RowStore(first["num_classes"])
            evaluate([model_from_checkpoint(ckpt, ema).to(dist.device)], loader, dist, sink=store.append,
                     progress=f"evaluating checkpoint {i + 1} of {len(paths)}")
    except BaseException:
        members.close()
        raise
    return members


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
    `indices_ts`: the positions of the samples the scaled figures are on (None without a fit);
    `reliability` and `reliability_ts`: the summed statistics (confidence bins) before and after scaling, what
    `plot_reliability_of` draws; `fit`; `is_main`: whether this process should write."""

    metrics: dict[str, Any]
    labels: Tensor
    indices_ts: Tensor | None
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
        positions = share_positions(dist, seen, len(labels))
        seen += len(labels)
        step = max(1, SLICE_ELEMENTS // scores.size(1))
        for start in range(0, len(labels), step):
            yield scores[start:start + step], labels[start:start + step], positions[start:start + step]
        if bar.due():
            bar.show({})
        bar.update()
    bar.close()


def _reduced(acc: CalibrationAccumulator, dist: DistInfo) -> CalibrationAccumulator:
    """The accumulator of every process's samples (one all_reduce, one gather of 3 numbers a sample)."""
    sums = all_reduce_sum(acc.sums.sum_tensor().to(dist.device)).cpu()
    rows = acc.per_sample()
    rows, _ = gather_by_position(rows, rows[:, 0].long(), dist)
    return CalibrationAccumulator.from_parts(sums, rows, acc.sums.num_classes, acc.sums.n_bins,
                                             acc.sums.from_logits)


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
                        max_shift: int | None = None, seed: int = 0, predictions: str | Path | None = None
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
    search evaluates. With `predictions`, the test rows are stored too and written from the store into that
    .npz batch by batch (`PredictionsFile`): `probs` (N, K) and `labels` of every test sample and, with a fit,
    `probs_ts` of the samples the scaled figures are on and their positions, `indices_ts`."""
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
    with ExitStack() as stack:
        out = None if predictions is None else stack.enter_context(PredictionsFile(predictions, dist))
        if val_indices is not None:  # fit first, so the test pass can report the scaled figures as it goes
            train = data_for_checkpoint(first, data_root, augment="none").train
            if len(val_indices) == 0 or val_indices.min() < 0 or val_indices.max() >= len(train):
                raise UserInputError(f"the run's validation indices do not fit the {len(train)} training samples "
                                     f"here")
            val = Subset(train, val_indices.tolist())
            with RowStore(num_classes) as store:
                for scores, labels, positions in _stream(models, val, batch_size, workers, dist, "validation split"):
                    store.append(scores, labels, positions)
                fit = _fit_on(store, None, dist)
            described = f"validation split ({len(val)} samples)"
        # the test pass: unscaled figures on every sample; with a fit already, the scaled ones too; for a test
        # fraction (T fitted on some rows, the others reported at T afterwards) or for the predictions file, the
        # rows are stored
        fit_on_test = fit is None and source.kind != "none"
        plain = CalibrationAccumulator(num_classes)
        scaled = CalibrationAccumulator(num_classes) if fit is not None else None
        store = stack.enter_context(RowStore(num_classes)) if fit_on_test or out is not None else None
        seen = RowBuffer(2, torch.long)  # label, position of this process's test samples
        for scores, labels, positions in _stream(models, test, batch_size, workers, dist, what):
            plain.update(scores, labels, positions)
            seen.append(torch.stack([labels.cpu(), positions], 1))
            if scaled is not None:
                scaled.update(scaled_log_probs(scores.double(), fit.temperature), labels, positions)
            if store is not None:
                store.append(scores, labels, positions)
        labels, _ = gather_by_position(seen.tensor()[:, 0], seen.tensor()[:, 1], dist)
        reported = torch.arange(len(labels))  # the samples the scaled figures are on: those T was not fitted on
        local_keep = None  # which stored rows those are (None: all)
        if fit_on_test:
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
                scaled.update(scaled_log_probs(scores.to(dist.device).double(), fit.temperature),
                              batch_labels.to(dist.device), positions)
            described = (f"test fraction {source.fraction:g} ({size} samples, seed {seed}); "
                         f"scaled figures on the other {len(reported)}")
        if out is not None:
            _write_predictions(out, store, labels, fit, reported, local_keep)
    plain = _reduced(plain, dist)
    metrics: dict[str, Any] = {**plain.compute(), "samples": len(labels)}
    reliability_ts = None
    if fit is not None:
        scaled = _reduced(scaled, dist)
        scaled_metrics, reliability_ts = scaled.compute(), scaled.sums
        metrics["temperature"] = fit.temperature
        metrics.update({f"{key}_ts": scaled_metrics[key] for key in SCALED_KEYS}, samples_ts=len(reported))
    metrics["calibration_data"] = described
    if shift_consistency:
        shift = default_max_shift(*test[0][0].shape[-2:]) if max_shift is None else max_shift
        metrics["shift_consistency"] = _shift_consistency(models, test, batch_size, workers, dist, shift, seed)
        metrics["max_shift"] = shift
    return CalibratedEvaluation(metrics, labels, None if fit is None else reported, fit, dist.is_main, plain.sums,
                                reliability_ts)


def _write_predictions(out: PredictionsFile, store: RowStore, labels: Tensor, fit: TemperatureFit | None,
                       reported: Tensor, local_keep: Tensor | None) -> None:
    """From the stored test log-probabilities: `probs` and `labels` of every sample and, with a fit, `probs_ts` of
    the reported samples (`local_keep` of the stored rows, None for all) and their positions, `indices_ts`."""
    with out.rows("probs", len(labels), store.num_classes, len(labels)) as probs:
        for scores, batch_labels, positions in store.batches():
            probs.append(scores.exp(), batch_labels, positions)
    out.write_array("labels", labels.numpy())
    if fit is None:
        return
    with out.rows("probs_ts", len(reported), store.num_classes, len(labels)) as probs_ts:
        for scores, batch_labels, positions in store.batches(local_keep):
            probs_ts.append(scaled_log_probs(scores.double(), fit.temperature).exp(), batch_labels, positions)
    out.write_array("indices_ts", reported.numpy())


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
